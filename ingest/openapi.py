"""The ingest API's OpenAPI 3.1 description, served at ``/api/v1/openapi.json``.

Written by hand beside the handlers; tests/ingest/test_openapi.py checks that every route the app
serves is described here and every described route is served, and that examples of real
responses validate against these schemas.
"""

from __future__ import annotations

from typing import Any

from ingest.validation import ACCEPTED_CONTENT_TYPES, UPLOAD_METHODS
from photoenhance.settings import Settings

__all__ = ["ERROR_CODES", "openapi_document"]

#: Every ``code`` an error body may carry, with its meaning.
ERROR_CODES: dict[str, str] = {
    "malformed_json": "The body is not JSON.",
    "invalid_request": "The body or a field has the wrong shape.",
    "unknown_field": "A field the API does not know (typos are refused, not ignored).",
    "no_files": "The batch declares no file.",
    "too_many_files": "More files than MAX_FILES_PER_BATCH.",
    "invalid_size": "A size that is not a whole number of bytes >= 1.",
    "file_too_large": "A file larger than MAX_FILE_BYTES.",
    "invalid_name": "A name that is empty, too long, or holds control characters, slashes, quotes or <>:|?*.",
    "unsupported_content_type": "A content type other than " + ", ".join(ACCEPTED_CONTENT_TYPES) + ".",
    "invalid_options": "Unknown or out-of-range enhancement options.",
    "invalid_upload_method": "upload is neither post nor put, or put while INGEST_ALLOW_PUT_UPLOADS is off.",
    "api_key_required": "INGEST_REQUIRE_API_KEY is on and no API key was given.",
    "batch_not_found": "No such batch, or the credential may not read it (the two are not told apart).",
    "broker_unavailable": "The message broker could not be reached; try again.",
    "retry_too_soon": "The batch was retried less than RETRY_MIN_INTERVAL_S ago; wait Retry-After seconds.",
    "request_too_large": "The request body is too large.",
    "not_found": "No such route.",
    "method_not_allowed": "The route does not take this method.",
    "internal_error": "A fault on our side; details are in the server log.",
}

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "enum": sorted(ERROR_CODES)},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "JSON path of the field at fault, e.g. files[3].name"},
            },
        }
    },
}

_UPLOAD = {
    "type": "object",
    "required": ["name", "original_name", "size", "content_type", "method", "url", "key"],
    "properties": {
        "name": {"type": "string", "description": "Safe, unique name in the batch"},
        "original_name": {"type": "string"},
        "size": {"type": "integer", "minimum": 1},
        "content_type": {"type": "string", "enum": list(ACCEPTED_CONTENT_TYPES)},
        "method": {"type": "string", "enum": ["POST", "PUT"]},
        "url": {"type": "string", "format": "uri"},
        "key": {"type": "string", "description": "<batch_id>/<name>: the exact object key"},
        "fields": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "POST: form fields to send before the file field (named `file`)",
        },
        "headers": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "PUT (only where the server allows it): headers to send",
        },
    },
}

_PROGRESS = {
    "type": "object",
    "required": ["websocket", "events"],
    "properties": {
        "websocket": {"type": "string", "description": "Notifier WebSocket URL; add ?token=<token>"},
        "events": {"type": "string", "description": "Notifier Server-Sent Events URL; add ?token=<token>"},
    },
}

_LINKS = {
    "type": "object",
    "required": ["self", "archive", "retry"],
    "properties": {name: {"type": "string"} for name in ("self", "archive", "retry")},
}

_IMAGE = {
    "type": "object",
    "required": ["name", "original_name", "state"],
    "properties": {
        "name": {"type": "string"},
        "original_name": {"type": "string"},
        "state": {
            "type": "string",
            "enum": ["awaiting_upload", "pending", "processing", "completed", "failed"],
        },
        "size": {"type": ["integer", "null"]},
        "reason": {"type": ["string", "null"]},
        "code": {"type": ["string", "null"]},
        "result": {
            "type": "object",
            "required": ["key", "url"],
            "properties": {"key": {"type": "string"}, "url": {"type": "string", "format": "uri"}},
        },
    },
}


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The description, with the limits in force filled in."""
    schemas = {
        "Error": _ERROR,
        "Upload": _UPLOAD,
        "Progress": _PROGRESS,
        "Links": _LINKS,
        "Image": _IMAGE,
        "CreateBatchRequest": _create_request(settings),
        "CreateBatchResponse": _create_response(),
        "BatchStatus": _status(),
        "RetryResponse": {
            "type": "object",
            "required": ["batch_id", "retried", "announced"],
            "properties": {
                "batch_id": {"type": "string"},
                "retried": {"type": "integer", "description": "Failed images put back to pending"},
                "announced": {"type": "integer", "description": "Pending images announced to the processors"},
                "skipped": {
                    "type": "object",
                    "description": "Failed images left failed because a retry cannot help them, by failure code",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["count", "reason"],
                        "properties": {"count": {"type": "integer"}, "reason": {"type": "string"}},
                    },
                },
            },
        },
    }
    batch_id = {"name": "batch_id", "in": "path", "required": True, "schema": {"type": "string"}}
    token_query = {
        "name": "token",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "The batch token, for links a browser opens itself (an <a href> sends no header)",
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "PhotoEnhance ingest API",
            "version": "1",
            "description": (
                "Start a batch, upload straight to the object store with the presigned requests it "
                "returns, follow progress on the notifier, then fetch results one by one or as a ZIP. "
                "Authenticate with `Authorization: Bearer <batch token or API key>`. A batch the "
                "credential may not read answers exactly like an unknown batch (404 batch_not_found)."
            ),
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/api/v1/batches": {
                "post": {
                    "operationId": "createBatch",
                    "summary": "Declare the files of a new batch and get one presigned upload per file",
                    "requestBody": _json_body("CreateBatchRequest"),
                    "responses": {
                        "201": _json_response("Batch created; the token is shown only here", "CreateBatchResponse"),
                        **_errors("400", "401", "413", "415"),
                    },
                }
            },
            "/api/v1/batches/{batch_id}": {
                "get": {
                    "operationId": "getBatch",
                    "summary": "Counts, state, each image's state and presigned result links",
                    "security": [{"bearer": []}],
                    "parameters": [batch_id],
                    "responses": {"200": _json_response("The batch", "BatchStatus"), **_errors("404")},
                }
            },
            "/api/v1/batches/{batch_id}/archive": {
                "get": {
                    "operationId": "getArchive",
                    "summary": "The completed results as a streamed ZIP (stored entries); FAILURES.txt lists what is missing",
                    "security": [{"bearer": []}],
                    "parameters": [batch_id, token_query],
                    "responses": {
                        "200": {
                            "description": "A ZIP archive",
                            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
                        },
                        **_errors("404"),
                    },
                }
            },
            "/api/v1/batches/{batch_id}/retry": {
                "post": {
                    "operationId": "retryBatch",
                    "summary": "Re-run the batch's failed images (and re-announce pending ones)",
                    "security": [{"bearer": []}],
                    "parameters": [batch_id],
                    "responses": {"202": _json_response("Retried", "RetryResponse"), **_errors("404", "429", "503")},
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "This description",
                    "responses": {"200": {"description": "OpenAPI document", "content": {"application/json": {}}}},
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "200 when the database answers, else 503",
                    "responses": {
                        "200": {"description": "Healthy", "content": {"application/json": {}}},
                        "503": {"description": "The database does not answer", "content": {"application/json": {}}},
                    },
                }
            },
        },
    }


def _create_request(settings: Settings) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["files"],
        "additionalProperties": False,
        "properties": {
            "files": {
                "type": "array",
                "minItems": 1,
                "maxItems": settings.max_files_per_batch,
                "items": {
                    "type": "object",
                    "required": ["name", "size", "content_type"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "maxLength": 255},
                        "size": {"type": "integer", "minimum": 1, "maximum": settings.max_file_bytes},
                        "content_type": {"type": "string", "enum": list(ACCEPTED_CONTENT_TYPES)},
                    },
                },
            },
            "options": {
                "type": "object",
                "description": "Enhancement options (quality, upscale, fidelity, only_center_face, output_format, output_quality, tile)",
            },
            "upload": {"type": "string", "enum": list(UPLOAD_METHODS), "default": "post"},
        },
    }


def _create_response() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["batch_id", "token", "state", "expected_count", "options", "expires_at", "uploads", "progress", "links"],
        "properties": {
            "batch_id": {"type": "string", "description": "A ULID"},
            "token": {"type": "string", "description": "Bearer token for this batch; stored only as a hash"},
            "state": {"type": "string", "enum": ["open"]},
            "expected_count": {"type": "integer"},
            "options": {"type": "object"},
            "expires_at": {"type": "string", "format": "date-time", "description": "When the uploads stop working"},
            "uploads": {"type": "array", "items": {"$ref": "#/components/schemas/Upload"}},
            "progress": {"$ref": "#/components/schemas/Progress"},
            "links": {"$ref": "#/components/schemas/Links"},
        },
    }


def _status() -> dict[str, Any]:
    counts = ["expected", "uploaded", "awaiting_upload", "pending", "completed", "failed"]
    return {
        "type": "object",
        "required": ["batch_id", "state", "counts", "images", "progress", "links"],
        "properties": {
            "batch_id": {"type": "string"},
            "state": {"type": "string", "enum": ["open", "completed"]},
            "source": {"type": "string"},
            "options": {"type": "object"},
            "counts": {
                "type": "object",
                "required": counts,
                "properties": {name: {"type": ["integer", "null"]} for name in counts},
            },
            "created_at": {"type": "string", "format": "date-time"},
            "completed_at": {"type": ["string", "null"], "format": "date-time"},
            "last_seq": {"type": "integer"},
            "images": {"type": "array", "items": {"$ref": "#/components/schemas/Image"}},
            "progress": {"$ref": "#/components/schemas/Progress"},
            "links": {"$ref": "#/components/schemas/Links"},
        },
    }


def _json_body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _json_response(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _errors(*statuses: str) -> dict[str, Any]:
    return {status: _json_response("Error", "Error") for status in statuses}
