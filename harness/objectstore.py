"""Fixtures for the real S3 object store with bucket notifications, and per-test buckets.

``object_store`` (session) finds or starts one store, in this order:

1. ``TEST_S3_ENDPOINT`` (with ``TEST_S3_ACCESS_KEY``, ``TEST_S3_SECRET_KEY``, ``TEST_S3_PROVIDER``
   = ``ceph`` or ``minio``, ``TEST_S3_REGION``): a server someone else runs. It cannot be
   stopped or restarted by tests. For ``minio``, ``TEST_S3_EVENTS_EXCHANGE`` and
   ``TEST_S3_EVENTS_ROUTING_KEY`` must name the exchange and routing key its AMQP target publishes to
   (defaults: the settings' defaults, as infra/docker-compose.yml configures them).
2. ``TEST_OBJECT_STORE=minio`` with a working Docker: MinIO through testcontainers, publishing to
   the test RabbitMQ.
3. ``radosgw`` installed: a throw-away Ceph cluster from ``infra/ceph/up.sh`` on free ports in a
   temporary folder, removed at the end of the session (~2 s to start).
4. Otherwise the test fails, saying what to install.

``store_settings`` (per test) takes the ``settings`` fixture of harness/services.py (unique
AMQP names, fresh database) and adds the store, two fresh buckets, the declared AMQP topology and a
configured bucket notification; afterwards the buckets and the RGW topic are deleted.

How notifications are kept apart between tests, per provider (measured on RGW 16.2.15):

- Ceph RGW keeps one AMQP connection per broker host:port/vhost, tied to the exchange of the first
  topic that used it; a topic naming another exchange on that URL publishes nothing (the PUT still
  succeeds). So every test uses the one events exchange of the session, and isolation comes from
  the per-test topic, whose name is the per-test routing key, bound to the per-test work queue.
  The exchange is never deleted while the session runs: do not delete ``amqp_events_exchange`` of
  ``store_settings``. A session-owned RGW gets a session-unique exchange (deleted at the end); an
  RGW someone else runs keeps its first exchange for its whole life, so every session against it
  uses one fixed name (``TEST_S3_EVENTS_EXCHANGE``, default ``photoenhance.test.s3-events``).
- MinIO's AMQP target has one exchange and one routing key, fixed when the server starts. Every
  test gets the session's routing key, and isolation comes only from per-test buckets and the
  per-test queue existing only during its test; a test should check the bucket of each record.
"""

from __future__ import annotations

import asyncio
import io
import os
import platform
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import aio_pika
import pytest
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException

from harness.services import free_port, unique_name
from photoenhance.s3 import minio_client
from photoenhance.settings import Settings
from photoenhance.topology import declare_topology
from provision.notifications import configure_bucket_notifications, delete_rgw_topic, ensure_bucket

REPO = Path(__file__).resolve().parents[1]
CEPH_SCRIPTS = REPO / "infra" / "ceph"

#: What to install when no object store can be found or started (TESTING.md).
CEPH_APT_PACKAGES = "ceph-mon ceph-osd radosgw ceph-common jq uuid-runtime bc curl"

#: MinIO release used with testcontainers; override with TEST_MINIO_IMAGE.
MINIO_IMAGE = "minio/minio:RELEASE.2025-04-22T22-12-26Z"

#: Events exchange used on a store someone else runs: RGW binds one exchange per broker URL for
#: its whole life, so every session against it must use the same name.
SHARED_EVENTS_EXCHANGE = "photoenhance.test.s3-events"

#: Seconds one start of the Ceph cluster may take before the session gives up.
CEPH_UP_TIMEOUT_S = 120


class StoreControl(Protocol):
    """Stops and starts the S3 server process (for fault injection) and tears it down."""

    def stop(self, kill: bool) -> None: ...

    def start(self) -> None: ...

    def is_running(self) -> bool: ...

    def close(self) -> None: ...


@dataclass
class ObjectStore:
    """A running S3 server with bucket notifications into the test RabbitMQ."""

    #: ``ceph`` or ``minio``, as ``S3_PROVIDER`` takes it.
    provider: str
    endpoint: str
    access_key: str
    secret_key: str
    region: str
    #: The one events exchange every test of the session uses (see the module docstring).
    events_exchange: str
    #: The routing key the server is fixed to (MinIO), or None when each test picks its own (RGW).
    events_routing_key: str | None = None
    control: StoreControl | None = field(default=None, repr=False)

    @property
    def can_restart(self) -> bool:
        """Whether tests may stop and start the server (not for a server someone else runs)."""
        return self.control is not None

    def stop(self, *, kill: bool = False) -> None:
        """Stop the S3 server: SIGTERM and wait, or with ``kill`` SIGKILL (a crash).

        After a killed radosgw is started again, bucket creation and deletion stall for up to ~4 s
        until the OSD expires the dead process's watches (shortened from 30 s in infra/ceph/up.sh).
        """
        self._require_control().stop(kill)

    def start(self) -> None:
        """Start the S3 server again and wait until it answers."""
        self._require_control().start()

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or kill) the S3 server and start it again."""
        self.stop(kill=kill)
        self.start()

    def ensure_running(self) -> None:
        """Start the server if a previous test left it stopped."""
        if self.control is not None and not self.control.is_running():
            self.control.start()

    def client(self) -> Minio:
        """A plain S3 client with the store's credentials."""
        parts = urlsplit(self.endpoint)
        return Minio(
            parts.netloc,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=parts.scheme == "https",
            region=self.region,
        )

    def _require_control(self) -> StoreControl:
        if self.control is None:
            pytest.skip("the object store is run by someone else (TEST_S3_ENDPOINT): it cannot be restarted")
        return self.control


# -- Ceph RGW via infra/ceph ---------------------------------------------------------------------
class CephStartError(RuntimeError):
    """infra/ceph/up.sh failed; the message carries its output."""


class CephCluster:
    """One throw-away Ceph cluster (monitor, memstore OSD, radosgw) run by infra/ceph's scripts."""

    #: up.sh's exit status when a port is taken (another process got it between pick and bind).
    PORT_TAKEN = 3

    def __init__(self, base: Path, access_key: str, secret_key: str) -> None:
        self.base = base
        self.access_key = access_key
        self.secret_key = secret_key
        self.rgw_port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.rgw_port}"

    def up(self, attempts: int = 3) -> None:
        """Start the cluster on free ports, trying new ports when one was taken meanwhile."""
        for _ in range(attempts):
            self.rgw_port = free_port()
            ports = {"RGW_PORT": self.rgw_port, "MON_V2_PORT": free_port(), "MON_V1_PORT": free_port()}
            if len(set(ports.values())) < len(ports):
                continue
            result = self._script("up.sh", env={k: str(v) for k, v in ports.items()}, timeout=CEPH_UP_TIMEOUT_S)
            if result.returncode == 0:
                return
            if result.returncode != self.PORT_TAKEN:
                raise CephStartError(f"infra/ceph/up.sh failed (exit {result.returncode}):\n{_output(result)}")
        raise CephStartError(f"infra/ceph/up.sh found its ports taken {attempts} times")

    def down(self) -> None:
        """Stop every daemon and remove the cluster's folder."""
        self._script("down.sh", timeout=60)

    # StoreControl
    def stop(self, kill: bool) -> None:
        result = self._script("down.sh", "rgw", *(["--kill"] if kill else []), timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"infra/ceph/down.sh rgw failed:\n{_output(result)}")

    def start(self) -> None:
        result = self._script("up.sh", "rgw", timeout=CEPH_UP_TIMEOUT_S)
        if result.returncode != 0:
            raise RuntimeError(f"infra/ceph/up.sh rgw failed (exit {result.returncode}):\n{_output(result)}")

    def is_running(self) -> bool:
        return _answers(self.endpoint + "/")

    def close(self) -> None:
        self.down()

    def _script(
        self, name: str, *args: str, env: dict[str, str] | None = None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        full_env = {
            **os.environ,
            "BASE": str(self.base),
            "S3_ACCESS_KEY": self.access_key,
            "S3_SECRET_KEY": self.secret_key,
            **(env or {}),
        }
        try:
            return subprocess.run(
                [str(CEPH_SCRIPTS / name), *args], env=full_env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            command = " ".join([name, *args])
            raise CephStartError(f"infra/ceph/{command} ran past {timeout} s; logs in {self.base}/log") from exc


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stdout + result.stderr).strip()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answered, if only with an error status
    except OSError:
        return False


@asynccontextmanager
async def ceph_cluster(base: Path) -> AsyncIterator[CephCluster]:
    """A throw-away Ceph cluster in ``base`` on free ports, with the settings' default S3 keys; the
    one way benchmarks start one. Taken down on exit, also when its start failed half-way (down.sh
    stops whatever did start)."""
    defaults = Settings.from_env(environ={})
    cluster = CephCluster(base, defaults.s3_access_key, defaults.s3_secret_key)
    try:
        await asyncio.to_thread(cluster.up)
        yield cluster
    finally:
        await asyncio.to_thread(cluster.down)


def _start_ceph(access_key: str, secret_key: str) -> CephCluster:
    # A short folder in /tmp: Unix socket paths (admin sockets) must stay under 108 bytes.
    cluster = CephCluster(Path(tempfile.mkdtemp(prefix="pe-ceph-")), access_key, secret_key)
    try:
        cluster.up()
    except CephStartError as exc:
        pytest.fail(f"could not start the test Ceph cluster: {exc}", pytrace=False)
    return cluster


# -- MinIO via testcontainers --------------------------------------------------------------------
# Written for Linux CI with Docker; Docker does not run on the development machines, so this path
# has not been run here. MinIO shares the host's network so that it reaches the test RabbitMQ at
# the same address as the tests do (RabbitMQ lets guest in from loopback only) and keeps its port
# across restarts.
class MinioServer:
    """A MinIO container whose AMQP target ``PRIMARY`` publishes to the test RabbitMQ."""

    def __init__(self, amqp_url: str, exchange: str, routing_key: str, access_key: str, secret_key: str) -> None:
        from testcontainers.core.container import DockerContainer

        self._created = False
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.container = (
            DockerContainer(os.environ.get("TEST_MINIO_IMAGE", MINIO_IMAGE))
            .with_command(["server", "/data", "--address", f"127.0.0.1:{self.port}"])
            .with_envs(
                MINIO_ROOT_USER=access_key,
                MINIO_ROOT_PASSWORD=secret_key,
                # Same target settings as infra/docker-compose.yml: durable exchange and messages,
                # publisher confirms, and a queue dir so events outlive a broker outage.
                MINIO_NOTIFY_AMQP_ENABLE_PRIMARY="on",
                MINIO_NOTIFY_AMQP_URL_PRIMARY=amqp_url,
                MINIO_NOTIFY_AMQP_EXCHANGE_PRIMARY=exchange,
                MINIO_NOTIFY_AMQP_EXCHANGE_TYPE_PRIMARY="topic",
                MINIO_NOTIFY_AMQP_ROUTING_KEY_PRIMARY=routing_key,
                MINIO_NOTIFY_AMQP_DURABLE_PRIMARY="on",
                MINIO_NOTIFY_AMQP_DELIVERY_MODE_PRIMARY="2",
                MINIO_NOTIFY_AMQP_PUBLISHING_CONFIRMS_PRIMARY="on",
                MINIO_NOTIFY_AMQP_QUEUE_DIR_PRIMARY="/data/.events",
            )
            .with_kwargs(network_mode="host")
        )

    # StoreControl
    def start(self) -> None:
        """Create and start the container the first time, start it again after :meth:`stop`."""
        if not self._created:
            self.container.start()
            self._created = True
        else:
            self.container.get_wrapped_container().start()
        deadline = time.monotonic() + 60
        while not self.is_running():
            if time.monotonic() > deadline:
                raise RuntimeError(f"MinIO did not answer on {self.endpoint} within 60 s")
            time.sleep(0.2)

    def stop(self, kill: bool) -> None:
        wrapped = self.container.get_wrapped_container()
        if kill:
            wrapped.kill()
        else:
            wrapped.stop(timeout=10)

    def is_running(self) -> bool:
        return _answers(self.endpoint + "/minio/health/live")

    def close(self) -> None:
        self.container.stop()


def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# -- AMQP helpers --------------------------------------------------------------------------------
async def _delete_exchange(amqp_url: str, exchange: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.exchange_delete(exchange)
    except aio_pika.exceptions.AMQPError:
        pass
    finally:
        await connection.close()


async def _declare(settings: Settings) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        await declare_topology(await connection.channel(), settings)
    finally:
        await connection.close()


# -- fixtures ------------------------------------------------------------------------------------
def _external_store(endpoint: str) -> ObjectStore:
    """The server named by TEST_S3_ENDPOINT and its companions."""
    defaults = Settings.from_env(environ={})
    provider = os.environ.get("TEST_S3_PROVIDER", "ceph")
    if provider not in {"ceph", "minio"}:
        pytest.fail(f"TEST_S3_PROVIDER={provider!r}: use 'ceph' or 'minio'", pytrace=False)
    if provider == "ceph":
        exchange, routing_key = os.environ.get("TEST_S3_EVENTS_EXCHANGE", SHARED_EVENTS_EXCHANGE), None
    else:
        exchange = os.environ.get("TEST_S3_EVENTS_EXCHANGE", defaults.amqp_events_exchange)
        routing_key = os.environ.get("TEST_S3_EVENTS_ROUTING_KEY", defaults.amqp_events_routing_key)
    return ObjectStore(
        provider=provider,
        endpoint=endpoint,
        access_key=os.environ.get("TEST_S3_ACCESS_KEY", defaults.s3_access_key),
        secret_key=os.environ.get("TEST_S3_SECRET_KEY", defaults.s3_secret_key),
        region=os.environ.get("TEST_S3_REGION", defaults.s3_region),
        events_exchange=exchange,
        events_routing_key=routing_key,
    )


def _own_store(amqp_url: str, session: str) -> ObjectStore:
    """A server this session starts (MinIO when asked for and possible, else Ceph RGW)."""
    defaults = Settings.from_env(environ={})
    exchange = f"photoenhance.test.{session}.s3-events"
    control: StoreControl
    routing_key = None
    want_minio = os.environ.get("TEST_OBJECT_STORE") == "minio"
    use_minio = want_minio and platform.system() == "Linux" and _docker_works()
    if want_minio and not use_minio:
        warnings.warn("TEST_OBJECT_STORE=minio needs Docker on Linux; falling back to Ceph RGW", stacklevel=2)
    if use_minio:
        provider, routing_key = "minio", f"{session}-uploads"
        server = MinioServer(amqp_url, exchange, routing_key, defaults.s3_access_key, defaults.s3_secret_key)
        server.start()
        control, endpoint = server, server.endpoint
    elif shutil.which("radosgw") is not None:
        provider = "ceph"
        cluster = _start_ceph(defaults.s3_access_key, defaults.s3_secret_key)
        control, endpoint = cluster, cluster.endpoint
    else:
        pytest.fail(
            "No S3 server with bucket notifications: set TEST_S3_ENDPOINT (and TEST_S3_ACCESS_KEY, "
            "TEST_S3_SECRET_KEY, TEST_S3_PROVIDER), or install Ceph RGW: "
            f"apt-get install -y --no-install-recommends {CEPH_APT_PACKAGES}, "
            "or run TEST_OBJECT_STORE=minio with Docker.",
            pytrace=False,
        )
    return ObjectStore(
        provider=provider,
        endpoint=endpoint,
        access_key=defaults.s3_access_key,
        secret_key=defaults.s3_secret_key,
        region=defaults.s3_region,
        events_exchange=exchange,
        events_routing_key=routing_key,
        control=control,
    )


@pytest.fixture(scope="session")
def object_store(amqp_url: str) -> Iterator[ObjectStore]:
    """The session's S3 server with bucket notifications (see the module docstring)."""
    endpoint = os.environ.get("TEST_S3_ENDPOINT")
    if endpoint:
        yield _external_store(endpoint)
        return
    store = _own_store(amqp_url, unique_name("s"))
    try:
        yield store
    finally:
        assert store.control is not None
        store.control.close()
        asyncio.run(_delete_exchange(amqp_url, store.events_exchange))


@pytest.fixture
def store_settings(settings: Settings, object_store: ObjectStore) -> Iterator[Settings]:
    """``settings`` plus the object store, two fresh buckets, the AMQP topology and the notification.

    The input bucket announces every new object on the test's work queue. Buckets (with their
    objects and notifications) and the RGW topic are deleted afterwards.
    """
    object_store.ensure_running()
    tag = uuid.uuid4().hex[:12]
    test_settings = settings.replace(
        s3_provider=object_store.provider,
        s3_endpoint=object_store.endpoint,
        s3_access_key=object_store.access_key,
        s3_secret_key=object_store.secret_key,
        s3_region=object_store.region,
        s3_input_bucket=f"pe-{tag}-in",
        s3_output_bucket=f"pe-{tag}-out",
        amqp_events_exchange=object_store.events_exchange,
        amqp_events_routing_key=object_store.events_routing_key or settings.amqp_events_routing_key,
    )
    client = minio_client(test_settings)
    for bucket in (test_settings.s3_input_bucket, test_settings.s3_output_bucket):
        ensure_bucket(client, bucket, test_settings.s3_region)
    asyncio.run(_declare(test_settings))
    target = configure_bucket_notifications(test_settings, client)
    try:
        yield test_settings
    finally:
        object_store.ensure_running()  # a fault-injection test may have left it stopped
        try:
            for bucket in (test_settings.s3_input_bucket, test_settings.s3_output_bucket):
                remove_bucket(client, bucket)
        finally:
            if test_settings.s3_provider == "ceph":
                delete_rgw_topic(test_settings, target)


def remove_bucket(client: Minio, bucket: str) -> None:
    """Delete every object of ``bucket``, then the bucket (with its notifications); missing is fine."""
    try:
        if not client.bucket_exists(bucket):
            return
        names = [DeleteObject(o.object_name) for o in client.list_objects(bucket, recursive=True) if o.object_name]
        errors = list(client.remove_objects(bucket, names))
        if errors:
            raise RuntimeError(f"could not empty bucket {bucket!r}: {errors[:3]}")
        client.remove_bucket(bucket)
    except MinioException as exc:
        raise RuntimeError(f"could not remove bucket {bucket!r}: {exc}") from exc


def put_bytes(
    client: Minio, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream"
) -> str:
    """PUT ``data`` under ``key``; return the eTag the store gave it (without quotes)."""
    result = client.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type)
    return (result.etag or "").strip('"')
