"""What provision/notifications.py derives from settings, without a server."""

from __future__ import annotations

import pytest

from photoenhance.settings import Settings
from provision.notifications import (
    NotificationSetupError,
    amqp_push_endpoint,
    configure_bucket_notifications,
    minio_queue_arn,
    rgw_topic_attributes,
)


@pytest.mark.parametrize(
    ("amqp_url", "endpoint"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "amqp://127.0.0.1:5672"),
        ("amqp://guest:guest@127.0.0.1:5672/%2F", "amqp://127.0.0.1:5672"),
        ("amqp://rabbit.internal", "amqp://rabbit.internal"),
        ("amqps://u:secret@broker:5671/photo", "amqps://broker:5671/photo"),
        ("amqp://guest:guest@[::1]:5672/", "amqp://[::1]:5672"),
    ],
)
def test_push_endpoint_never_carries_credentials(amqp_url: str, endpoint: str) -> None:
    assert amqp_push_endpoint(amqp_url) == endpoint


@pytest.mark.parametrize("amqp_url", ["http://127.0.0.1:5672", "amqp:///vhost", "not a url"])
def test_push_endpoint_refuses_what_is_not_an_amqp_url(amqp_url: str) -> None:
    with pytest.raises(NotificationSetupError):
        amqp_push_endpoint(amqp_url)


def test_rgw_topic_follows_the_settings() -> None:
    settings = Settings.from_env(environ={}, amqp_events_exchange="ex", amqp_url="amqp://u:p@mq:5672/")
    assert rgw_topic_attributes(settings) == {
        "push-endpoint": "amqp://mq:5672",
        "amqp-exchange": "ex",
        "amqp-ack-level": "none",
        "persistent": "false",
    }


def test_minio_queue_arn() -> None:
    assert minio_queue_arn() == "arn:minio:sqs::PRIMARY:amqp"
    assert minio_queue_arn("EVENTS", "eu-1") == "arn:minio:sqs:eu-1:EVENTS:amqp"


def test_unknown_provider_is_refused_before_any_request() -> None:
    settings = Settings.from_env(environ={}, s3_provider="gcs", s3_endpoint="http://127.0.0.1:1")
    with pytest.raises(NotificationSetupError, match="S3_PROVIDER='gcs'"):
        configure_bucket_notifications(settings)
