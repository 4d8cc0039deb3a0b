"""``photoenhance processor --workers N``: one engine process and N worker processes feeding it.

On a GPU host one worker process cannot feed the GPU (docs/BENCHMARKS.md, "Worker ceiling"): this
starts ``photoenhance engine`` on a socket of its own and N ``photoenhance processor`` children
with ``ENGINE_SOCKET`` set to it, worker ``i`` serving ``/healthz`` on ``PROCESSOR_PORT + i``.

The group lives and dies as one, so the service manager (systemd, Kubernetes) sees one unit:

- SIGTERM or SIGINT: the workers get it first and drain their in-flight images (each within its
  ``SHUTDOWN_GRACE_S``); the engine process is stopped only after the last worker has exited, so
  no image in flight loses its engine. Exit status 0. The children run in sessions of their own
  (a terminal's Ctrl-C reaches this process only; under systemd use ``KillMode=mixed`` so the
  stop signal goes to this process alone) and get SIGTERM should this process die.
- a child that exits by itself (a crash, a failed start): the others are stopped the same way and
  the group exits with that child's status (1 if it was 0), for the service manager to restart.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from photoenhance.settings import Settings

__all__ = ["run_group"]

log = logging.getLogger(__name__)

#: Seconds the engine process has to stop after the workers have.
ENGINE_STOP_S = 30.0
#: prctl(2) option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before it runs: SIGTERM when the group's process dies, however it dies
    (Linux ``PR_SET_PDEATHSIG``), so no worker outlives its group."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux's libc: the group's own stop is all there is
        pass


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # A session of its own: a terminal's Ctrl-C reaches the group's process only, which stops the
    # children once, in order (a second signal would cut a worker's drain short).
    return subprocess.Popen([sys.executable, "-m", "photoenhance", *args], env=env, start_new_session=True,
                            preexec_fn=_die_with_parent)


def _stop(children: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
    """SIGTERM each child still running, wait up to ``timeout_s``, then kill what is left."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("process %d did not stop within %.0f s; killing it", child.pid, timeout_s)
            child.kill()
            child.wait()


def run_group(settings: Settings, workers: int, worker_id: str | None = None) -> int:
    """Run the engine process and ``workers`` worker processes until a signal or a child's exit;
    returns the group's exit status."""
    stop = threading.Event()  # before any child exists: a signal is never missed
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _run(settings, workers, worker_id, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(settings: Settings, workers: int, worker_id: str | None, stop: threading.Event) -> int:
    with tempfile.TemporaryDirectory(prefix="photoenhance-engine-") as private:  # 0700: the socket's folder
        socket_path = settings.engine_socket or str(Path(private) / "engine.sock")
        env = {**os.environ, **settings.to_env(), "ENGINE_SOCKET": socket_path}
        engine = _spawn(["engine", "--socket", socket_path], env)
        base = worker_id or f"{os.uname().nodename}-{os.getpid()}"
        feeders = [
            _spawn(["processor", "--worker-id", f"{base}-w{i + 1}"],
                   {**env, "PROCESSOR_PORT": str(settings.processor_port + i if settings.processor_port else 0)})
            for i in range(workers)
        ]
        log.info("engine process %d on %s, %d worker process(es): %s", engine.pid, socket_path, workers,
                 " ".join(str(f.pid) for f in feeders))
        return _supervise(engine, feeders, settings.shutdown_grace_s + 15, stop)


def _supervise(
    engine: subprocess.Popen[bytes], feeders: list[subprocess.Popen[bytes]], drain_s: float, stop: threading.Event
) -> int:
    ended: subprocess.Popen[bytes] | None = None
    while not stop.wait(0.2):
        ended = next((child for child in (engine, *feeders) if child.poll() is not None), None)
        if ended is not None:
            break
    if ended is not None:
        who = "the engine process" if ended is engine else f"worker process {ended.pid}"
        log.error("%s exited with status %d; stopping the group", who, ended.returncode)
    _stop(feeders, drain_s)  # the workers drain first, while the engine still serves them
    _stop([engine], ENGINE_STOP_S)
    if ended is None:
        return 0
    return ended.returncode or 1
