"""JSON errors with a stable ``code``: one exception type for handlers, one middleware for all.

Every error body is ``{"error": {"code": ..., "message": ..., "field": ...}}``; ``code`` is part
of the API (clients branch on it) and never changes meaning, ``message`` is for people and may,
``field`` (a JSON path like ``files[3].name``) is present when one input field is at fault.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from photoenhance.contracts.progress_stream import BATCH_NOT_FOUND

__all__ = ["ApiError", "BATCH_NOT_FOUND", "RETRY_TOO_SOON", "error_middleware", "error_response", "not_found"]

log = logging.getLogger(__name__)

#: A batch retried again within RETRY_MIN_INTERVAL_S (429, with Retry-After).
RETRY_TOO_SOON = "retry_too_soon"

#: aiohttp's own HTTP errors (no route, wrong method, body too large) mapped to our codes.
_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """An error answered to the client as JSON."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        #: Extra response headers (``Retry-After`` on a 429).
        self.headers = headers or {}


def not_found() -> ApiError:
    """The one answer for an unknown batch *and* for a batch the caller may not read.

    Same status, code and message in both cases, so nothing tells a guessed id from a real one.
    """
    return ApiError(404, BATCH_NOT_FOUND, "no such batch")


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    """The JSON response for an error."""
    body: dict[str, object] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return web.json_response({"error": body}, status=status)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn :class:`ApiError`, aiohttp's HTTP errors and anything unexpected into JSON errors."""
    try:
        return await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message, exc.field)
        response.headers.update(exc.headers)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        response = error_response(exc.status, code, exc.reason)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        if request.writer.output_size > 0:
            # A streamed response that already started cannot become an error page: let the
            # exception through, aiohttp drops the connection, and the client sees a failed
            # download instead of a truncated archive that looks whole.
            raise
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error; see the server log")
