"""Fixtures for the real RabbitMQ and PostgreSQL the tests run against, and per-test settings.

Each service is found in this order: an explicit URL in the environment (``TEST_AMQP_URL``,
``TEST_POSTGRES_URL``), the local server on its default port, a testcontainers container when
Docker works, else the test fails with a message saying what to start.

Every test gets its own names (exchanges, queues, routing key, database), so tests can run in any
order and leave nothing behind.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika
import asyncpg
import pytest

from db.connection import Database
from db.migrate import upgrade
from db.repository import Repository
from photoenhance.settings import Settings

LOCAL_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
LOCAL_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def unique_name(prefix: str = "t") -> str:
    """A short name no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def _port_open(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """URL of a running RabbitMQ."""
    explicit = os.environ.get("TEST_AMQP_URL")
    if explicit:
        yield explicit
        return
    if _port_open(LOCAL_AMQP_URL, 5672):
        yield LOCAL_AMQP_URL
        return
    if _docker_works():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13-management") as rabbit:
            host, port = rabbit.get_container_host_ip(), rabbit.get_exposed_port(5672)
            yield f"amqp://guest:guest@{host}:{port}/"
        return
    pytest.fail(
        "RabbitMQ is not reachable at 127.0.0.1:5672 and Docker is not available. Start it with "
        "`rabbitmq-server -detached` (Debian: apt-get install rabbitmq-server) or set TEST_AMQP_URL."
    )


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """URL of a PostgreSQL database whose user may create databases."""
    explicit = os.environ.get("TEST_POSTGRES_URL")
    if explicit:
        yield explicit
        return
    if _port_open(LOCAL_POSTGRES_URL, 5432):
        yield LOCAL_POSTGRES_URL
        return
    if _docker_works():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as pg:
            yield pg.get_connection_url()
        return
    pytest.fail(
        "PostgreSQL is not reachable at 127.0.0.1:5432 and Docker is not available. Start it with "
        "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
        "(Debian: apt-get install postgresql) or set TEST_POSTGRES_URL."
    )


def asyncpg_url(admin_url: str, database: str) -> str:
    """The SQLAlchemy (asyncpg) URL of ``database`` on the server ``admin_url`` points at."""
    parts = urlsplit(admin_url)
    return parts._replace(scheme="postgresql+asyncpg", path=f"/{database}").geturl()


async def postgres_ddl(admin_url: str, statement: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE) as ``admin_url``'s user."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
def postgres_database_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards)."""
    name = unique_name("pe_")
    admin = postgres_admin_url.replace("postgresql+asyncpg://", "postgresql://")

    asyncio.run(postgres_ddl(admin, f'CREATE DATABASE "{name}"'))
    try:
        yield asyncpg_url(admin, name)
    finally:
        asyncio.run(postgres_ddl(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database for one test: SQLite by default.

    Run a test against both engines with
    ``@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)``.
    """
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_database_url")
    if request.param != "sqlite":
        raise ValueError(f"unknown database kind {request.param!r}")
    return f"sqlite+aiosqlite:///{tmp_path / 'photoenhance.db'}"


@pytest.fixture
def settings(amqp_url: str, database_url: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings for one test: unique AMQP names, a fresh database URL, a temp weights folder.

    Object-store settings stay at their defaults; ``store_settings`` adds a real store and buckets.
    The test's exchanges and queues are deleted afterwards, whoever declared them.
    """
    tag = unique_name("t")
    test_settings = Settings.from_env(
        environ={},
        amqp_url=amqp_url,
        amqp_events_exchange=f"{tag}.s3-events",
        amqp_events_routing_key=f"{tag}-uploads",
        amqp_work_queue=f"{tag}.work",
        amqp_dead_letter_exchange=f"{tag}.dead-letter",
        amqp_progress_exchange=f"{tag}.progress",
        database_url=database_url,
        weights_dir=tmp_path / "weights",
    )
    yield test_settings
    asyncio.run(delete_amqp_names(test_settings))


async def delete_amqp_names(settings: Settings) -> None:
    """Delete the queues and exchanges named in ``settings`` (missing ones are fine)."""
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        names = [
            ("queue", settings.amqp_work_queue),
            ("queue", settings.amqp_dead_letter_exchange),
            ("exchange", settings.amqp_events_exchange),
            ("exchange", settings.amqp_dead_letter_exchange),
            ("exchange", settings.amqp_progress_exchange),
        ]
        for kind, name in names:
            # A failed delete closes its channel, so each gets its own.
            channel = await connection.channel()
            try:
                if kind == "queue":
                    await channel.queue_delete(name)
                else:
                    await channel.exchange_delete(name)
            except aio_pika.exceptions.AMQPError:
                pass
    finally:
        await connection.close()


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    """The test's database, migrated to the newest revision."""
    db = Database(settings.database_url, busy_timeout_ms=settings.database_busy_timeout_ms)
    await upgrade(db)
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture
def repository(database: Database) -> Repository:
    """A repository over the test's database."""
    return Repository(database)
