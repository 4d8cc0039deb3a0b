"""The create-batch request, checked at the edge: every refusal is an :class:`ApiError` with a code.

Nothing is created before the whole request has passed, so a refused request leaves no batch, no
declared file and no presigned URL behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ingest.errors import ApiError
from ingest.json_body import parse_json
from ingest.names import NameRefused, assign_names
from photoenhance.contracts.formats import ACCEPTED_CONTENT_TYPES, CONTENT_TYPE_ALIASES
from photoenhance.contracts.options import EnhanceOptions, OptionsError
from photoenhance.settings import Settings

__all__ = ["ACCEPTED_CONTENT_TYPES", "CreateBatch", "DeclaredUpload", "UPLOAD_METHODS", "parse_create_request"]

#: Content types an upload may declare: the formats the engine decodes (one list,
#: photoenhance/contracts/formats.py). SVG and other types a browser would execute or render as a
#: page are never signed for. Common spellings (image/jpg, image/heif) become the registered type.
_CONTENT_TYPE_ALIASES = CONTENT_TYPE_ALIASES

#: How clients may upload: an HTML-form POST policy (the default), which the store checks field by
#: field, or a presigned PUT, only where INGEST_ALLOW_PUT_UPLOADS turns it on. The store binds none
#: of a PUT's headers, so whoever holds the URL could add ``x-amz-copy-source`` (a server-side copy
#: of any object the presigning key can read, e.g. another batch's photo, into their own batch) or
#: ``x-amz-acl: public-read`` (tests/security/test_presigned_uploads.py shows both on Ceph RGW).
UPLOAD_METHODS = ("post", "put")

_TOP_LEVEL_FIELDS = frozenset({"files", "options", "upload", "wait_for_level", "webhook"})
_FILE_FIELDS = frozenset({"name", "size", "content_type"})


@dataclass(frozen=True)
class DeclaredUpload:
    """One file of the request, with the safe name it will be stored under."""

    original_name: str
    name: str
    size: int
    content_type: str


@dataclass(frozen=True)
class CreateBatch:
    """A create-batch request that passed every check."""

    files: list[DeclaredUpload]
    options: EnhanceOptions
    upload: str
    #: The ``webhook`` field as sent (checked by :mod:`ingest.webhook_request`), or None.
    webhook: Any = None
    #: The level asked for (``options.quality``), or ``auto`` when the request named none.
    level: str = "auto"
    #: Accept a level no worker serves now; its images wait for one.
    wait_for_level: bool = False


def parse_create_request(body: bytes, settings: Settings) -> CreateBatch:
    """Parse and check a create-batch body, or raise :class:`ApiError` naming the field."""
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise ApiError(400, "invalid_request", "the request body must be a JSON object")
    unknown = sorted(set(doc) - _TOP_LEVEL_FIELDS)
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s): {', '.join(unknown)}", field=unknown[0])

    raw_options = doc.get("options")
    level = "auto"
    if isinstance(raw_options, dict) and "quality" in raw_options:
        level = raw_options["quality"]
        # ``auto`` (or nothing) is resolved against the fleet when the batch is created.
        raw_options = {k: v for k, v in raw_options.items() if k != "quality" or v != "auto"}
    try:
        options = EnhanceOptions.from_dict(raw_options)
    except OptionsError as exc:
        raise ApiError(400, "invalid_options", str(exc), field="options") from exc
    wait_for_level = doc.get("wait_for_level", False)
    if not isinstance(wait_for_level, bool):
        raise ApiError(400, "invalid_request", "wait_for_level must be true or false", field="wait_for_level")

    upload = doc.get("upload", "post")
    if upload not in UPLOAD_METHODS:
        raise ApiError(400, "invalid_upload_method", f"upload must be one of {', '.join(UPLOAD_METHODS)}", field="upload")
    if upload == "put" and not settings.ingest_allow_put_uploads:
        raise ApiError(
            400,
            "invalid_upload_method",
            "presigned PUT uploads are off on this server (INGEST_ALLOW_PUT_UPLOADS); use the default POST policy",
            field="upload",
        )

    files = doc.get("files")
    if not isinstance(files, list):
        raise ApiError(400, "invalid_request", "files must be a list of {name, size, content_type}", field="files")
    if not files:
        raise ApiError(400, "no_files", "a batch needs at least one file", field="files")
    if len(files) > settings.max_files_per_batch:
        raise ApiError(
            413,
            "too_many_files",
            f"{len(files)} files declared; at most {settings.max_files_per_batch} per batch",
            field="files",
        )
    checked = [_check_file(i, f, settings) for i, f in enumerate(files)]
    try:
        names = assign_names([name for name, _, _ in checked])
    except NameRefused as exc:
        raise ApiError(400, "invalid_name", exc.reason, field=f"files[{exc.index}].name") from exc
    declared = [
        DeclaredUpload(original_name=original, name=safe, size=size, content_type=ctype)
        for (original, size, ctype), safe in zip(checked, names, strict=True)
    ]
    return CreateBatch(
        files=declared, options=options, upload=upload, webhook=doc.get("webhook"),
        level=level if isinstance(level, str) else "auto", wait_for_level=wait_for_level,
    )


def _check_file(index: int, entry: Any, settings: Settings) -> tuple[str, int, str]:
    where = f"files[{index}]"
    if not isinstance(entry, dict):
        raise ApiError(400, "invalid_request", f"{where} must be an object {{name, size, content_type}}", field=where)
    unknown = sorted(set(entry) - _FILE_FIELDS)
    if unknown:
        raise ApiError(400, "unknown_field", f"{where} has unknown field(s): {', '.join(unknown)}", field=f"{where}.{unknown[0]}")
    name = entry.get("name")
    if not isinstance(name, str):
        raise ApiError(400, "invalid_name", f"{where}.name must be a string", field=f"{where}.name")
    size = entry.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ApiError(400, "invalid_size", f"{where}.size must be a whole number of bytes, at least 1", field=f"{where}.size")
    if size > settings.max_file_bytes:
        raise ApiError(
            413,
            "file_too_large",
            f"{where} declares {size} bytes; the most a file may have is {settings.max_file_bytes}",
            field=f"{where}.size",
        )
    return name, size, _content_type(entry.get("content_type"), f"{where}.content_type")


def _content_type(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ApiError(
            400, "unsupported_content_type", f"{where} must be one of {', '.join(ACCEPTED_CONTENT_TYPES)}", field=where
        )
    normal = value.split(";", 1)[0].strip().lower()
    normal = _CONTENT_TYPE_ALIASES.get(normal, normal)
    if normal not in ACCEPTED_CONTENT_TYPES:
        raise ApiError(
            415,
            "unsupported_content_type",
            f"{where} is {value[:100]!r}; accepted: {', '.join(ACCEPTED_CONTENT_TYPES)}",
            field=where,
        )
    return normal
