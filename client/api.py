"""The ingest API seen from the command line: create a batch, read its status.

Every failure is one of two errors: :class:`ServerUnreachable` (nothing answered: down,
restarting, wrong address) or :class:`ApiError` (the server answered with an error and its
stable ``code``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

__all__ = ["Api", "ApiError", "ServerUnreachable"]

#: Seconds one API call may take.
CALL_TIMEOUT_S = 30

#: Images asked for per status page (the API's largest page: fewer round trips).
STATUS_PAGE_SIZE = 500


class ServerUnreachable(Exception):
    """The server did not answer (refused connection, reset, timeout, unknown host)."""


class ApiError(Exception):
    """The server answered with an error: ``status``, ``code`` (stable), ``message``, ``field``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


class Api:
    """Calls to one ingest server."""

    def __init__(self, session: aiohttp.ClientSession, server: str) -> None:
        self.session = session
        self.server = server.rstrip("/")

    async def create_batch(
        self,
        files: list[dict[str, Any]],
        options: dict[str, Any],
        credential: str | None = None,
        webhook: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``POST /api/v1/batches``; ``credential`` is an API key where the server requires one."""
        body: dict[str, Any] = {"files": files, "options": options}
        if webhook is not None:
            body["webhook"] = webhook
        return await self._call("POST", "/api/v1/batches", credential, body)

    async def get_batch(self, batch_id: str, credential: str) -> dict[str, Any]:
        """``GET /api/v1/batches/{id}``: state, counts, every image's state, reason and result link.

        The API answers a page of images at a time; this follows ``next`` until the last page and
        returns the first page's answer holding every image.
        """
        path = f"/api/v1/batches/{quote(batch_id, safe='')}"
        doc = await self._call("GET", f"{path}?limit={STATUS_PAGE_SIZE}", credential)
        images = list(doc.get("images", []))
        cursor = doc.get("next")
        while cursor:
            page = await self._call("GET", f"{path}?{urlencode({'after': cursor, 'limit': STATUS_PAGE_SIZE})}", credential)
            images.extend(page.get("images", []))
            cursor = page.get("next")
        doc["images"] = images
        doc["next"] = None
        return doc

    async def cancel_batch(self, batch_id: str, credential: str) -> dict[str, Any]:
        """``POST /api/v1/batches/{id}/cancel``: unclaimed images are not processed, in-flight ones finish."""
        return await self._call("POST", f"/api/v1/batches/{batch_id}/cancel", credential)

    async def _call(self, method: str, path: str, credential: str | None, body: Any = None) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if credential:
            headers["Authorization"] = f"Bearer {credential}"
        try:
            async with self.session.request(
                method, self.server + path, json=body, headers=headers,
                timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S),
            ) as response:
                try:
                    doc = await response.json(content_type=None)
                except ValueError:
                    doc = None
                if response.status >= 400:
                    error = (doc or {}).get("error", {}) if isinstance(doc, dict) else {}
                    raise ApiError(
                        response.status,
                        error.get("code", "http_error"),
                        error.get("message", f"the server answered HTTP {response.status}"),
                        error.get("field"),
                    )
                if not isinstance(doc, dict):
                    raise ApiError(response.status, "not_json", f"{self.server} did not answer with JSON; is it PhotoEnhance?")
                return doc
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise ServerUnreachable(
                f"cannot reach the PhotoEnhance server at {self.server} ({exc or type(exc).__name__}); "
                "is it running, and is --server right?"
            ) from exc
