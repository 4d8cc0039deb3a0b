"""Object keys: where a batch's inputs and results live, and which keys are acceptable.

Input  ``s3://<input-bucket>/<batch_id>/<name>``
Output ``s3://<output-bucket>/<batch_id>/<name with the output format's extension>``

Pure functions only; the one error they raise is :class:`KeyRejected`, a
:class:`~photoenhance.contracts.failures.CodedError` with the code ``invalid_key``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote_plus

from photoenhance.contracts.failures import CodedError, FailureCode

__all__ = [
    "BATCH_ID_PATTERN",
    "MANIFEST_NAME",
    "InputKey",
    "KeyRejected",
    "decode_event_key",
    "input_key",
    "is_valid_batch_id",
    "manifest_key",
    "output_key",
    "output_key_by_full_name",
    "parse_input_key",
]

#: A batch id: a letter or digit, then up to 63 letters, digits, dots, underscores or hyphens.
BATCH_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

#: Name of the optional manifest a direct uploader puts beside its images.
MANIFEST_NAME = "_batch.json"

#: Longest key S3 accepts, in UTF-8 bytes.
MAX_KEY_BYTES = 1024

#: File extension written for each output format.
OUTPUT_EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "avif": ".avif"}


class KeyRejected(CodedError, ValueError):
    """An object key the pipeline will not process (``invalid_key``); ``reason`` says why in plain words.

    Still a :class:`ValueError`, as every refusal of a value here is.
    """

    code = FailureCode.INVALID_KEY

    def __init__(self, key: str, reason: str, batch_id: str | None = None) -> None:
        super().__init__(reason)
        self.key = key
        #: The batch the key names, when its first segment is a valid batch id.
        self.batch_id = batch_id

    def __str__(self) -> str:
        # Logs name the refused key: the reason alone does not say which object it was.
        return f"key {self.key!r} rejected: {self.reason}"


@dataclass(frozen=True)
class InputKey:
    """A validated input key split into its batch and the name inside the batch."""

    batch_id: str
    name: str

    @property
    def key(self) -> str:
        """The full object key."""
        return f"{self.batch_id}/{self.name}"

    @property
    def is_manifest(self) -> bool:
        """Whether this is the batch's manifest rather than an image."""
        return self.name == MANIFEST_NAME


def is_valid_batch_id(batch_id: str) -> bool:
    """Whether ``batch_id`` matches :data:`BATCH_ID_PATTERN` in full."""
    return BATCH_ID_PATTERN.fullmatch(batch_id) is not None


def decode_event_key(raw: str) -> str:
    """Decode a key as bucket notifications encode it (``+`` is a space, ``%2B`` a plus).

    Raises :class:`KeyRejected` when the decoded bytes are not UTF-8.
    """
    try:
        return unquote_plus(raw, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise KeyRejected(raw, "the key is not valid UTF-8 after URL-decoding") from exc


def parse_input_key(key: str) -> InputKey:
    """Split an (already decoded) input key into batch id and name, refusing unsafe keys.

    Refused: empty keys, keys without a batch prefix, an invalid batch id, empty segments
    (``a//b``), ``.`` or ``..`` segments (a key that escapes its prefix), control characters,
    and keys longer than S3 allows.
    """
    if not key:
        raise KeyRejected(key, "the key is empty")
    if len(key.encode("utf-8", errors="surrogatepass")) > MAX_KEY_BYTES:
        raise KeyRejected(key, f"the key is longer than {MAX_KEY_BYTES} bytes")
    if any(unicodedata.category(ch) in {"Cc", "Cs"} for ch in key):
        raise KeyRejected(key, "the key contains control characters")
    batch_id, sep, name = key.partition("/")
    if not is_valid_batch_id(batch_id):
        raise KeyRejected(key, f"{batch_id!r} is not a valid batch id (letters, digits, . _ -; 1-64 chars)")
    if not sep or not name:
        raise KeyRejected(key, "the key names no file inside the batch prefix", batch_id)
    segments = name.split("/")
    if any(seg in {"", ".", ".."} for seg in segments):
        raise KeyRejected(key, "the key has empty, '.' or '..' segments and would escape its prefix", batch_id)
    return InputKey(batch_id=batch_id, name=name)


def input_key(batch_id: str, name: str) -> str:
    """The key an input named ``name`` is uploaded to (inside the input bucket)."""
    return f"{batch_id}/{name}"


def manifest_key(batch_id: str) -> str:
    """The key of a batch's optional manifest (inside the input bucket)."""
    return input_key(batch_id, MANIFEST_NAME)


def output_key_by_full_name(batch_id: str, name: str, output_format: str) -> str:
    """The second-choice result key: the input's whole name plus the output extension
    (``a.jpg`` -> ``a.jpg.jpg``), for when another input of the batch holds :func:`output_key`."""
    try:
        ext = OUTPUT_EXTENSIONS[output_format]
    except KeyError:
        raise ValueError(f"unknown output format {output_format!r}") from None
    return f"{batch_id}/{name}{ext}"


def output_key(batch_id: str, name: str, output_format: str) -> str:
    """The result's key: the input's name with the output format's extension.

    ``photo.png`` with JPEG output becomes ``photo.jpg``; a name without an extension gets one.
    ``output_format`` is a resolved format (``"auto"`` is resolved from the input's bytes first,
    :func:`photoenhance.contracts.formats.resolve_output_format`), so ``"auto"`` is refused.
    """
    try:
        ext = OUTPUT_EXTENSIONS[output_format]
    except KeyError:
        raise ValueError(f"unknown output format {output_format!r}") from None
    head, slash, last = name.rpartition("/")
    stem, dot, _old_ext = last.rpartition(".")
    if not dot or not stem:
        stem = last
    return f"{batch_id}/{head}{slash}{stem}{ext}"
