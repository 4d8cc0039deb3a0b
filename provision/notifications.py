"""Buckets and bucket notifications: make the object store announce every upload to RabbitMQ.

Used by ``photoenhance init`` and by the test fixtures. Every function here is idempotent: run it
again with the same settings and nothing changes; run it with changed settings and the store ends
up configured as the settings say, with exactly one notification of ours per bucket (two would
announce every upload twice).

Declare the AMQP topology first (:func:`photoenhance.topology.declare_topology`): neither store
declares our exchange the way we want it, and Ceph RGW silently drops events for a missing one.

Two providers (``settings.s3_provider``):

``ceph``
    RGW publishes to RabbitMQ itself. We create an SNS topic on RGW named after
    ``AMQP_EVENTS_ROUTING_KEY`` (RGW uses the topic name as the routing key) that pushes to
    ``AMQP_URL`` (without credentials) and ``AMQP_EVENTS_EXCHANGE``, then attach it to the bucket.
    What RGW 16.2 (Pacific) does differently from AWS, measured:

    - PutBucketNotificationConfiguration *adds* to the bucket's notifications instead of replacing
      them, and an empty configuration is refused (MalformedXML). Stale entries are removed with
      RGW's own ``DELETE /<bucket>?notification=<id>``, which removes one entry per call.
    - A notification keeps a copy of its topic as it was when the notification was created, so a
      changed topic only takes effect once the notification is created again. Our notification id
      therefore carries a fingerprint of the topic's attributes: a change of settings changes the id.
    - RGW keeps one AMQP connection per broker host, port and vhost, bound to the exchange of the
      first topic that used it: topics naming another exchange on the same broker URL publish
      nothing, and the PUT still succeeds. Use one events exchange per RGW and broker.
    - Secrets in the push endpoint are refused over plain HTTP, so RGW logs in to RabbitMQ with
      librabbitmq's default user, guest/guest (RabbitMQ allows guest only from localhost unless
      configured otherwise).
    - ``persistent=true`` topics crashed radosgw 16.2.15 in tests; we use non-persistent topics,
      so events during a broker outage are lost (the reconciler finds those uploads).
    - ``amqp-ack-level=broker`` (answer the PUT only after RabbitMQ confirmed the event) crashed
      radosgw 16.2.15 with a segfault in ``rgw::asio::ClientIO::~ClientIO`` as the waiting
      request resumed: 4 of 4 runs within 700 uploads (4 at a time) beside plain GET/PUT traffic,
      as a worker makes. With ``none`` RGW hands the event to its AMQP thread and answers at once:
      0 crashes in 9,000 such uploads, every event delivered, ~100 ms after the PUT. A confirm
      bought little anyway: RGW answers 200 even when the broker refuses a non-persistent event.

``minio``
    MinIO's AMQP target (exchange, routing key, durability) is server configuration
    (``MINIO_NOTIFY_AMQP_*_<TARGET>`` environment variables, see infra/docker-compose.yml); here we
    only attach the bucket to it by its queue ARN, ``arn:minio:sqs::<TARGET>:amqp``. Unlike RGW,
    MinIO replaces the whole configuration on every put, so other notifications are kept as found.
"""

from __future__ import annotations

import hashlib
import json
import logging
from urllib.parse import quote, urlsplit, urlunsplit

import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.client import BaseClient
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError
from minio import Minio
from minio.error import MinioException, S3Error
from minio.notificationconfig import NotificationConfig, QueueConfig, TopicConfig

from photoenhance.s3 import boto_client, minio_client
from photoenhance.settings import Settings

__all__ = [
    "CREATED_EVENTS",
    "NOTIFICATION_ID_PREFIX",
    "NotificationSetupError",
    "amqp_push_endpoint",
    "configure_bucket_notifications",
    "configure_minio_notifications",
    "configure_rgw_notifications",
    "delete_rgw_topic",
    "ensure_bucket",
    "minio_queue_arn",
    "rgw_topic_attributes",
]

log = logging.getLogger(__name__)

#: The events we subscribe to. The processor filters further (``CREATION_EVENTS`` in
#: photoenhance/contracts/events.py): MinIO includes tagging and retention changes in this set.
CREATED_EVENTS: tuple[str, ...] = ("s3:ObjectCreated:*",)

#: Ids of our bucket notifications start with this; entries with this prefix are ours to replace.
NOTIFICATION_ID_PREFIX = "photoenhance"

#: MinIO's AMQP target used when none is named: ``MINIO_NOTIFY_AMQP_*_PRIMARY``.
DEFAULT_MINIO_TARGET = "PRIMARY"


class NotificationSetupError(RuntimeError):
    """The object store refused or failed a step of the set-up; the message says which and where."""


# -- clients -------------------------------------------------------------------------------------
def _sns_client(settings: Settings) -> BaseClient:
    """boto3's SNS client against the S3 endpoint: RGW serves its topic API there."""
    return boto_client(settings, "sns")


# -- buckets -------------------------------------------------------------------------------------
def ensure_bucket(client: Minio, bucket: str, region: str | None = None) -> bool:
    """Create ``bucket`` unless it exists; return whether it was created.

    A bucket that exists but belongs to another account raises :class:`NotificationSetupError`.
    """
    try:
        if client.bucket_exists(bucket):
            return False
        client.make_bucket(bucket, location=region)
        return True
    except S3Error as exc:
        if exc.code == "BucketAlreadyOwnedByYou":  # created concurrently by another process of ours
            return False
        if exc.code == "BucketAlreadyExists":
            raise NotificationSetupError(f"bucket {bucket!r} exists and belongs to another account") from exc
        raise NotificationSetupError(f"cannot create bucket {bucket!r}: {exc.code}: {exc.message}") from exc
    except MinioException as exc:
        raise NotificationSetupError(f"cannot create bucket {bucket!r}: {exc}") from exc


# -- both providers ------------------------------------------------------------------------------
def configure_bucket_notifications(
    settings: Settings,
    client: Minio | None = None,
    *,
    minio_target: str = DEFAULT_MINIO_TARGET,
) -> str:
    """Make the input bucket announce new objects to RabbitMQ; return the target's ARN.

    Dispatches on ``settings.s3_provider`` (``ceph`` or ``minio``). The bucket must exist.
    """
    client = client or minio_client(settings)
    if settings.s3_provider == "ceph":
        return configure_rgw_notifications(settings, client)
    if settings.s3_provider == "minio":
        return configure_minio_notifications(settings, client, target=minio_target)
    raise NotificationSetupError(
        f"S3_PROVIDER={settings.s3_provider!r} is not supported: use 'minio' or 'ceph'"
    )


# -- Ceph RGW ------------------------------------------------------------------------------------
def amqp_push_endpoint(amqp_url: str) -> str:
    """``amqp_url`` without user and password, as RGW's push endpoint.

    The vhost is kept when it is not the default one; ``amqp://u:p@host:5672/`` becomes
    ``amqp://host:5672``.
    """
    parts = urlsplit(amqp_url)
    if parts.scheme not in {"amqp", "amqps"} or not parts.hostname:
        raise NotificationSetupError(f"AMQP_URL {amqp_url!r} is not an amqp:// or amqps:// URL with a host")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = f"{host}:{parts.port}" if parts.port else host
    path = "" if parts.path in {"", "/", "/%2F", "/%2f"} else parts.path
    if parts.username and (parts.username, parts.password) != ("guest", "guest"):
        log.warning(
            "AMQP_URL names user %r, but RGW cannot be given credentials over plain HTTP and logs "
            "in to %s as guest/guest",
            parts.username,
            netloc,
        )
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def rgw_topic_attributes(settings: Settings) -> dict[str, str]:
    """Attributes of our SNS topic on RGW."""
    return {
        "push-endpoint": amqp_push_endpoint(settings.amqp_url),
        "amqp-exchange": settings.amqp_events_exchange,
        # Fire-and-forget: waiting for the broker's confirm crashes radosgw 16.2 (module docstring).
        "amqp-ack-level": "none",
        "persistent": "false",
    }


def _rgw_notification_id(attributes: dict[str, str], topic: str) -> str:
    """Our notification id: the prefix plus a fingerprint of what the notification snapshots."""
    canonical = json.dumps({"topic": topic, "events": CREATED_EVENTS, **attributes}, sort_keys=True)
    return f"{NOTIFICATION_ID_PREFIX}-{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"


def configure_rgw_notifications(settings: Settings, client: Minio | None = None) -> str:
    """Create (or update) our SNS topic on RGW and attach it to the input bucket; return its ARN.

    Leaves the bucket with exactly one notification of ours, for the current settings; other
    notifications on the bucket are left alone unless they target our topic.
    """
    client = client or minio_client(settings)
    bucket = settings.s3_input_bucket
    topic = settings.amqp_events_routing_key
    attributes = rgw_topic_attributes(settings)
    try:
        # CreateTopic is idempotent on RGW: same name, same ARN, attributes overwritten.
        arn = _sns_client(settings).create_topic(Name=topic, Attributes=attributes)["TopicArn"]
    except (ClientError, BotoCoreError) as exc:
        raise NotificationSetupError(f"cannot create SNS topic {topic!r} on {settings.s3_endpoint}: {exc}") from exc

    wanted_id = _rgw_notification_id(attributes, topic)
    current = _topic_configs(client, bucket)
    ours = [c for c in current if (c.config_id or "").startswith(NOTIFICATION_ID_PREFIX) or c.topic == arn]
    if [(c.config_id, c.topic, c.events) for c in ours] == [(wanted_id, arn, list(CREATED_EVENTS))]:
        return arn

    for stale in ours:  # one DELETE removes one entry, even when several share an id
        _rgw_delete_notification(settings, bucket, stale.config_id)
    wanted = TopicConfig(topic=arn, events=list(CREATED_EVENTS), config_id=wanted_id)
    try:
        # RGW adds these entries to the bucket's notifications; the others stay as they are.
        client.set_bucket_notification(bucket, NotificationConfig(topic_config_list=[wanted]))
    except MinioException as exc:
        raise NotificationSetupError(f"cannot attach topic {arn} to bucket {bucket!r}: {exc}") from exc

    after = [c for c in _topic_configs(client, bucket) if c.topic == arn or c.config_id == wanted_id]
    if len(after) != 1:
        raise NotificationSetupError(
            f"bucket {bucket!r} has {len(after)} notifications for {arn} after set-up, expected 1: "
            f"{[(c.config_id, c.topic) for c in after]}"
        )
    log.info("bucket %s notifies topic %s (id %s)", bucket, arn, wanted_id)
    return arn


def delete_rgw_topic(settings: Settings, topic_arn: str) -> None:
    """Delete an SNS topic on RGW; a topic that is already gone is fine.

    Notifications made from the topic live on until their bucket or notification is deleted.
    """
    try:
        _sns_client(settings).delete_topic(TopicArn=topic_arn)
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
            raise NotificationSetupError(f"cannot delete SNS topic {topic_arn}: {exc}") from exc
    except BotoCoreError as exc:
        raise NotificationSetupError(f"cannot delete SNS topic {topic_arn}: {exc}") from exc


def _topic_configs(client: Minio, bucket: str) -> list[TopicConfig]:
    try:
        return list(client.get_bucket_notification(bucket).topic_config_list)
    except MinioException as exc:
        raise NotificationSetupError(f"cannot read the notifications of bucket {bucket!r}: {exc}") from exc


def _rgw_delete_notification(settings: Settings, bucket: str, notification_id: str | None) -> None:
    """RGW's extension ``DELETE /<bucket>?notification=<id>``, which neither S3 client offers.

    Signed with botocore's SigV4 signer; removes the first notification with that id.
    """
    if not notification_id:
        # without an id RGW deletes every notification of the bucket, other people's too
        raise NotificationSetupError(f"bucket {bucket!r} has a notification without an id; remove it by hand")
    url = f"{settings.s3_endpoint.rstrip('/')}/{quote(bucket)}?notification={quote(notification_id, safe='')}"
    request = AWSRequest(method="DELETE", url=url)
    credentials = Credentials(settings.s3_access_key, settings.s3_secret_key)
    S3SigV4Auth(credentials, "s3", settings.s3_region).add_auth(request)
    try:
        response = urllib3.request("DELETE", url, headers=dict(request.headers), timeout=30.0, retries=False)
    except urllib3.exceptions.HTTPError as exc:
        raise NotificationSetupError(
            f"cannot delete notification {notification_id!r} of bucket {bucket!r}: {exc}"
        ) from exc
    if response.status not in {200, 204, 404}:
        raise NotificationSetupError(
            f"RGW refused to delete notification {notification_id!r} of bucket {bucket!r}: "
            f"HTTP {response.status} {response.data[:200]!r}"
        )


# -- MinIO ---------------------------------------------------------------------------------------
def minio_queue_arn(target: str = DEFAULT_MINIO_TARGET, region: str = "") -> str:
    """ARN of MinIO's AMQP target ``target``; ``region`` only when the server sets one."""
    return f"arn:minio:sqs:{region}:{target}:amqp"


def configure_minio_notifications(
    settings: Settings,
    client: Minio | None = None,
    *,
    target: str = DEFAULT_MINIO_TARGET,
    arn_region: str = "",
) -> str:
    """Attach the input bucket to MinIO's AMQP target ``target``; return the target's ARN.

    The target must exist on the server (``MINIO_NOTIFY_AMQP_ENABLE_<TARGET>=on`` and friends), and
    its exchange and routing key must be ``AMQP_EVENTS_EXCHANGE`` and ``AMQP_EVENTS_ROUTING_KEY``:
    MinIO does not let a client see or change them. MinIO refuses an unknown ARN.
    """
    client = client or minio_client(settings)
    bucket = settings.s3_input_bucket
    arn = minio_queue_arn(target, arn_region)
    try:
        current = client.get_bucket_notification(bucket)
    except MinioException as exc:
        raise NotificationSetupError(f"cannot read the notifications of bucket {bucket!r}: {exc}") from exc
    ours = [q for q in current.queue_config_list if q.queue == arn]
    if len(ours) == 1 and _is_plain(ours[0]):
        return arn
    others = [q for q in current.queue_config_list if q.queue != arn]
    wanted = QueueConfig(queue=arn, events=list(CREATED_EVENTS), config_id=NOTIFICATION_ID_PREFIX)
    # MinIO replaces the whole configuration: carry over every entry that is not ours.
    config = NotificationConfig(
        cloud_func_config_list=list(current.cloud_func_config_list),
        queue_config_list=[*others, wanted],
        topic_config_list=list(current.topic_config_list),
    )
    try:
        client.set_bucket_notification(bucket, config)
    except MinioException as exc:
        raise NotificationSetupError(
            f"cannot attach bucket {bucket!r} to {arn} "
            f"(is MINIO_NOTIFY_AMQP_ENABLE_{target}=on set on the server?): {exc}"
        ) from exc
    log.info("bucket %s notifies %s", bucket, arn)
    return arn


def _is_plain(config: QueueConfig) -> bool:
    """Whether a queue entry subscribes to exactly our events, for every key."""
    unfiltered = not (config.prefix_filter_rule or config.suffix_filter_rule)
    return unfiltered and sorted(config.events) == sorted(CREATED_EVENTS)
