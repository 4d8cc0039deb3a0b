"""photoenhance.event_loop: EVENT_LOOP picks the loop the long-lived services run on."""

from __future__ import annotations

import asyncio
import builtins

import pytest
import uvloop

from photoenhance import event_loop
from photoenhance.settings import Settings


async def _loop_type() -> type:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


def test_auto_and_uvloop_run_on_uvloop_and_asyncio_on_the_standard_loop() -> None:
    assert issubclass(event_loop.run(_loop_type(), "auto"), uvloop.Loop)
    assert issubclass(event_loop.run(_loop_type(), " UVLOOP "), uvloop.Loop)
    ran = event_loop.run(_loop_type(), "asyncio")
    assert not issubclass(ran, uvloop.Loop) and issubclass(ran, asyncio.BaseEventLoop)


def test_the_default_setting_is_auto() -> None:
    assert Settings().event_loop == "auto"
    assert Settings.from_env({"EVENT_LOOP": "asyncio"}).event_loop == "asyncio"


def test_an_unknown_loop_is_refused_by_name_without_an_unawaited_coroutine(recwarn) -> None:
    with pytest.raises(ValueError, match="EVENT_LOOP must be one of auto, uvloop, asyncio, got 'tokio'"):
        event_loop.run(_loop_type(), "tokio")
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


def test_auto_falls_back_to_asyncio_where_uvloop_is_not_installed(monkeypatch) -> None:
    real_import = builtins.__import__

    def no_uvloop(name: str, *args, **kwargs):
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    assert not issubclass(event_loop.run(_loop_type(), "auto"), uvloop.Loop)
    with pytest.raises(ImportError):
        event_loop.run(_loop_type(), "uvloop")
