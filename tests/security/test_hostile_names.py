"""Hostile file names never escape their batch, never inject a header, never leave the archive.

Two ways a name gets in: declared to the API (checked and made safe there, see ingest/names.py)
and chosen freely by a direct S3 uploader (only keys that escape the prefix or hold control
characters are refused, by the processor). Names here are the ones the earlier layers let
through: percent-encoded and look-alike traversal, backslashes, drive letters, quotes,
semicolons, markup, bidirectional overrides, line separators and non-ASCII text. Whatever they
are, each must stay one object under ``<batch_id>/``, every result link must come back from the
real store with exactly one well-formed ``Content-Disposition``, and every ZIP entry must unpack
inside the target folder (checked with ``unzip`` and :mod:`zipfile`). What the web page makes of
such names is in test_page_names.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import subprocess
import unicodedata
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from yarl import URL

from db.repository import Repository
from harness.processor import eventually, image_bytes, running_worker
from ingest.names import content_disposition, is_invisible
from ingest.presign import Presigner
from photoenhance.contracts.keys import parse_input_key
from photoenhance.s3 import boto_client
from photoenhance.settings import Settings
from tests.ingest.conftest import StartIngest, image_file

pytestmark = pytest.mark.security

#: What every Content-Disposition must look like: an ASCII stand-in that cannot end the quoted
#: string or the header, and the real name percent-encoded (RFC 6266 with RFC 5987).
SAFE_DISPOSITION = re.compile(r"attachment; filename=\"([A-Za-z0-9._-]+)\"; filename\*=UTF-8''([A-Za-z0-9%!#$&+.^_`|~-]+)")

#: Names the API accepts although they look like paths: each must become one plain segment.
LOOKALIKE_NAMES = [
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd.jpg",
    "..%2f..%2fsecret.jpg",
    "%5c..%5c..%5cwin.ini.jpg",
    "\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fetc\uff0fpasswd.jpg",  # fullwidth ．．／
    "\u2025\u2215etc\u2215passwd.jpg",  # two-dot leader, division slash
    "\u2044root\u2044.ssh.jpg",  # fraction slash
    "a;b=c, d.jpg",
    "%0d%0aSet-Cookie%3a x.jpg",
    "x onerror=alert(1) .jpg",
]

#: Names the API refuses outright (absolute, UNC, drive, markup with quotes): not one is signed.
REFUSED_NAMES = [
    "/etc/passwd.jpg",
    "\\\\server\\share\\x.jpg",
    "C:\\Windows\\x.jpg",
    '<img src=x onerror="window.__pwned=1">.jpg',
    "<svg onload=alert(1)>.png",
    "a\r\nContent-Type: text/html.jpg",
]

#: Keys a direct uploader may pick, all accepted by the processor (no control characters, no
#: "." or ".." segment); the results keep these names with the output extension.
DIRECT_NAMES = [
    "%2e%2e%2f%2e%2e%2fescape.jpg",
    "..\\..\\windows\\system32\\evil.jpg",
    "C:\\abs.jpg",
    'a"; filename="evil.exe.jpg',
    "semi;colon, comma=equals.jpg",
    "ünïcødé 日本 😀.jpg",
    "photo\u202egpj.exe.jpg",
    "line\u2028separator.jpg",
    "<img src=x onerror=alert(1)>.jpg",
    "nested/..hidden/x.jpg",
]

#: A direct upload that fails (text, not a picture), so the archive lists it in FAILURES.txt.
FAILING_NAME = 'fails"; x=1.jpg'


def assert_safe_disposition(header: str, expected_name: str) -> None:
    match = SAFE_DISPOSITION.fullmatch(header)
    assert match is not None, header
    # Invisible characters (U+202E reversing "gpj.exe" and the like) are replaced in the name a
    # browser saves the file under, like every other unsafe character.
    assert unquote(match.group(2)) == "".join("_" if is_invisible(ch) else ch for ch in expected_name)


async def test_path_lookalikes_become_one_plain_segment(start_ingest: StartIngest, settings: Settings) -> None:
    ingest = await start_ingest(settings)
    created = await ingest.create([image_file(name) for name in LOOKALIKE_NAMES])
    batch_id = created["batch_id"]
    for upload in created["uploads"]:
        name = upload["name"]
        assert upload["key"] == upload["fields"]["key"] == f"{batch_id}/{name}", upload["original_name"]
        assert parse_input_key(upload["key"]).name == name
        assert not set(name) & set("/\\%:;,=\r\n\"' "), name
        # Not even a compatibility normalisation (which folds ．／ into ./) makes it a path.
        folded = unicodedata.normalize("NFKC", name)
        assert not set(folded) & set("/\\") and folded.strip(".") == folded, name
        # The download name's ASCII stand-in is made with NFKD, which turns ．．／ into ../: it too
        # must come out as one harmless segment.
        assert_safe_disposition(content_disposition(upload["original_name"]), upload["original_name"])
    assert len({u["name"] for u in created["uploads"]}) == len(LOOKALIKE_NAMES)


@pytest.mark.parametrize("name", REFUSED_NAMES)
async def test_paths_and_markup_in_names_are_refused(name: str, start_ingest: StartIngest, settings: Settings) -> None:
    ingest = await start_ingest(settings)
    async with ingest.http.post(ingest.url("/api/v1/batches"), json={"files": [image_file(name)]}) as response:
        body = await response.json()
    assert (response.status, body["error"]["code"], body["error"]["field"]) == (400, "invalid_name", "files[0].name")
    assert "uploads" not in body


@pytest.mark.objectstore
async def test_hostile_direct_names_stay_inside_links_and_archive(
    processor_settings: Settings, start_ingest: StartIngest, repository: Repository, fast_engine: Any, tmp_path: Path
) -> None:
    """Direct uploads with hostile keys go through the real processor; their result links and
    the batch's ZIP are then read from the real store through the API (with an API key)."""
    settings = processor_settings
    batch_id = "direct.hostile-names"
    s3 = boto_client(settings, "s3")  # minio-py refuses some of these keys client-side; boto3 sends them verbatim

    def upload(name: str, body: bytes) -> None:
        s3.put_object(
            Bucket=settings.s3_input_bucket, Key=f"{batch_id}/{name}", Body=body,
            Metadata={"photoenhance-quality": "fast"},
        )

    async def all_final() -> list[Any] | None:
        snapshot = await repository.batch_snapshot(batch_id)
        images = snapshot.images if snapshot is not None else []
        done = [i for i in images if i.state.is_final]
        return done if len(done) == len(DIRECT_NAMES) + 1 else None

    async with running_worker(settings, fast_engine):
        for i, name in enumerate(DIRECT_NAMES):
            await asyncio.to_thread(upload, name, image_bytes(32, 24, seed=i))
        await asyncio.to_thread(upload, FAILING_NAME, b"not a picture at all")
        images = await eventually(all_final, what="every hostile name to be final")
    by_name = {image.name: image for image in images}
    assert set(by_name) == {*DIRECT_NAMES, FAILING_NAME}
    assert by_name[FAILING_NAME].code == "not_an_image"
    for name in DIRECT_NAMES:
        image = by_name[name]
        assert image.state.value == "completed", (name, image.reason)
        # The result stays under the batch's prefix, in the same place as its input.
        assert image.output_key == f"{batch_id}/{name.rsplit('.', 1)[0]}.jpg"

    ingest = await start_ingest(settings.replace(api_keys=("server-key",)))
    bearer = {"Authorization": "Bearer server-key"}
    async with ingest.http.get(ingest.url(f"/api/v1/batches/{batch_id}"), headers=bearer) as response:
        assert response.status == 200
        status = await response.json()
    links = {entry["name"]: entry["result"] for entry in status["images"] if "result" in entry}
    assert set(links) == set(DIRECT_NAMES)
    for name, result in links.items():
        async with ingest.http.get(URL(result["url"], encoded=True)) as response:
            assert response.status == 200, name
            [disposition] = response.headers.getall("Content-Disposition")
            assert_safe_disposition(disposition, result["key"].rsplit("/", 1)[-1])

    # Line breaks in a download name (no key holds them: the processor refuses control
    # characters, but the signer must be safe on its own) reach the store percent-encoded.
    presigner = Presigner(settings)
    some_key = next(iter(links.values()))["key"]
    injected = 'evil\r\nSet-Cookie: pwned=1\r\nX-Injected: 1"; filename="x.exe'
    link = URL(presigner.download_url(settings.s3_output_bucket, some_key, injected), encoded=True)
    async with ingest.http.get(link) as response:
        assert response.status == 200
        assert "Set-Cookie" not in response.headers and "X-Injected" not in response.headers
        [disposition] = response.headers.getall("Content-Disposition")
        assert_safe_disposition(disposition, injected)

    async with ingest.http.get(ingest.url(f"/api/v1/batches/{batch_id}/archive"), headers=bearer) as response:
        assert response.status == 200
        [disposition] = response.headers.getall("Content-Disposition")
        assert_safe_disposition(disposition, f"photoenhance-{batch_id}.zip")
        body = await response.read()
    check_archive(body, len(DIRECT_NAMES), tmp_path / "unpack")
    failures = zipfile.ZipFile(io.BytesIO(body)).read("FAILURES.txt").decode()
    [listed] = [line for line in failures.split("\r\n") if FAILING_NAME in line]
    assert listed.startswith(FAILING_NAME + "\t") and "not_an_image" in listed


def check_archive(body: bytes, results: int, work: Path) -> None:
    """Every entry is a relative path of plain segments, and unpacks inside the target folder
    (``work`` ends up holding the two target folders and the archive, nothing beside them)."""
    work.mkdir()
    archive = zipfile.ZipFile(io.BytesIO(body))
    names = archive.namelist()
    assert len(names) == results + 1 and "FAILURES.txt" in names
    for name in names:
        segments = name.split("/")
        assert not name.startswith("/") and all(s not in {"", ".", ".."} for s in segments), name
        assert all(ch in "._-/" or unicodedata.category(ch)[0] in "LNM" for ch in name), name
        assert not segments[-1].startswith((".", "-")), name
    assert len({n.casefold() for n in names}) == len(names)
    unpackers: dict[str, Path] = {"zipfile": work / "by-zipfile"}
    archive.extractall(unpackers["zipfile"])
    if shutil.which("unzip"):
        unpackers["unzip"] = work / "by-unzip"
        saved = work / "batch.zip"
        saved.write_bytes(body)
        done = subprocess.run(
            ["unzip", "-q", str(saved), "-d", str(unpackers["unzip"])], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
    for tool, root in unpackers.items():
        files = [p for p in root.rglob("*") if p.is_file()]
        assert len(files) == len(names), (tool, files)
        assert all(p.resolve().is_relative_to(root.resolve()) for p in files), tool
    assert {p.name for p in work.iterdir()} <= {"by-zipfile", "by-unzip", "batch.zip"}
    json.dumps(names)  # every name is plain text (no lone surrogates)
