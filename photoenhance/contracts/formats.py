"""The image formats the pipeline accepts and writes: one list the API, the page, the CLI, the
worker and a capabilities answer all read, and the rule that turns ``output_format: auto`` into a
real format.

Pure data and functions only.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ACCEPTED_CONTENT_TYPES",
    "CONTENT_TYPE_ALIASES",
    "INPUT_FORMATS",
    "InputFormat",
    "OUTPUT_CONTENT_TYPES",
    "content_type_of",
    "format_of_content_type",
    "format_suggested_by_name",
    "resolve_output_format",
]


@dataclass(frozen=True)
class InputFormat:
    """A format the worker decodes."""

    #: The name :func:`photoenhance.formats.sniff_format` returns.
    name: str
    #: The registered content type an upload declares.
    content_type: str
    #: File name extensions people use for it (for pickers and the CLI's messages, never trusted).
    extensions: tuple[str, ...]
    #: Shown to people.
    label: str


#: Every accepted input format, in the order they are listed to people.
INPUT_FORMATS: tuple[InputFormat, ...] = (
    InputFormat("jpeg", "image/jpeg", (".jpg", ".jpeg"), "JPEG"),
    InputFormat("png", "image/png", (".png",), "PNG"),
    InputFormat("webp", "image/webp", (".webp",), "WebP"),
    InputFormat("heic", "image/heic", (".heic", ".heif", ".hif"), "HEIC"),
    InputFormat("avif", "image/avif", (".avif",), "AVIF"),
)

#: Content types an upload may declare.
ACCEPTED_CONTENT_TYPES: tuple[str, ...] = tuple(f.content_type for f in INPUT_FORMATS)

#: Common spellings normalised to the registered type.
CONTENT_TYPE_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/heif": "image/heic",
    "image/heic-sequence": "image/heic",
    "image/heif-sequence": "image/heic",
}

#: Content type and extension of each output format.
OUTPUT_CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "avif": "image/avif"}

#: Output format ``auto`` keeps these inputs' own format; the others (HEIC, AVIF) become JPEG,
#: which every viewer opens (ask for ``avif`` explicitly to keep AVIF).
_AUTO_KEEPS = frozenset({"jpeg", "png", "webp"})


def content_type_of(input_format: str) -> str:
    """The content type of an input format name (``"heic"`` -> ``"image/heic"``)."""
    for fmt in INPUT_FORMATS:
        if fmt.name == input_format:
            return fmt.content_type
    raise ValueError(f"unknown input format {input_format!r}")


def format_suggested_by_name(name: str) -> str | None:
    """The input format a file name's extension suggests, None when it suggests none. Never a
    verdict (the bytes decide): only a guess made before the bytes are read, checked after."""
    lowered = name.lower()
    for fmt in INPUT_FORMATS:
        if lowered.endswith(fmt.extensions):
            return fmt.name
    return None


def format_of_content_type(content_type: str) -> str | None:
    """The input format name of a (possibly aliased) content type, None when not accepted."""
    normal = content_type.split(";", 1)[0].strip().lower()
    normal = CONTENT_TYPE_ALIASES.get(normal, normal)
    for fmt in INPUT_FORMATS:
        if fmt.content_type == normal:
            return fmt.name
    return None


def resolve_output_format(requested: str, source_format: str | None) -> str:
    """The format a result is written in: ``requested`` unless it is ``"auto"``, which keeps JPEG,
    PNG and WebP inputs in their format and turns HEIC, AVIF (and an unknown source) into JPEG."""
    if requested != "auto":
        return requested
    return source_format if source_format in _AUTO_KEEPS else "jpeg"
