"""infra/ceph: the scripts' defaults and the refusals that need no cluster.

Starting and stopping a cluster is exercised by the ``object_store`` fixture on every session.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from photoenhance.settings import Settings

CEPH = Path(__file__).resolve().parents[2] / "infra" / "ceph"


def run(script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CEPH / script), *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )


def test_up_defaults_to_the_settings_credentials() -> None:
    text = (CEPH / "up.sh").read_text()
    defaults = Settings.from_env(environ={})
    for name, value in [("S3_ACCESS_KEY", defaults.s3_access_key), ("S3_SECRET_KEY", defaults.s3_secret_key)]:
        assert re.search(rf'^{name}="\$\{{{name}:-{re.escape(value)}\}}"$', text, re.MULTILINE), name


def test_down_without_a_cluster_succeeds(tmp_path: Path) -> None:
    assert run("down.sh", BASE=str(tmp_path / "never-created")).returncode == 0
    assert run("down.sh", "rgw", BASE=str(tmp_path / "never-created")).returncode == 0


def test_down_leaves_a_folder_up_sh_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    result = run("down.sh", BASE=str(tmp_path))
    assert result.returncode == 0
    assert (tmp_path / "precious.txt").exists()
    assert "does not look like a cluster folder" in result.stderr


def test_up_refuses_a_taken_port_before_starting_anything(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = str(listener.getsockname()[1])
        result = run("up.sh", BASE=str(tmp_path / "cluster"), RGW_PORT=port, MON_V1_PORT="1", MON_V2_PORT="2")
    assert result.returncode == 3, result.stderr
    assert f"port {port} is taken" in result.stderr
    assert not (tmp_path / "cluster").exists()


def _free_ports(count: int) -> list[str]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [str(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent that has not reaped it yet."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return not re.search(r"^State:\s*Z", status, re.MULTILINE)


@pytest.mark.objectstore
@pytest.mark.skipif(shutil.which("radosgw") is None, reason="radosgw is not installed")
def test_a_relative_base_is_started_and_stopped_whole(tmp_path: Path) -> None:
    """`BASE=var/ceph` (as infra/local/up.sh passes it) must leave no daemon behind on down.sh."""
    rgw, v2, v1 = _free_ports(3)
    env = {**os.environ, "BASE": "rel/ceph", "RGW_PORT": rgw, "MON_V2_PORT": v2, "MON_V1_PORT": v1}
    up = subprocess.run([str(CEPH / "up.sh")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    pids = [int(line.split()[1]) for line in (tmp_path / "rel/ceph/pids").read_text().splitlines()]
    try:
        assert up.returncode == 0, up.stderr
        assert f"/{tmp_path.name}/rel/ceph/" in (tmp_path / "rel/ceph/env").read_text()
    finally:
        down = subprocess.run([str(CEPH / "down.sh")], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
    assert down.returncode == 0, down.stderr
    assert pids and not [pid for pid in pids if _alive(pid)]
    assert not (tmp_path / "rel/ceph").exists()
