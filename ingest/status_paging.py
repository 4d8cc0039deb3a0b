"""Paging of ``GET /api/v1/batches/{id}``: the ``after`` cursor and the ``limit`` parameter.

A cursor is the last name of the previous page, base64url-encoded so that clients treat it as
opaque (and any name travels safely in a query string). Pure functions; the handler reads the page.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from ingest.errors import ApiError

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "decode_cursor", "encode_cursor", "page_request"]

#: Images per status page when the client does not say.
DEFAULT_PAGE_SIZE = 100

#: Most images one status page may hold (each costs a signed link and ~600 bytes of JSON).
MAX_PAGE_SIZE = 500

#: Longest cursor accepted, in characters (a name is at most 1,024 bytes of key).
_MAX_CURSOR_CHARS = 1400


def encode_cursor(name: str) -> str:
    """The cursor that continues after ``name``."""
    return base64.urlsafe_b64encode(name.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The name a cursor continues after; 400 ``invalid_cursor`` when it is not one of ours."""
    if len(cursor) > _MAX_CURSOR_CHARS or not cursor.isascii():
        raise ApiError(400, "invalid_cursor", "after is not a cursor this API handed out", field="after")
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, "invalid_cursor", "after is not a cursor this API handed out", field="after") from exc


def page_request(query: Mapping[str, str]) -> tuple[str | None, int]:
    """(name to continue after or None, page size) from a status request's query."""
    raw_limit = query.get("limit")
    limit = DEFAULT_PAGE_SIZE
    if raw_limit is not None:
        digits = raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 6
        if not digits or not 1 <= int(raw_limit) <= MAX_PAGE_SIZE:
            raise ApiError(400, "invalid_limit", f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}", field="limit")
        limit = int(raw_limit)
    after = query.get("after")
    return (decode_cursor(after) if after else None), limit
