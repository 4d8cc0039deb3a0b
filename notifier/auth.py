"""Who may subscribe to which batch, decided before any stream starts.

Every reason to refuse (unknown or malformed batch id, missing or wrong token, another batch's
token, a malformed ``since``, a ``since`` beyond the batch's last event) gets the one answer an
unknown batch gets, so a caller learns nothing about batches it cannot read.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from db.records import BatchRecord
from db.repository import Repository
from photoenhance.contracts.keys import is_valid_batch_id
from photoenhance.contracts.progress_stream import BATCH_NOT_FOUND
from photoenhance.contracts.tokens import bearer_credential, may_open

__all__ = ["Refused", "authorize", "presented_token", "refusal"]

#: Longest ``since`` accepted, in digits (sequence numbers are 32-bit in the database).
MAX_SINCE_DIGITS = 10


class Refused(Exception):
    """The subscription is not allowed; answer with :func:`refusal`."""


def presented_token(request: web.Request) -> str | None:
    """The batch token or API key the request carries.

    ``Authorization: Bearer <token>`` first, else the ``token`` query parameter: a browser's
    ``WebSocket`` and ``EventSource`` constructors cannot set request headers, so the query string
    is the only way they can present a token.
    """
    return bearer_credential(request.headers.get("Authorization")) or request.query.get("token") or None


def parse_since(raw: str | None) -> int | None:
    """A ``since`` value: None when absent, else a non-negative decimal integer."""
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_SINCE_DIGITS:
        raise Refused("malformed since")
    return int(raw)


async def authorize(
    repository: Repository,
    api_keys: Iterable[str],
    batch_id: str,
    token: str | None,
    since_raw: str | None,
) -> tuple[BatchRecord, int | None]:
    """The batch and the client's position, or :class:`Refused` for any bad input."""
    # Same work for an unknown batch as for a known one (db/access_lookup.py, may_open): timing tells nothing.
    batch = await repository.batch_for_access(batch_id) if is_valid_batch_id(batch_id) else None
    token_hash = batch.token_hash if batch is not None else None
    allowed = may_open(token, token_hash, api_keys, exists=batch is not None)
    if batch is None or not allowed:
        raise Refused("unknown batch or no access")
    since = parse_since(since_raw)
    # A position past the log's end cannot come from this batch's stream; replaying "nothing"
    # from there would silently skip the events in between.
    if since is not None and since > batch.last_seq:
        raise Refused("since beyond the last event")
    return batch, since


def refusal() -> web.Response:
    """The answer to every refused subscription: exactly what an unknown batch gets."""
    return web.json_response(
        {"code": BATCH_NOT_FOUND, "message": "No such batch, or no access to it."},
        status=404,
        headers={"Cache-Control": "no-store", "Access-Control-Allow-Origin": "*"},
    )
