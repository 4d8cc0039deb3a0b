"""Who may do what: batch tokens for one batch, API keys for any batch and for creating batches.

Every refusal to read a batch (unknown id, malformed id, missing token, wrong token, another
batch's token) raises the same :func:`~ingest.errors.not_found`, so a caller learns nothing about
batches it cannot read.
"""

from __future__ import annotations

from aiohttp import web

from db.records import BatchRecord
from db.repository import Repository
from ingest.errors import ApiError, not_found
from photoenhance.contracts.keys import is_valid_batch_id
from photoenhance.contracts.tokens import bearer_credential, is_api_key, may_open
from photoenhance.settings import Settings

__all__ = ["bearer", "readable_batch", "require_creator"]

def bearer(request: web.Request, *, query_allowed: bool = False) -> str | None:
    """The credential in ``Authorization: Bearer ...``, else (where allowed) in ``?token=``.

    The query form exists for links a browser opens itself, like the ZIP download: an ``<a href>``
    cannot carry an Authorization header. It is accepted only on such routes, because URLs end up
    in logs and histories; JSON endpoints are called from code, which can set the header.
    """
    credential = bearer_credential(request.headers.get("Authorization"))
    if credential is not None:
        return credential
    if query_allowed:
        return request.query.get("token") or None
    return None


async def readable_batch(
    request: web.Request, repository: Repository, settings: Settings, *, query_allowed: bool = False
) -> BatchRecord:
    """The batch named in the path, if the request's credential may read it; else 404."""
    batch_id = request.match_info["batch_id"]
    credential = bearer(request, query_allowed=query_allowed)
    if not is_valid_batch_id(batch_id):
        raise not_found()
    # The same query and record building whether or not the batch exists (db/access_lookup.py), and
    # the same hash comparison (may_open): timing does not tell an unknown id from a wrong token.
    batch = await repository.batch_for_access(batch_id)
    token_hash = batch.token_hash if batch is not None else None
    allowed = may_open(credential, token_hash, settings.api_keys, exists=batch is not None)
    if batch is None or not allowed:
        raise not_found()
    return batch


def require_creator(request: web.Request, settings: Settings) -> None:
    """Refuse batch creation without an API key when ``INGEST_REQUIRE_API_KEY`` is on."""
    if settings.ingest_require_api_key and not is_api_key(bearer(request), settings.api_keys):
        raise ApiError(401, "api_key_required", "creating a batch needs an API key (Authorization: Bearer <key>)")
