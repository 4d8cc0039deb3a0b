"""Bucket CORS on the input bucket, so the web page may upload straight to the store from a browser.

The page (served by ingest at one origin) POSTs each file to the object store (another origin)
with ``XMLHttpRequest``, to get upload progress events. Listening to upload progress makes the
browser send a CORS preflight, and reading the store's answer needs ``Access-Control-Allow-Origin``:
without a CORS rule on the input bucket every browser upload fails before it starts.

One rule of ours, identified by :data:`CORS_RULE_ID`, allows ``POST`` (presigned POST policies, the
default) and ``PUT`` (presigned PUT, on request) from ``S3_CORS_ORIGINS``; other rules on the
bucket are kept. Allowing any origin (``*``, the default) gives nothing away: every upload still
needs its own signed policy for one key, type and size, which only the ingest API hands out.
Results need no rule: the page shows them with ``<img>`` and links, which are not CORS requests.

Ceph RGW implements ``PutBucketCors``. MinIO answers ``NotImplemented`` and instead applies its
server-wide ``MINIO_API_CORS_ALLOW_ORIGIN`` (default ``*``) to every bucket; that is reported,
not treated as a failure.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.client import BaseClient
from botocore.exceptions import BotoCoreError, ClientError

from photoenhance.s3 import boto_client
from photoenhance.settings import Settings

__all__ = ["CORS_RULE_ID", "CorsSetupError", "configure_upload_cors", "upload_cors_rule"]

log = logging.getLogger(__name__)

#: Id of our CORS rule; rules with other ids belong to someone else and are kept.
CORS_RULE_ID = "photoenhance-browser-uploads"

#: How long a browser may cache a preflight answer, in seconds.
PREFLIGHT_MAX_AGE_S = 3600

#: Outcomes of :func:`configure_upload_cors`.
CREATED, UPDATED, UNCHANGED, SERVER_WIDE = "created", "updated", "unchanged", "server-wide"


class CorsSetupError(RuntimeError):
    """The store refused to read or write the bucket's CORS configuration."""


def upload_cors_rule(origins: tuple[str, ...]) -> dict[str, Any]:
    """Our rule, in the shape boto3 reads and writes."""
    return {
        "ID": CORS_RULE_ID,
        "AllowedOrigins": list(origins),
        "AllowedMethods": ["POST", "PUT"],
        "AllowedHeaders": ["*"],
        "ExposeHeaders": ["ETag"],
        "MaxAgeSeconds": PREFLIGHT_MAX_AGE_S,
    }


def configure_upload_cors(settings: Settings, s3: BaseClient | None = None) -> str:
    """Make the input bucket accept browser uploads from ``S3_CORS_ORIGINS``; idempotent.

    Returns ``created``, ``updated``, ``unchanged``, or ``server-wide`` when the store has no
    per-bucket CORS (MinIO). Raises :class:`CorsSetupError` for anything else.
    """
    s3 = s3 or boto_client(settings, "s3")
    bucket = settings.s3_input_bucket
    if not settings.s3_cors_origins:
        raise CorsSetupError("S3_CORS_ORIGINS is empty: name at least one origin, or * for any")
    wanted = upload_cors_rule(settings.s3_cors_origins)
    try:
        current = _rules(s3, bucket)
    except _NotImplemented:
        return SERVER_WIDE
    ours = [rule for rule in current if rule.get("ID") == CORS_RULE_ID]
    if len(ours) == 1 and _same(ours[0], wanted):
        return UNCHANGED
    others = [rule for rule in current if rule.get("ID") != CORS_RULE_ID]
    try:
        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [*others, wanted]})
    except ClientError as exc:
        if _code(exc) == "NotImplemented":
            return SERVER_WIDE
        raise CorsSetupError(f"cannot set the CORS rules of bucket {bucket!r}: {exc}") from exc
    except BotoCoreError as exc:
        raise CorsSetupError(f"cannot set the CORS rules of bucket {bucket!r}: {exc}") from exc
    log.info("bucket %s accepts browser uploads from %s", bucket, ", ".join(settings.s3_cors_origins))
    return UPDATED if ours else CREATED


class _NotImplemented(Exception):
    pass


def _rules(s3: BaseClient, bucket: str) -> list[dict[str, Any]]:
    try:
        return list(s3.get_bucket_cors(Bucket=bucket).get("CORSRules", []))
    except ClientError as exc:
        if _code(exc) == "NoSuchCORSConfiguration":
            return []
        if _code(exc) == "NotImplemented":
            raise _NotImplemented from exc
        raise CorsSetupError(f"cannot read the CORS rules of bucket {bucket!r}: {exc}") from exc
    except BotoCoreError as exc:
        raise CorsSetupError(f"cannot read the CORS rules of bucket {bucket!r}: {exc}") from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _same(found: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Rules compare by content; stores may return lists in another order."""
    for key, value in wanted.items():
        got = found.get(key)
        if isinstance(value, list):
            if sorted(got or []) != sorted(value):
                return False
        elif got != value:
            return False
    return True
