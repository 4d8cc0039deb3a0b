"""``photoenhance enhance`` and Ctrl-C: cancel on the server when asked to, continue anew afterwards."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from client.interrupt import should_cancel
from harness.processor import REPO, image_bytes
from harness.stack import StartStack
from tests.client.test_enhance_cli import cli_env, progress_of, run_cli, wait_for


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_should_cancel_asks_only_on_a_terminal() -> None:
    asked: list[str] = []

    def answer(text: str) -> str:
        asked.append(text)
        return "y"

    assert should_cancel(["B1"], always=True, stdin=io.StringIO(), ask=answer) and not asked
    assert not should_cancel(["B1"], always=False, stdin=io.StringIO(), ask=answer) and not asked  # a script
    assert should_cancel(["B1"], always=False, stdin=_Tty(), ask=answer) and "B1" in asked[0]
    assert not should_cancel(["B1"], always=False, stdin=_Tty(), ask=lambda _: "")  # default: no
    assert not should_cancel([], always=True)


@pytest.mark.objectstore
async def test_ctrl_c_with_cancel_on_interrupt_cancels_the_batch_and_a_rerun_starts_anew(
    start_stack: StartStack, tmp_path: Path
) -> None:
    stack = await start_stack(processor=False)  # uploads land, nothing is processed yet
    folder, out = tmp_path / "photos", tmp_path / "enhanced"
    folder.mkdir()
    for i in range(6):
        (folder / f"p{i}.jpg").write_bytes(image_bytes(64, 48, seed=i))
    args = [sys.executable, "-m", "photoenhance", "enhance", str(folder), "--out", str(out), "--quality", "fast",
            "--server", stack.ingest_url, "--json", "--cancel-on-interrupt"]
    process = subprocess.Popen(args, env=cli_env(stack.settings), cwd=REPO, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: sorted(progress_of(out).values()) == ["uploaded"] * 6, "all 6 uploads", process)
        process.send_signal(signal.SIGINT)
        _, said = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, said
    state = json.loads((out / ".photoenhance-state.json").read_text())
    (batch_id, batch), = state["batches"].items()
    assert f"batch {batch_id}: cancelled" in said, said
    status = stack.api(f"/api/v1/batches/{batch_id}", batch["token"])
    assert status["state"] == "cancelled" and status["counts"]["cancelled"] == 6, status["counts"]

    # Run again with a worker: the cancelled batch is left behind and a new one does the work.
    stack.start_processor()
    code, summary, said = run_cli(stack, str(folder), "--out", str(out), "--quality", "fast")
    assert code == 0, said
    assert summary["counts"]["completed"] == 6 and summary["batches"] != [batch_id]
