"""After Ctrl-C: whether to cancel this run's batches on the server, and doing it.

Interrupting the command alone leaves the batches running (a re-run continues them). Cancelling
stops the server's work: images no worker has claimed are never processed, in-flight ones finish.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import TextIO

import aiohttp

from client.api import Api, ApiError, ServerUnreachable

__all__ = ["cancel_batches", "should_cancel"]


def should_cancel(
    batch_ids: list[str], *, always: bool, stdin: TextIO = sys.stdin, ask: Callable[[str], str] = input
) -> bool:
    """``--cancel-on-interrupt``: yes; on a terminal: ask; otherwise (a script): no."""
    if not batch_ids:
        return False
    if always:
        return True
    if not stdin.isatty():
        return False
    try:
        answer = ask(f"\ncancel batch {', '.join(batch_ids)} on the server too? [y/N] ")
    except (EOFError, KeyboardInterrupt):
        return False
    return answer.strip().lower() in {"y", "yes"}


async def cancel_batches(server: str, credentials: Mapping[str, str]) -> dict[str, str]:
    """Cancel each batch; returns, per batch id, its state afterwards or why it could not be cancelled."""
    outcome: dict[str, str] = {}
    async with aiohttp.ClientSession() as session:
        api = Api(session, server)
        for batch_id, credential in credentials.items():
            try:
                outcome[batch_id] = (await api.cancel_batch(batch_id, credential))["state"]
            except ApiError as exc:
                outcome[batch_id] = f"not cancelled: {exc.message} ({exc.code})"
            except (TimeoutError, ServerUnreachable) as exc:
                outcome[batch_id] = f"not cancelled: {exc}"
    return outcome
