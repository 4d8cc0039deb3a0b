"""A streaming ZIP writer: stored entries, data descriptors, ZIP64 when sizes or counts need it.

The writer produces bytes and does no I/O, so the archive handler decides where bytes go and
when (it awaits the network between chunks, which is what bounds memory), and tests can check
every byte with :mod:`zipfile` and ``unzip``.

Why these choices:

- **Stored, not deflated.** Results are JPEG, PNG or WebP, already compressed; deflating them
  costs CPU on the ingest process for a gain of a few percent.
- **Data descriptors** (general-purpose flag bit 3). The CRC-32 of an entry is known only after
  its last byte has gone out; the descriptor after the data carries it (and the sizes), so
  nothing is buffered or read twice.
- **ZIP64 where needed.** An entry is written as ZIP64 when its expected size reaches 4 GiB (or
  is unknown); the central directory uses ZIP64 fields for any size or offset past 32 bits, and the
  end records when there are 65,535 entries or more, or offsets past 4 GiB. Small archives stay
  plain ZIP, which every unzipper reads.
- **UTF-8 names** (flag bit 11). The caller passes safe names (see :mod:`ingest.names`); the
  writer still refuses absolute, ``..``, backslash and duplicate names as a last line of defence.

Memory: one central-directory record per entry (~100 bytes plus the name) is kept until
:meth:`ZipStream.finish`; entry data passes through without being held.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from datetime import datetime

__all__ = ["ZIP64_LIMIT", "ZipStream", "ZipStreamError"]

#: Sizes and offsets at or past this do not fit a plain ZIP field.
ZIP64_LIMIT = 0xFFFFFFFF
#: Entry counts at or past this do not fit the plain end record.
ZIP64_COUNT_LIMIT = 0xFFFF

_FLAGS = 0x0008 | 0x0800  # data descriptor follows the data; names are UTF-8
_STORED = 0
_VERSION_PLAIN = 20
_VERSION_ZIP64 = 45
_MADE_BY_UNIX = 3 << 8
_FILE_MODE = 0o100644 << 16  # a regular file, rw-r--r--, in the high half of the external attributes

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_DESCRIPTOR = struct.Struct("<IIII")
_DESCRIPTOR64 = struct.Struct("<IIQQ")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_END64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<IIQI")


class ZipStreamError(ValueError):
    """The writer was used out of order, or given a name or size it cannot write."""


@dataclass
class _Entry:
    name: bytes
    offset: int
    dos_time: int
    dos_date: int
    zip64: bool
    crc: int = 0
    size: int = 0


class ZipStream:
    """Builds one ZIP archive as a sequence of byte strings.

    For each entry: :meth:`start_entry`, then :meth:`data` for every chunk (it returns the chunk
    for the caller to send), then :meth:`end_entry`; finally :meth:`finish`. ``force_zip64`` writes
    every ZIP64 structure even for small archives (tests use it to exercise those paths).
    """

    def __init__(self, *, force_zip64: bool = False) -> None:
        self._force_zip64 = force_zip64
        self._offset = 0
        self._entries: list[_Entry] = []
        self._names: set[str] = set()
        self._current: _Entry | None = None
        self._finished = False

    @property
    def bytes_written(self) -> int:
        """Bytes of archive produced so far."""
        return self._offset

    def start_entry(self, name: str, *, size_hint: int | None, modified: datetime) -> bytes:
        """The local header of a new entry; ``size_hint`` decides whether it needs ZIP64."""
        if self._current is not None or self._finished:
            raise ZipStreamError("an entry is already open, or the archive is finished")
        encoded = self._check_name(name)
        zip64 = self._force_zip64 or size_hint is None or size_hint >= ZIP64_LIMIT
        dos_time, dos_date = _dos_time(modified)
        entry = _Entry(name=encoded, offset=self._offset, dos_time=dos_time, dos_date=dos_date, zip64=zip64)
        # With a data descriptor, the CRC and sizes in the local header are zero (ZIP64: the
        # 32-bit sizes are 0xFFFFFFFF and the real ones, also zero here, sit in the extra field).
        extra = struct.pack("<HHQQ", 0x0001, 16, 0, 0) if zip64 else b""
        marker = ZIP64_LIMIT if zip64 else 0
        header = _LOCAL.pack(
            0x04034B50,
            _VERSION_ZIP64 if zip64 else _VERSION_PLAIN,
            _FLAGS,
            _STORED,
            dos_time,
            dos_date,
            0,
            marker,
            marker,
            len(encoded),
            len(extra),
        )
        self._current = entry
        return self._emit(header + encoded + extra)

    def data(self, chunk: bytes) -> bytes:
        """Account for one chunk of the open entry's data and return it unchanged."""
        entry = self._require_open()
        entry.crc = zlib.crc32(chunk, entry.crc)
        entry.size += len(chunk)
        if not entry.zip64 and entry.size >= ZIP64_LIMIT:
            raise ZipStreamError(f"entry {entry.name!r} grew past 4 GiB but was started without ZIP64")
        return self._emit(chunk)

    def end_entry(self) -> bytes:
        """The data descriptor that closes the open entry."""
        entry = self._require_open()
        self._current = None
        self._entries.append(entry)
        if entry.zip64:
            return self._emit(_DESCRIPTOR64.pack(0x08074B50, entry.crc, entry.size, entry.size))
        return self._emit(_DESCRIPTOR.pack(0x08074B50, entry.crc, entry.size, entry.size))

    def add(self, name: str, content: bytes, *, modified: datetime) -> bytes:
        """A whole small entry at once (header, data, descriptor)."""
        return (
            self.start_entry(name, size_hint=len(content), modified=modified)
            + self.data(content)
            + self.end_entry()
        )

    def finish(self) -> bytes:
        """The central directory and end records; the archive is complete after these bytes."""
        if self._current is not None or self._finished:
            raise ZipStreamError("an entry is still open, or the archive is already finished")
        self._finished = True
        cd_offset = self._offset
        central = b"".join(self._central_record(e) for e in self._entries)
        self._emit(central)
        cd_size = len(central)
        count = len(self._entries)
        tail = b""
        needs64 = (
            self._force_zip64
            or count >= ZIP64_COUNT_LIMIT
            or cd_size >= ZIP64_LIMIT
            or cd_offset >= ZIP64_LIMIT
        )
        if needs64:
            end64_offset = self._offset
            tail += _END64.pack(
                0x06064B50, _END64.size - 12, _MADE_BY_UNIX | _VERSION_ZIP64, _VERSION_ZIP64,
                0, 0, count, count, cd_size, cd_offset,
            )
            tail += _LOCATOR64.pack(0x07064B50, 0, end64_offset, 1)
        tail += _END.pack(
            0x06054B50, 0, 0,
            min(count, ZIP64_COUNT_LIMIT), min(count, ZIP64_COUNT_LIMIT),
            min(cd_size, ZIP64_LIMIT), min(cd_offset, ZIP64_LIMIT), 0,
        )
        self._emit(tail)
        return central + tail

    # -- internals ---------------------------------------------------------------------------
    def _central_record(self, entry: _Entry) -> bytes:
        sizes_big = entry.zip64 or entry.size >= ZIP64_LIMIT
        offset_big = self._force_zip64 or entry.offset >= ZIP64_LIMIT
        fields: list[int] = []
        if sizes_big:
            fields += [entry.size, entry.size]  # uncompressed, then compressed: the order APPNOTE fixes
        if offset_big:
            fields.append(entry.offset)
        extra = struct.pack(f"<HH{len(fields)}Q", 0x0001, 8 * len(fields), *fields) if fields else b""
        needs64 = bool(fields)
        size_field = ZIP64_LIMIT if sizes_big else entry.size
        return _CENTRAL.pack(
            0x02014B50,
            _MADE_BY_UNIX | (_VERSION_ZIP64 if needs64 else _VERSION_PLAIN),
            _VERSION_ZIP64 if needs64 or entry.zip64 else _VERSION_PLAIN,
            _FLAGS,
            _STORED,
            entry.dos_time,
            entry.dos_date,
            entry.crc,
            size_field,
            size_field,
            len(entry.name),
            len(extra),
            0,
            0,
            0,
            _FILE_MODE,
            ZIP64_LIMIT if offset_big else entry.offset,
        ) + entry.name + extra

    def _check_name(self, name: str) -> bytes:
        if not name or name.startswith("/") or "\\" in name or "\x00" in name:
            raise ZipStreamError(f"unsafe entry name {name!r}")
        if any(part in {"", ".", ".."} for part in name.split("/")):
            raise ZipStreamError(f"unsafe entry name {name!r}")
        folded = name.casefold()
        if folded in self._names:
            raise ZipStreamError(f"duplicate entry name {name!r}")
        self._names.add(folded)
        encoded = name.encode("utf-8")
        if len(encoded) > 0xFFFF:
            raise ZipStreamError("entry name longer than 65535 bytes")
        return encoded

    def _require_open(self) -> _Entry:
        if self._current is None:
            raise ZipStreamError("no entry is open")
        return self._current

    def _emit(self, data: bytes) -> bytes:
        self._offset += len(data)
        return data


def _dos_time(when: datetime) -> tuple[int, int]:
    """MS-DOS time and date fields (2-second resolution, 1980 to 2107)."""
    year = min(max(when.year, 1980), 2107)
    if year != when.year:
        when = datetime(year, 1, 1)
    return (when.hour << 11) | (when.minute << 5) | (when.second // 2), ((year - 1980) << 9) | (when.month << 5) | when.day
