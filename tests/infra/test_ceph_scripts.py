"""infra/ceph: the scripts' defaults and the refusals that need no cluster.

Starting and stopping a cluster is exercised by the ``object_store`` fixture on every session.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

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
