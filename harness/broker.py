"""A private RabbitMQ node for fault tests that stop or restart the broker.

The shared broker on 127.0.0.1:5672 serves every engineer's tests at once, so a test that kills
or restarts a broker gets its own node: own node name, AMQP port, distribution port, data and log
folders under a temporary directory, and its own config and env files (the machine's
``/etc/rabbitmq`` would put it on 5672 and under the shared node's name). Started with
``rabbitmq-server -detached`` and controlled with ``rabbitmqctl -n <node>``; the Erlang cookie is
the user's, as for the shared node.

``private_broker`` (function scope) yields a running :class:`PrivateBroker`; ``stop()``,
``start()``, ``restart()`` and ``kill()`` are the fault injections. Quorum queues and durable
exchanges survive a restart (the node keeps its data folder).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.processor import free_port

__all__ = ["PrivateBroker", "private_broker"]

#: Seconds a node may take to boot (Erlang on two busy cores: ~5-15 s).
BOOT_TIMEOUT_S = 90


class PrivateBroker:
    """One throw-away RabbitMQ node on free ports."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.name = f"pe-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        (base / "mnesia").mkdir(parents=True, exist_ok=True)
        (base / "log").mkdir(exist_ok=True)
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n"
            # A test node must not stop publishers because the shared disk is fuller than 50 MB free.
            "disk_free_limit.absolute = 1MB\n"
        )
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")
        _hand_to_rabbitmq_user(base)

    @property
    def url(self) -> str:
        """AMQP URL of the node (guest/guest, loopback only)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(self.base / "rabbit.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def _ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["rabbitmqctl", "-n", self.name, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start(self) -> None:
        """Boot the node and wait until it accepts AMQP connections."""
        subprocess.run(["rabbitmq-server", "-detached"], env=self.env, check=True, capture_output=True, timeout=60)
        # await_startup fails at once while the node has not registered with epmd yet: poll it.
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while True:
            result = self._ctl("await_startup", "--timeout", "15", timeout=30)
            if result.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"private RabbitMQ {self.name} did not start: {result.stdout}{result.stderr}"
                                   f"\nlogs: {self.base / 'log'}")
            time.sleep(0.5)
        deadline = time.monotonic() + 30
        while not self.accepts_connections():
            if time.monotonic() > deadline:
                raise RuntimeError(f"private RabbitMQ {self.name} runs but port {self.port} does not answer")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the node cleanly (``rabbitmqctl stop``) and wait until it is gone."""
        self._ctl("stop", "--timeout", "60", timeout=90)
        self._wait_port_closed()

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM (a crash)."""
        pid_file = self.base / "rabbit.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
            except (ValueError, ProcessLookupError):
                pass
        self._wait_port_closed()

    def restart(self) -> None:
        self.stop()
        self.start()

    def accepts_connections(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def _wait_port_closed(self) -> None:
        deadline = time.monotonic() + 30
        while self.accepts_connections() and time.monotonic() < deadline:
            time.sleep(0.2)


def _hand_to_rabbitmq_user(base: Path) -> None:
    """Debian's ``rabbitmq-server`` run as root drops to the ``rabbitmq`` user, which must own the folder."""
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam("rabbitmq")
    except KeyError:
        return
    for path in [base, *base.rglob("*")]:
        shutil.chown(path, "rabbitmq", "rabbitmq")


@pytest.fixture
def private_broker() -> Iterator[PrivateBroker]:
    """A running private RabbitMQ node, stopped and removed afterwards."""
    if shutil.which("rabbitmq-server") is None:
        pytest.fail("rabbitmq-server is not installed (apt-get install rabbitmq-server)", pytrace=False)
    base = Path(tempfile.mkdtemp(prefix="pe-rmq-"))
    broker = PrivateBroker(base)
    try:
        broker.start()
        yield broker
    finally:
        try:
            if broker.accepts_connections():
                broker.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)
