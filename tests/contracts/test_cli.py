"""The ``photoenhance`` command: every subcommand loads, and a broken one is reported, not dropped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from photoenhance import cli

REPO = Path(__file__).resolve().parents[2]


def test_every_subcommand_is_listed_by_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli.SUBCOMMANDS)


@pytest.mark.parametrize("module", ["photoenhance.no_such_module", "no_such_package.cli"])
def test_a_subcommand_whose_module_fails_to_import_fails_the_command(
    module: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli.SUBCOMMANDS, "broken", (module, "A subcommand that cannot load."))
    assert cli.main(["settings"]) == 2
    err = capsys.readouterr().err
    assert "'broken' command cannot be loaded" in err and module in err and "ModuleNotFoundError" in err


def test_an_import_error_inside_the_module_is_named(tmp_path: Path) -> None:
    """A module that exists but raises while importing (a missing dependency, say), in a real process."""
    (tmp_path / "brokencmd.py").write_text("import a_dependency_that_is_not_installed\n")
    code = (
        "import sys; from photoenhance import cli; "
        "cli.SUBCOMMANDS['broken'] = ('brokencmd', 'x'); sys.exit(cli.main(['settings']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": f"{REPO}:{tmp_path}", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2, done.stderr
    assert "importing brokencmd failed" in done.stderr and "a_dependency_that_is_not_installed" in done.stderr
