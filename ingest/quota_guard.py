"""The HTTP edge of quotas: the plan of a creation request, and a refusal answered as 429."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from aiohttp import web

from db.quotas import QuotaExceeded
from ingest.auth import bearer
from ingest.errors import ApiError
from ingest.quotas import request_plan
from photoenhance.contracts.tokens import is_api_key
from photoenhance.ratelimit import QuotaPlan
from photoenhance.settings import Settings

__all__ = ["charged", "creation_quota", "creator_api_key"]

T = TypeVar("T")


def creator_api_key(request: web.Request, settings: Settings) -> str | None:
    """The request's API key, when it carries a valid one."""
    credential = bearer(request)
    return credential if is_api_key(credential, settings.api_keys) else None


def creation_quota(request: web.Request, settings: Settings, *, files: int, total_bytes: int) -> QuotaPlan:
    """What creating this batch costs, and whose limits it counts against."""
    api_key = creator_api_key(request, settings)
    return request_plan(
        settings,
        api_key=api_key,
        peer=request.remote,
        forwarded_for=request.headers.getall("X-Forwarded-For", []),
        files=files,
        total_bytes=total_bytes,
    )


async def charged(creation: Awaitable[T]) -> T:
    """Await a quota-charged creation; over a limit: 429 with ``Retry-After`` and the limit's code."""
    try:
        return await creation
    except QuotaExceeded as exc:
        raise ApiError(429, exc.code, exc.message, headers={"Retry-After": str(exc.retry_after_s)}) from exc
