"""The ingest API's OpenAPI 3.1 description, served at ``/api/v1/openapi.json``.

Written by hand beside the handlers; tests/ingest/test_openapi.py checks that every route the app
serves is described here and every described route is served, and that examples of real
responses validate against these schemas.
"""

from __future__ import annotations

from typing import Any

from ingest.status_paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from ingest.validation import ACCEPTED_CONTENT_TYPES, UPLOAD_METHODS
from photoenhance.contracts.options import OutputFormat
from photoenhance.settings import Settings

__all__ = ["ERROR_CODES", "openapi_document"]

#: Every ``code`` an error body may carry, with its meaning.
ERROR_CODES: dict[str, str] = {
    "malformed_json": "The body is not JSON, holds an integer of more than 4,300 digits, or nests deeper than 16 levels.",
    "unsupported_media_type": "A JSON endpoint got a body whose Content-Type is not application/json.",
    "invalid_request": "The body or a field has the wrong shape.",
    "unknown_field": "A field the API does not know (typos are refused, not ignored).",
    "no_files": "The batch declares no file.",
    "too_many_files": "More files than MAX_FILES_PER_BATCH.",
    "invalid_size": "A size that is not a whole number of bytes >= 1.",
    "file_too_large": "A file larger than MAX_FILE_BYTES.",
    "invalid_name": "A name that is empty, too long, or holds control characters, slashes, quotes or <>:|?*.",
    "unsupported_content_type": "A content type other than " + ", ".join(ACCEPTED_CONTENT_TYPES) + ".",
    "invalid_options": "Unknown or out-of-range enhancement options.",
    "quality_not_served": "No live worker serves the quality level asked for, nor does FLEET_LEVELS declare it; "
    "the message lists the served levels. Send wait_for_level: true to let the images wait.",
    "invalid_upload_method": "upload is neither post nor put, or put while INGEST_ALLOW_PUT_UPLOADS is off.",
    "api_key_required": "INGEST_REQUIRE_API_KEY is on and no API key was given.",
    "batch_not_found": "No such batch, or the credential may not read it (the two are not told apart).",
    "broker_unavailable": "The message broker could not be reached; try again.",
    "invalid_cursor": "after is not a cursor this API handed out (use the previous page's next).",
    "invalid_limit": "limit is not a whole number from 1 to the largest page size.",
    "retry_too_soon": "The batch was retried less than RETRY_MIN_INTERVAL_S ago; wait Retry-After seconds.",
    "request_too_large": "The request body is too large.",
    "not_found": "No such route.",
    "method_not_allowed": "The route does not take this method.",
    "internal_error": "A fault on our side; details are in the server log.",
    "batch_completed": "The batch has completed; there is nothing left to cancel (409).",
    "batch_cancelled": "The batch was cancelled; it cannot be retried (409).",
    "quota_batches_per_hour": "Over the batches-per-hour limit of this API key or client address (429, see Retry-After).",
    "quota_files_per_day": "Over the files-per-day limit of this API key or client address (429, see Retry-After).",
    "quota_bytes_per_day": "Over the bytes-per-day limit of this API key or client address (429, see Retry-After).",
    "webhooks_disabled": "A webhook was named but this server has no WEBHOOK_SECRETS_KEY.",
    "invalid_webhook_events": "webhook.events lists an unknown event type.",
    "webhook_url_invalid": "The webhook URL is not a URL (or has no host).",
    "webhook_url_too_long": "The webhook URL is longer than 2048 characters.",
    "webhook_url_scheme": "The webhook URL is not https (http only where WEBHOOK_ALLOW_HTTP is on).",
    "webhook_url_credentials": "The webhook URL holds user:password@.",
    "webhook_url_unresolvable": "The webhook host does not resolve.",
    "webhook_url_not_public": "The webhook host resolves to a loopback, private, link-local or otherwise non-public address.",
    "quota_open_batches": "Too many batches of this API key or client address are still open (429, see Retry-After).",
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
    "properties": {name: {"type": "string"} for name in ("self", "archive", "retry", "cancel")},
}

_IMAGE = {
    "type": "object",
    "required": ["name", "original_name", "state"],
    "properties": {
        "name": {"type": "string"},
        "original_name": {"type": "string"},
        "state": {
            "type": "string",
            "enum": ["awaiting_upload", "pending", "waiting_for_worker", "processing", "completed", "failed", "cancelled"],
        },
        "size": {"type": ["integer", "null"]},
        "level": {"type": "string", "description": "The quality level it is queued at"},
        "reason": {"type": ["string", "null"]},
        "code": {"type": ["string", "null"]},
        "result": {
            "type": "object",
            "required": ["key", "url"],
            "properties": {"key": {"type": "string"}, "url": {"type": "string", "format": "uri"}},
        },
    },
}


#: ``GET /api/v1/capabilities`` (built by :mod:`ingest.fleet`).
CAPABILITIES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["levels", "default_level", "default_reason", "upscale", "formats", "limits"],
    "properties": {
        "levels": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["level", "served", "workers", "devices", "seconds_per_megapixel"],
                "properties": {
                    "level": {"type": "string", "enum": ["best", "balanced", "fast"]},
                    "served": {"type": "boolean", "description": "A live worker serves it, or FLEET_LEVELS declares it"},
                    "workers": {"type": "integer", "description": "Live workers serving it"},
                    "declared": {"type": "boolean"},
                    "devices": {"type": "array", "items": {"type": "string"}},
                    "engine_versions": {"type": "array", "items": {"type": "string"}},
                    "seconds_per_megapixel": {
                        "type": ["number", "null"],
                        "description": "Median of the live workers' measured enhancement time per input megapixel",
                    },
                    "why_not": {"type": "string"},
                },
            },
        },
        "default_level": {"type": "string", "description": "What auto chooses now"},
        "default_reason": {"type": "string"},
        "valid_levels": {"type": "array", "items": {"type": "string"}},
        "upscale": {"type": "object", "properties": {"min": {"type": "number"}, "max": {"type": "number"},
                                                     "default": {"type": "number"}}},
        "formats": {"type": "object", "properties": {"input": {"type": "array", "items": {"type": "string"}},
                                                     "output": {"type": "array", "items": {"type": "string"}}}},
        "limits": {"type": "object", "properties": {"max_file_bytes": {"type": "integer"},
                                                    "max_input_pixels": {"type": "integer"},
                                                    "max_files_per_batch": {"type": "integer"}}},
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
        "CancelResponse": {
            "type": "object",
            "required": ["batch_id", "state", "cancelled_now", "counts"],
            "properties": {
                "batch_id": {"type": "string"},
                "state": {
                    "type": "string",
                    "enum": ["cancelling", "cancelled"],
                    "description": "cancelling while images are in flight; batch.cancelled follows the last",
                },
                "cancelled_now": {"type": "integer", "description": "Images this request kept from processing"},
                "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
        },
        "Capabilities": CAPABILITIES_SCHEMA,
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
    paging = [
        {
            "name": "after",
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": "The `next` cursor of the previous page; absent for the first page",
        },
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE},
            "description": "Images per page",
        },
    ]
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
                        **_errors("400", "401", "409", "413", "415"),
                        "429": {
                            **_json_response("Over a quota; retry after `Retry-After` seconds", "Error"),
                            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                        },
                    },
                }
            },
            "/api/v1/capabilities": {
                "get": {
                    "operationId": "getCapabilities",
                    "summary": "Quality levels served now (workers, devices, seconds per megapixel), the default level, "
                    "upscale range, accepted formats and size limits",
                    "responses": {"200": _json_response("What the fleet serves now", "Capabilities")},
                }
            },
            "/api/v1/batches/{batch_id}": {
                "get": {
                    "operationId": "getBatch",
                    "summary": "Counts, state, and one page of images (by name) with presigned result links",
                    "description": "Images come in pages of `limit`, ordered by name; follow `next` (as `after`) "
                    "until it is null. Counts always cover the whole batch.",
                    "security": [{"bearer": []}],
                    "parameters": [batch_id, *paging],
                    "responses": {"200": _json_response("The batch", "BatchStatus"), **_errors("400", "404")},
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
                    "responses": {
                        "202": _json_response("Retried", "RetryResponse"),
                        **_errors("404", "409", "415", "429", "503"),
                    },
                }
            },
            "/api/v1/batches/{batch_id}/cancel": {
                "post": {
                    "operationId": "cancelBatch",
                    "summary": "Cancel: unclaimed images are not processed, in-flight ones finish, later uploads are ignored",
                    "security": [{"bearer": []}],
                    "parameters": [batch_id],
                    "responses": {"202": _json_response("Cancelled", "CancelResponse"), **_errors("404", "409", "503")},
                }
            },
            "/api/v1/batches/{batch_id}/deliveries": {
                "get": {
                    "operationId": "getDeliveries",
                    "summary": "The batch's webhook and each event's delivery: retrying, delivered, dead or gone; "
                               "webhook_refused: why a direct batch's _batch.json webhook was refused",
                    "security": [{"bearer": []}],
                    "parameters": [batch_id],
                    "responses": {
                        "200": {"description": "Deliveries", "content": {"application/json": {}}},
                        **_errors("404"),
                    },
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
                "description": "Enhancement options (quality, upscale, fidelity, only_center_face, output_format, "
                "output_quality, tile, keep_gps)",
                "properties": {
                    "output_format": {
                        "type": "string",
                        "enum": [f.value for f in OutputFormat] + ["jpg"],
                        "default": OutputFormat.AUTO.value,
                        "description": "auto: JPEG, PNG and WebP inputs keep their format, HEIC and AVIF become JPEG",
                    },
                    "keep_gps": {
                        "type": "boolean",
                        "default": False,
                        "description": "keep the EXIF GPS position in results (removed by default)",
                    },
                },
            },
            "upload": {"type": "string", "enum": list(UPLOAD_METHODS), "default": "post"},
            "webhook": {
                "type": "object",
                "required": ["url"],
                "additionalProperties": False,
                "description": "POST each progress event here, signed per Standard Webhooks",
                "properties": {
                    "url": {"type": "string", "maxLength": 2048, "description": "https, public addresses only"},
                    "events": {
                        "type": "array",
                        "items": {
                            "type": "string",
                            "enum": ["image.completed", "image.failed", "batch.completed", "batch.cancelled"],
                        },
                    },
                },
            },
            "wait_for_level": {
                "type": "boolean",
                "default": False,
                "description": "Accept a quality level no worker serves now (else 409 quality_not_served); "
                "the images wait for a worker of it",
            },
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
            "level": {
                "type": "object",
                "description": "The quality level the batch runs at and why (auto: the best served at creation)",
                "properties": {"chosen": {"type": "string"}, "reason": {"type": "string"}},
            },
            "expires_at": {"type": "string", "format": "date-time", "description": "When the uploads stop working"},
            "uploads": {"type": "array", "items": {"$ref": "#/components/schemas/Upload"}},
            "progress": {"$ref": "#/components/schemas/Progress"},
            "links": {"$ref": "#/components/schemas/Links"},
            "webhook": {
                "type": "object",
                "description": "Present when a webhook was named; the signing secret is shown only here",
                "properties": {"url": {"type": "string"}, "events": {"type": "array"}, "secret": {"type": "string"}},
            },
        },
    }


def _status() -> dict[str, Any]:
    counts = ["expected", "uploaded", "awaiting_upload", "waiting_for_worker", "pending", "completed", "failed", "cancelled"]
    return {
        "type": "object",
        "required": ["batch_id", "state", "counts", "images", "next", "progress", "links"],
        "properties": {
            "batch_id": {"type": "string"},
            "state": {"type": "string", "enum": ["open", "completed", "cancelling", "cancelled"]},
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
            "images": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Image"},
                "description": "One page of the batch's images, by name",
            },
            "next": {
                "type": ["string", "null"],
                "description": "Cursor of the next page (pass it as `after`); null on the last page",
            },
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
