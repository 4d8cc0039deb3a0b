"""What the webhook tests share: a real aiohttp receiver, the stack's webhook settings, and a stack
with a running ``photoenhance webhooks`` sender."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from harness.processor import free_port
from harness.stack import ServiceProcess, Stack, StartStack

WEBHOOK_SETTINGS: dict[str, Any] = dict(
    webhook_secrets_key="test-secrets-key-for-sealing",
    webhook_allow_http=True,  # the receiver below speaks plain HTTP on loopback
    webhook_allow_private=("127.0.0.0/8",),
    webhook_retry_base_s=0.2,
    webhook_retry_max_delay_s=2.0,
    webhook_retry_max_s=600,
    webhook_timeout_s=5.0,
)


@dataclass
class Receiver:
    """An aiohttp server recording every delivery (headers, body), answering ``status``."""

    port: int
    status: int = 204
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        async def hook(request: web.Request) -> web.Response:
            self.received.append((dict(request.headers), await request.read()))
            return web.Response(status=self.status)

        app = web.Application()
        app.router.add_post("/hook", hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def verified(self, secret: str, batch_id: str | None = None) -> dict[str, dict[str, Any]]:
        """webhook-id -> event, each delivery's signature checked by the standardwebhooks library
        (only the deliveries of ``batch_id`` when given)."""
        check = Webhook(secret)
        events = {}
        for headers, body in self.received:
            if batch_id is None or json.loads(body)["batch_id"] == batch_id:
                events[headers["webhook-id"]] = check.verify(body, headers)
        return events


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(free_port())
    yield r
    await r.stop()


async def stack_with_sender(start_stack: StartStack, tmp_path: Path, **changes: Any) -> tuple[Stack, ServiceProcess]:
    """A stack with :data:`WEBHOOK_SETTINGS` (and ``changes``) and a running webhook sender."""
    stack = await start_stack(**{**WEBHOOK_SETTINGS, **changes})
    port = free_port()
    sender = ServiceProcess("webhooks", stack.settings.replace(webhooks_port=port), port, tmp_path / "webhooks.log")
    await asyncio.to_thread(sender.start)
    return stack, sender


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, logs: Callable[[], str]
) -> None:
    """Poll ``check`` until true; on timeout fail with ``what`` and the logs."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{logs()}"
        await asyncio.sleep(0.1)
