"""The optional batch manifest ``<batch_id>/_batch.json`` a direct S3 uploader puts beside its images.

Format (every field optional, nothing else allowed)::

    {"expected_count": 30, "options": {"quality": "fast", "upscale": 2},
     "webhook": {"url": "https://...", "events": ["batch.completed"], "secret": "whsec_..."}}

``expected_count`` makes the batch complete once that many images are final; ``options`` are the
batch's :class:`~photoenhance.contracts.options.EnhanceOptions` (object user metadata still
overrides them per image). ``webhook`` is kept as written here and checked when the batch uses it
(:mod:`processor.manifest_webhook`: the checks need the settings and DNS); a refused webhook
leaves the rest of the manifest in force. Upload it before the images: images processed before it arrives keep
the options they were processed with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from photoenhance.contracts.options import EnhanceOptions, OptionsError

__all__ = ["MAX_MANIFEST_BYTES", "Manifest", "ManifestError", "parse_manifest"]

#: Largest manifest read; a bigger one is refused unread.
MAX_MANIFEST_BYTES = 64 * 1024

_FIELDS = {"expected_count", "options", "webhook"}


class ManifestError(ValueError):
    """A manifest that cannot be used; the message says why."""


@dataclass(frozen=True)
class Manifest:
    """What a manifest says about its batch."""

    expected_count: int | None = None
    #: Options as JSON-ready values (``EnhanceOptions.to_dict``), or None when it names none.
    options: dict[str, Any] | None = None
    #: The ``webhook`` object as written (unchecked), or None when it names none.
    webhook: Any = None


def parse_manifest(data: bytes) -> Manifest:
    """Read a manifest's bytes, or raise :class:`ManifestError`."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"the manifest is {len(data)} bytes, more than {MAX_MANIFEST_BYTES}")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"the manifest is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise ManifestError("the manifest nests too deep") from exc
    except ValueError as exc:  # an integer too long to convert (sys.get_int_max_str_digits)
        raise ManifestError(f"the manifest holds a number that is too long: {exc}") from exc
    if not isinstance(doc, dict):
        raise ManifestError(f"the manifest is a JSON {type(doc).__name__}, not an object")
    unknown = sorted(set(doc) - _FIELDS)
    if unknown:
        raise ManifestError(f"unknown manifest field(s): {', '.join(unknown)}")
    count = doc.get("expected_count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise ManifestError(f"expected_count must be a non-negative integer, got {count!r}")
    options = doc.get("options")
    if options is not None:
        try:
            options = EnhanceOptions.from_dict(options).to_dict()
        except OptionsError as exc:
            raise ManifestError(f"the manifest's options are unusable: {exc}") from exc
    return Manifest(expected_count=count, options=options, webhook=doc.get("webhook"))
