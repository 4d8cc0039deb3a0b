"""The streaming ZIP writer, read back by Python's zipfile and, where installed, Info-ZIP's unzip."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import zipfile
from datetime import datetime
from pathlib import Path

import pytest

from ingest.zipstream import ZipStream, ZipStreamError

WHEN = datetime(2024, 5, 6, 7, 8, 10)


def build(entries: dict[str, bytes], *, force_zip64: bool = False, chunk: int = 4096) -> bytes:
    writer = ZipStream(force_zip64=force_zip64)
    out = io.BytesIO()
    for name, data in entries.items():
        out.write(writer.start_entry(name, size_hint=len(data), modified=WHEN))
        for i in range(0, len(data), chunk):
            out.write(writer.data(data[i : i + chunk]))
        out.write(writer.end_entry())
    out.write(writer.finish())
    assert writer.bytes_written == out.tell()
    return out.getvalue()


def unzip_test(tmp_path: Path, data: bytes) -> None:
    if shutil.which("unzip") is None:
        return
    path = tmp_path / "t.zip"
    path.write_bytes(data)
    result = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("force_zip64", [False, True], ids=["plain", "zip64"])
def test_entries_round_trip_stored_with_crc_and_times(tmp_path: Path, force_zip64: bool) -> None:
    entries = {"a.jpg": os.urandom(100_003), "dir/ünï 日本.png": b"", "c.webp": b"hello"}
    data = build(entries, force_zip64=force_zip64)
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    assert {info.filename: archive.read(info) for info in archive.infolist()} == entries
    for info in archive.infolist():
        assert info.compress_type == zipfile.ZIP_STORED
        assert info.flag_bits & 0x08 and info.flag_bits & 0x800  # data descriptor, UTF-8 name
        assert info.date_time == (2024, 5, 6, 7, 8, 10)
    has_end64 = struct.pack("<I", 0x06064B50) in data[-200:]
    assert has_end64 is force_zip64
    unzip_test(tmp_path, data)


def test_65535_entries_or_more_switch_the_end_record_to_zip64(tmp_path: Path) -> None:
    entries = {f"{i}.jpg": bytes([i % 251]) for i in range(70_000)}
    data = build(entries)
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert len(archive.infolist()) == 70_000
    assert archive.read("69999.jpg") == bytes([69999 % 251])
    assert struct.pack("<I", 0x06064B50) in data[-200:]
    unzip_test(tmp_path, data)


def test_an_unknown_size_is_written_as_zip64() -> None:
    writer = ZipStream()
    parts = [writer.start_entry("x.bin", size_hint=None, modified=WHEN), writer.data(b"abc"), writer.end_entry()]
    parts.append(writer.finish())
    archive = zipfile.ZipFile(io.BytesIO(b"".join(parts)))
    assert archive.read("x.bin") == b"abc"
    assert parts[0][4:6] == struct.pack("<H", 45)  # version needed: ZIP64


@pytest.mark.parametrize("name", ["", "/etc/passwd", "../x", "a/../b", "a\\b", "a//b", "./a", "a\x00"])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(ZipStreamError):
        ZipStream().start_entry(name, size_hint=1, modified=WHEN)


def test_duplicate_names_and_misuse_are_refused() -> None:
    writer = ZipStream()
    writer.add("A.jpg", b"1", modified=WHEN)
    with pytest.raises(ZipStreamError):
        writer.start_entry("a.JPG", size_hint=1, modified=WHEN)
    with pytest.raises(ZipStreamError):
        writer.end_entry()
    writer.start_entry("b.jpg", size_hint=1, modified=WHEN)
    with pytest.raises(ZipStreamError):
        writer.finish()


def test_dates_outside_the_dos_range_are_clamped() -> None:
    writer = ZipStream()
    data = writer.add("old.jpg", b"x", modified=datetime(1970, 1, 1)) + writer.finish()
    assert zipfile.ZipFile(io.BytesIO(data)).infolist()[0].date_time == (1980, 1, 1, 0, 0, 0)
