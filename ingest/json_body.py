"""Request bodies of the JSON endpoints: the content type checked, the JSON parsed within bounds.

Two attacks this closes:

- **Cross-site requests.** A page on another origin may send a "simple" request (no CORS
  preflight) with ``Content-Type: text/plain``; if the API parsed it anyway, every visitor of
  that page would create batches. Anything but ``application/json`` answers 415.
- **Parser abuse.** An integer of more than 4,300 digits (Python refuses to convert it) or arrays
  nested tens of thousands deep (the parser recurses) raised errors that ended as 500s with a
  traceback. They answer 400 ``malformed_json`` now, and nesting is bounded well below what the
  parser can handle.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ingest.errors import ApiError

__all__ = ["JSON_CONTENT_TYPE", "MAX_JSON_DEPTH", "json_body", "parse_json", "require_json_content_type"]

#: The only content type JSON endpoints accept (parameters such as ``charset=utf-8`` aside).
JSON_CONTENT_TYPE = "application/json"

#: Deepest nesting of arrays and objects accepted in a request body (ours need 3).
MAX_JSON_DEPTH = 16


def require_json_content_type(request: web.Request, *, body_optional: bool = False) -> None:
    """415 ``unsupported_media_type`` unless the request says its body is ``application/json``.

    ``body_optional``: a request with no body at all (no ``Content-Length`` or 0, not chunked) passes.
    """
    if body_optional and not request.body_exists:
        return
    if request.content_type != JSON_CONTENT_TYPE:
        sent = request.headers.get("Content-Type", "")[:100] or "none"
        raise ApiError(415, "unsupported_media_type", f"the request body must be {JSON_CONTENT_TYPE} (got {sent!r})")


async def json_body(request: web.Request) -> Any:
    """The request's JSON body, after :func:`require_json_content_type`; 400 when it is not JSON."""
    require_json_content_type(request)
    return parse_json(await request.read())


def parse_json(body: bytes) -> Any:
    """Parse ``body`` as JSON, or raise :class:`ApiError` 400 ``malformed_json`` saying why."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"the request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise ApiError(400, "malformed_json", f"the request body nests deeper than {MAX_JSON_DEPTH} levels") from exc
    except ValueError as exc:  # an integer too long to convert (sys.get_int_max_str_digits)
        raise ApiError(400, "malformed_json", f"the request body holds a number that is too long: {exc}") from exc
    if _depth(doc) > MAX_JSON_DEPTH:
        raise ApiError(400, "malformed_json", f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
    return doc


def _depth(doc: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (a scalar is 0, ``[]`` is 1)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        depth += 1
        if depth > MAX_JSON_DEPTH:
            return depth
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest
