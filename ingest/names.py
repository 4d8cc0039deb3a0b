"""File names: which names a batch may declare, the safe keys they become, and download names.

Pure functions. Two layers, on purpose:

1. **Refused** (the API answers 4xx ``invalid_name`` and creates nothing): names that are never a
   plain file name from someone's disk, or that only make sense as an attack. Empty or blank
   names; more than :data:`MAX_NAME_CHARS` characters; control characters, bidirectional
   overrides and line separators (which disguise an extension or break logs and headers); path
   separators and ``.``/``..`` (a name is one file, never a path); quotes of any ASCII kind
   and the other characters Windows forbids (``<>:|?*``), which break shell, HTML, header
   and archive contexts and cannot be extracted on Windows anyway.
2. **Made safe** (accepted names): the key is NFC-normalised, keeps letters, digits and marks of
   any script plus ``. - _``, turns everything else into ``_`` (including the invisible ones:
   format characters, fillers such as U+3164 that count as letters, combining joiners and
   variation selectors: see :func:`is_invisible`, so ``a\u034fb`` cannot pose as ``ab``), never starts with a dot, a dash
   or an underscore (hidden files, option-like names, and ``_batch.json``, the manifest key), avoids
   Windows device names, and stays short. The original name is kept for display.

Duplicates are disambiguated on the *stem*, compared case-insensitively and NFKC-folded
(:func:`collision_key`): results take the output format's extension, so ``a.png`` and ``a.jpg``
would otherwise write the same result key; ``A.jpg`` and ``a.jpg`` would overwrite each other when
the ZIP is unpacked on Windows or macOS; and fullwidth ``ａ.jpg`` reads as ``a.jpg`` to people.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from urllib.parse import quote

__all__ = [
    "MAX_NAME_CHARS",
    "NameRefused",
    "archive_path",
    "assign_names",
    "check_name",
    "collision_key",
    "content_disposition",
    "is_invisible",
    "safe_name",
]

#: Longest declared name, in characters (what common file systems allow for one name).
MAX_NAME_CHARS = 255

#: Longest safe name, in UTF-8 bytes, before a de-duplication suffix: keeps
#: ``<batch id>/<name>`` far below S3's 1024-byte key limit and under 255 bytes on disk.
MAX_SAFE_NAME_BYTES = 150

#: Characters refused anywhere in a declared name (besides control characters).
FORBIDDEN_CHARACTERS = frozenset("/\\\"'`<>:|?*")

#: Format characters that reorder or hide text (``photo\u202egpj.exe`` shows as ``photoexe.jpg``).
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

#: Unicode categories refused: controls, surrogates, line and paragraph separators.
REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})

#: Default-ignorable code points (Unicode's Default_Ignorable_Code_Point property, as ranges):
#: characters that render as nothing. Some are letters (the Hangul fillers U+115F, U+1160, U+3164,
#: U+FFA0) or marks (U+034F, variation selectors), so a "letters and marks" rule alone keeps them.
DEFAULT_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)  # fmt: skip

_DEFAULT_IGNORABLE = frozenset(code for low, high in DEFAULT_IGNORABLE_RANGES for code in range(low, high + 1))

#: Stems Windows will not create as files, whatever the extension.
WINDOWS_DEVICE_NAMES = frozenset(
    {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(1, 10)} | {f"lpt{i}" for i in range(1, 10)}
)

_UNSAFE_RUN = re.compile(r"_+")
_EXTENSION = re.compile(r"[A-Za-z0-9]{1,10}")


class NameRefused(ValueError):
    """A declared name the API refuses; ``reason`` says why in plain words."""

    def __init__(self, name: object, reason: str, index: int | None = None) -> None:
        super().__init__(f"name {name!r} refused: {reason}")
        self.name = name
        self.reason = reason
        #: Position of the file in the request, when known.
        self.index = index


def check_name(name: object) -> str:
    """The declared name, NFC-normalised, or :class:`NameRefused` (see the module docstring)."""
    if not isinstance(name, str):
        raise NameRefused(name, "the name must be a string")
    normal = unicodedata.normalize("NFC", name)
    if not normal.strip():
        raise NameRefused(name, "the name is empty")
    if len(normal) > MAX_NAME_CHARS:
        raise NameRefused(name, f"the name is longer than {MAX_NAME_CHARS} characters")
    for ch in normal:
        if unicodedata.category(ch) in REFUSED_CATEGORIES or ch in BIDI_CONTROLS:
            raise NameRefused(name, f"the name contains the control character U+{ord(ch):04X}")
        if ch in FORBIDDEN_CHARACTERS:
            raise NameRefused(name, f"the name contains {ch!r}: quotes, slashes and <>:|?* are not allowed")
    if not normal.strip("."):
        raise NameRefused(name, "the name is only dots")
    return normal


def safe_name(name: str) -> str:
    """The key-safe form of an accepted name (not yet de-duplicated)."""
    return _sanitize(check_name(name))


def _sanitize(normal: str) -> str:
    """Replace what a key should not hold, keep the extension, bound the length."""
    stem, ext = _split_extension(normal)
    cleaned = "".join(ch if _is_kept(ch) else "_" for ch in stem)
    cleaned = _UNSAFE_RUN.sub("_", cleaned).lstrip("._-").rstrip("._ ") or "file"
    if cleaned.casefold() in WINDOWS_DEVICE_NAMES:
        cleaned += "_"
    suffix = f".{ext.lower()}" if ext else ""
    return _truncate_utf8(cleaned, MAX_SAFE_NAME_BYTES - len(suffix)) + suffix


def assign_names(names: Sequence[object]) -> list[str]:
    """Safe, unique names for a batch's declared names, in order.

    Raises :class:`NameRefused` (with ``index``) for the first refused name.
    """
    taken: set[str] = set()
    out = []
    for index, name in enumerate(names):
        try:
            base = safe_name(name)  # type: ignore[arg-type]  # check_name refuses non-strings
        except NameRefused as exc:
            exc.index = index
            raise
        stem, ext = _split_extension(base)
        candidate, n = stem, 1
        while collision_key(candidate) in taken:
            n += 1
            candidate = f"{stem}-{n}"
        taken.add(collision_key(candidate))
        out.append(f"{candidate}.{ext}" if ext else candidate)
    return out


def archive_path(name: str) -> str:
    """A path inside a ZIP for an object name that may hold ``/`` (direct uploads may nest keys).

    Every segment is made safe on its own, so no entry can be absolute, climb with ``..``, or
    carry a drive letter or a backslash.
    """
    segments = [s for s in name.split("/") if s.strip(". ")]
    return "/".join(_sanitize(unicodedata.normalize("NFC", s)) for s in segments or ["file"])


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """A ``Content-Disposition`` value safe for any file name (RFC 6266 with RFC 5987 ``filename*``).

    The quoted ``filename`` is an ASCII stand-in with nothing that could end the quoted string or
    the header; ``filename*`` carries the real name, percent-encoded, for clients that read it.
    """
    # Invisible characters would let the saved file's name differ from what the page showed.
    filename = "".join("_" if is_invisible(ch) else ch for ch in filename)
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode("ascii")
    ascii_name = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in ascii_name).strip("._") or "download"
    encoded = quote(filename, safe="!#$&+-.^_`|~")
    return f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{encoded}"


def _split_extension(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    if dot and stem.strip(".") and _EXTENSION.fullmatch(ext):
        return stem, ext
    return name, ""


def is_invisible(ch: str) -> bool:
    """Whether ``ch`` renders as nothing: a format character (category Cf) or default-ignorable."""
    if ch < "\x80":  # fast path: no ASCII character is (names are mostly ASCII; links sign many)
        return False
    return ord(ch) in _DEFAULT_IGNORABLE or unicodedata.category(ch) == "Cf"


def collision_key(name: str) -> str:
    """What two names are compared by when deciding whether they collide: NFKC, then case-folded.

    NFKC folds compatibility forms (fullwidth ``ａ`` to ``a``, ligatures, superscripts), casefold
    the case; NFKC again because case folding can leave a string un-normalised.
    """
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def _is_kept(ch: str) -> bool:
    return ch in "._-" or (unicodedata.category(ch)[0] in {"L", "N", "M"} and not is_invisible(ch))


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore").rstrip("._ ") or "file"
