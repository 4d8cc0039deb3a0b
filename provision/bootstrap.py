"""``photoenhance init``: everything the services expect to exist, made to exist, idempotently.

Steps, in the order they depend on each other:

1. AMQP topology (exchanges, queues, bindings): first, because Ceph RGW drops events for an
   exchange that does not exist, and MinIO re-declares its exchange on every publish, so ours
   must already be there with the same type and durability.
2. Database migrations (Alembic; concurrent runs serialise on an advisory lock).
3. Buckets: input and output.
4. Lifecycle: one rule of ours per bucket expiring objects after ``S3_LIFECYCLE_DAYS``; other
   rules on the bucket are kept; 0 days removes our rule.
5. The store's notifications (:mod:`provision.notifications`): MinIO's AMQP target, or an RGW topic
   plus bucket notification.
6. CORS on the input bucket (:mod:`provision.cors`), so the web page can upload from a browser.

Each step first looks at what exists and reports ``created``, ``updated`` or ``unchanged``, so a
second run with the same settings reports no changes. What the broker cannot be asked (whether a
binding exists) is declared again, which changes nothing when it exists.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import Enum

import aio_pika
from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.error import MinioException
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

from db.connection import Database
from db.migrate import current_revision, head_revision, upgrade
from photoenhance.s3 import minio_client
from photoenhance.settings import Settings
from photoenhance.topology import declare_topology
from provision.cors import SERVER_WIDE, CorsSetupError, configure_upload_cors
from provision.notifications import configure_bucket_notifications, ensure_bucket

__all__ = ["BootstrapError", "Change", "LIFECYCLE_RULE_ID", "Step", "bootstrap"]

log = logging.getLogger(__name__)

#: Id of our lifecycle rule; rules with other ids belong to someone else and are kept.
LIFECYCLE_RULE_ID = "photoenhance-expiry"


class BootstrapError(RuntimeError):
    """A step could not be completed; the message names the step and the cause."""


class Change(str, Enum):
    """What a step did."""

    CREATED = "created"
    UPDATED = "updated"
    REMOVED = "removed"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Step:
    """One thing ``init`` made sure of."""

    what: str
    change: Change
    detail: str = ""

    @property
    def changed(self) -> bool:
        return self.change is not Change.UNCHANGED


async def bootstrap(settings: Settings, *, client: Minio | None = None) -> list[Step]:
    """Run every step; returns what each one did. Raises :class:`BootstrapError` on the first failure."""
    steps = await _topology(settings)
    steps.append(await _database(settings))
    steps += await asyncio.to_thread(_store, settings, client or minio_client(settings))
    return steps


# -- 1. AMQP -------------------------------------------------------------------------------------
async def _topology(settings: Settings) -> list[Step]:
    exchanges = [settings.amqp_events_exchange, settings.amqp_dead_letter_exchange, settings.amqp_progress_exchange]
    queues = [settings.amqp_work_queue, settings.amqp_dead_letter_exchange]
    try:
        connection = await aio_pika.connect(settings.amqp_url, timeout=15)
    except (TimeoutError, aio_pika.exceptions.AMQPError, OSError) as exc:
        raise BootstrapError(f"AMQP: cannot connect to the broker: {exc!r}") from exc
    try:
        existed = {("exchange", n): await _exists(connection, "exchange", n) for n in exchanges}
        existed |= {("queue", n): await _exists(connection, "queue", n) for n in queues}
        try:
            await declare_topology(await connection.channel(), settings)
        except aio_pika.exceptions.AMQPError as exc:
            # PRECONDITION_FAILED: something of that name exists with other arguments. Not ours to
            # delete (it may hold messages): say so and stop.
            raise BootstrapError(f"AMQP: declaring the topology failed (an existing name with other arguments?): {exc}") from exc
    finally:
        await connection.close()
    return [
        Step(f"{kind} {name}", Change.UNCHANGED if found else Change.CREATED)
        for (kind, name), found in existed.items()
    ]


async def _exists(connection: aio_pika.abc.AbstractConnection, kind: str, name: str) -> bool:
    """Whether an exchange or queue exists (a passive declare; a miss closes its channel)."""
    channel = await connection.channel()
    try:
        if kind == "exchange":
            await channel.get_exchange(name, ensure=True)
        else:
            await channel.get_queue(name, ensure=True)
        return True
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        if not channel.is_closed:
            await channel.close()


# -- 2. database ---------------------------------------------------------------------------------
async def _database(settings: Settings) -> Step:
    db = Database(settings.database_url, busy_timeout_ms=settings.database_busy_timeout_ms)
    try:
        before = await current_revision(db)
        await upgrade(db)
        after = await current_revision(db)
    except Exception as exc:  # driver errors differ per database; all mean the same here
        raise BootstrapError(f"database: migration failed: {exc}") from exc
    finally:
        await db.dispose()
    if after != head_revision():
        raise BootstrapError(f"database: at revision {after} after upgrading, expected {head_revision()}")
    change = Change.UNCHANGED if before == after else Change.CREATED if before is None else Change.UPDATED
    return Step("database schema", change, f"revision {after}")


# -- 3-5. object store ---------------------------------------------------------------------------
def _store(settings: Settings, client: Minio) -> list[Step]:
    steps = []
    for bucket in (settings.s3_input_bucket, settings.s3_output_bucket):
        created = ensure_bucket(client, bucket, settings.s3_region)
        steps.append(Step(f"bucket {bucket}", Change.CREATED if created else Change.UNCHANGED))
    for bucket in (settings.s3_input_bucket, settings.s3_output_bucket):
        steps.append(_lifecycle(client, bucket, settings.s3_lifecycle_days))
    steps.append(_notifications(settings, client))
    steps.append(_cors(settings))
    return steps


def _cors(settings: Settings) -> Step:
    what = f"CORS of {settings.s3_input_bucket}"
    try:
        outcome = configure_upload_cors(settings)
    except CorsSetupError as exc:
        raise BootstrapError(f"{what}: {exc}") from exc
    if outcome == SERVER_WIDE:
        return Step(what, Change.UNCHANGED, "the store applies its server-wide CORS setting")
    return Step(what, Change(outcome), f"browser uploads from {', '.join(settings.s3_cors_origins)}")


def _lifecycle(client: Minio, bucket: str, days: int) -> Step:
    """Our expiry rule on ``bucket``, other rules untouched."""
    what = f"lifecycle of {bucket}"
    try:
        current = client.get_bucket_lifecycle(bucket)
        rules = list(current.rules) if current is not None else []
        ours = [r for r in rules if r.rule_id == LIFECYCLE_RULE_ID]
        others = [r for r in rules if r.rule_id != LIFECYCLE_RULE_ID]
        if days <= 0:
            if not ours:
                return Step(what, Change.UNCHANGED, "no expiry (S3_LIFECYCLE_DAYS=0)")
            if others:
                client.set_bucket_lifecycle(bucket, LifecycleConfig(others))
            else:
                client.delete_bucket_lifecycle(bucket)
            return Step(what, Change.REMOVED, "expiry rule removed (S3_LIFECYCLE_DAYS=0)")
        if len(ours) == 1 and _is_wanted(ours[0], days):
            return Step(what, Change.UNCHANGED, f"objects expire after {days} days")
        wanted = Rule(
            ENABLED,
            rule_filter=Filter(prefix=""),
            rule_id=LIFECYCLE_RULE_ID,
            expiration=Expiration(days=days),
        )
        client.set_bucket_lifecycle(bucket, LifecycleConfig([*others, wanted]))
        after = client.get_bucket_lifecycle(bucket)
        if after is None or not any(r.rule_id == LIFECYCLE_RULE_ID and _is_wanted(r, days) for r in after.rules):
            raise BootstrapError(f"{what}: the store accepted the rule but does not return it")
        return Step(what, Change.UPDATED if ours else Change.CREATED, f"objects expire after {days} days")
    except MinioException as exc:
        raise BootstrapError(f"{what}: {exc}") from exc


def _is_wanted(rule: Rule, days: int) -> bool:
    prefix = rule.rule_filter.prefix if rule.rule_filter is not None else None
    return (
        rule.status == ENABLED
        and rule.expiration is not None
        and rule.expiration.days == days
        and not prefix
        and rule.transition is None
    )


def _notifications(settings: Settings, client: Minio) -> Step:
    bucket = settings.s3_input_bucket
    what = f"notifications of {bucket}"
    before = _notification_state(client, bucket)
    try:
        arn = configure_bucket_notifications(settings, client)
    except Exception as exc:  # NotificationSetupError and the client errors behind it
        raise BootstrapError(f"{what}: {exc}") from exc
    after = _notification_state(client, bucket)
    if before == after:
        return Step(what, Change.UNCHANGED, arn)
    return Step(what, Change.UPDATED if before else Change.CREATED, arn)


def _notification_state(client: Minio, bucket: str) -> list[tuple[str | None, str, tuple[str, ...]]]:
    config = client.get_bucket_notification(bucket)
    entries = [(c.config_id, c.topic, tuple(sorted(c.events))) for c in config.topic_config_list]
    entries += [(c.config_id, c.queue, tuple(sorted(c.events))) for c in config.queue_config_list]
    return sorted(entries, key=repr)
