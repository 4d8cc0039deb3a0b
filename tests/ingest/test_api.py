"""The ingest API in-process, against the test's real database: creating batches, refusing bad
input without creating anything, and reading batches only with the right credential.

Presigning is local computation, so these tests need no object store; the store's own checks of
what is signed here are in tests/security/test_presigned_uploads.py.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select

from db.models import Batch, BatchFile
from photoenhance.contracts.tokens import hash_token
from photoenhance.settings import Settings
from tests.ingest.conftest import RunningIngest, StartIngest, image_file


async def count_rows(ingest: RunningIngest) -> tuple[int, int]:
    """(batches, declared files) in the database."""
    async with ingest.repository.db.read() as conn:
        batches = (await conn.execute(select(func.count()).select_from(Batch))).scalar_one()
        files = (await conn.execute(select(func.count()).select_from(BatchFile))).scalar_one()
    return batches, files


def policy_of(upload: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(upload["fields"]["policy"]))


async def test_create_batch_returns_token_uploads_and_progress_urls(start_ingest: StartIngest, settings: Settings) -> None:
    ingest = await start_ingest(
        settings.replace(s3_public_endpoint="https://s3.example.test", notifier_public_url="https://live.example.test/pe")
    )
    before = datetime.now(UTC)
    body = await ingest.create(
        [image_file("Holiday photo.jpg", 12345), image_file("b.png", 10, "image/png")],
        options={"quality": "fast", "upscale": 2},
    )
    batch_id = body["batch_id"]
    assert len(batch_id) == 26 and batch_id.isalnum() and batch_id.isupper()
    assert body["expected_count"] == 2 and body["state"] == "open"
    assert body["options"]["quality"] == "fast"
    assert body["progress"] == {
        "websocket": f"wss://live.example.test/pe/ws/batches/{batch_id}",
        "events": f"https://live.example.test/pe/events/batches/{batch_id}",
    }
    first, second = body["uploads"]
    assert (first["name"], first["original_name"]) == ("Holiday_photo.jpg", "Holiday photo.jpg")
    assert first["method"] == "POST"
    assert first["url"] == f"https://s3.example.test/{settings.s3_input_bucket}"
    assert first["key"] == f"{batch_id}/Holiday_photo.jpg" == first["fields"]["key"]
    assert first["fields"]["Content-Type"] == "image/jpeg"
    policy = policy_of(first)
    conditions = policy["conditions"]
    assert ["eq", "$bucket", settings.s3_input_bucket] in conditions
    assert ["eq", "$key", first["key"]] in conditions
    assert ["eq", "$Content-Type", "image/jpeg"] in conditions
    assert ["content-length-range", 1, 12345] in conditions
    assert ["content-length-range", 1, 10] in policy_of(second)["conditions"]
    expiration = datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
    expected = before + timedelta(seconds=settings.presign_expiry_s)
    assert expected - timedelta(seconds=1) <= expiration <= expected + timedelta(seconds=60)

    batch = await ingest.repository.get_batch(batch_id)
    assert batch is not None and batch.expected_count == 2 and batch.source == "api"
    assert batch.token_hash == hash_token(body["token"]) != body["token"]
    declared = await ingest.repository.declared_files(batch_id)
    assert {(f.name, f.original_name, f.declared_size, f.content_type) for f in declared} == {
        ("Holiday_photo.jpg", "Holiday photo.jpg", 12345, "image/jpeg"),
        ("b.png", "b.png", 10, "image/png"),
    }


async def test_put_uploads_only_where_the_server_allows_them(start_ingest: StartIngest, settings: Settings) -> None:
    ingest = await start_ingest(settings.replace(ingest_allow_put_uploads=True))
    body = await ingest.create([image_file("a.jpg")], upload="put")
    [upload] = body["uploads"]
    assert upload["method"] == "PUT" and "fields" not in upload
    assert upload["headers"] == {"Content-Type": "image/jpeg"}
    url = urlsplit(upload["url"])
    assert url.path == f"/{settings.s3_input_bucket}/{body['batch_id']}/a.jpg"
    assert parse_qs(url.query)["X-Amz-Expires"] == [str(settings.presign_expiry_s)]


async def test_names_become_safe_unique_keys(start_ingest: StartIngest, settings: Settings) -> None:
    ingest = await start_ingest(settings)
    names = ["a.png", "A.jpg", "a.jpg", "_batch.json.jpg", "_batch.jpg", "ünï cødé 日本.webp", "CON.jpg", "x" * 255]
    body = await ingest.create([image_file(n) for n in names])
    safe = [u["name"] for u in body["uploads"]]
    assert safe == ["a.png", "A-2.jpg", "a-3.jpg", "batch.json.jpg", "batch.jpg", "ünï_cødé_日本.webp", "CON_.jpg", "x" * 150]
    assert [u["original_name"] for u in body["uploads"]] == names
    # every result key is distinct too (results share the output format's extension)
    assert len({n.rsplit(".", 1)[0].casefold() for n in safe}) == len(safe)


async def test_a_thousand_files_are_accepted(start_ingest: StartIngest, settings: Settings) -> None:
    ingest = await start_ingest(settings)
    body = await ingest.create([image_file(f"img{i}.jpg") for i in range(settings.max_files_per_batch)])
    assert len(body["uploads"]) == 1000
    assert await count_rows(ingest) == (1, 1000)


BAD_REQUESTS: list[tuple[str, Any, int, str, str | None]] = [
    ("malformed json", b"{not json", 400, "malformed_json", None),
    ("not an object", [], 400, "invalid_request", None),
    ("unknown top-level field", {"files": [image_file()], "colour": "red"}, 400, "unknown_field", "colour"),
    ("no files", {"files": []}, 400, "no_files", "files"),
    ("files not a list", {"files": "a.jpg"}, 400, "invalid_request", "files"),
    ("too many files", {"files": [image_file(f"{i}.jpg") for i in range(1001)]}, 413, "too_many_files", "files"),
    ("file too large", {"files": [image_file(size=50 * 1024 * 1024 + 1)]}, 413, "file_too_large", "files[0].size"),
    ("zero size", {"files": [image_file(size=0)]}, 400, "invalid_size", "files[0].size"),
    ("size as string", {"files": [image_file(size="10")]}, 400, "invalid_size", "files[0].size"),
    ("size as bool", {"files": [image_file(size=True)]}, 400, "invalid_size", "files[0].size"),
    ("empty name", {"files": [image_file(""), image_file()]}, 400, "invalid_name", "files[0].name"),
    ("blank name", {"files": [image_file("   ")]}, 400, "invalid_name", "files[0].name"),
    ("traversal", {"files": [image_file(), image_file("../../etc/passwd.jpg")]}, 400, "invalid_name", "files[1].name"),
    ("dot-dot", {"files": [image_file("..")]}, 400, "invalid_name", "files[0].name"),
    ("backslash", {"files": [image_file("..\\win.ini")]}, 400, "invalid_name", "files[0].name"),
    ("NUL", {"files": [image_file("a\x00.jpg")]}, 400, "invalid_name", "files[0].name"),
    ("newline", {"files": [image_file("a\r\nSet-Cookie: x.jpg")]}, 400, "invalid_name", "files[0].name"),
    ("bidi override", {"files": [image_file("photo\u202egpj.exe")]}, 400, "invalid_name", "files[0].name"),
    ("double quote", {"files": [image_file('a".jpg')]}, 400, "invalid_name", "files[0].name"),
    ("single quote", {"files": [image_file("a'.jpg")]}, 400, "invalid_name", "files[0].name"),
    ("500 characters", {"files": [image_file("x" * 496 + ".jpg")]}, 400, "invalid_name", "files[0].name"),
    ("name not a string", {"files": [image_file(7)]}, 400, "invalid_name", "files[0].name"),
    ("unknown file field", {"files": [{**image_file(), "path": "/x"}]}, 400, "unknown_field", "files[0].path"),
    (
        "svg", {"files": [image_file("a.svg", content_type="image/svg+xml")]}, 415, "unsupported_content_type",
        "files[0].content_type",
    ),
    ("html", {"files": [image_file(content_type="text/html")]}, 415, "unsupported_content_type", "files[0].content_type"),
    ("no content type", {"files": [{"name": "a.jpg", "size": 1}]}, 400, "unsupported_content_type", "files[0].content_type"),
    ("unknown option", {"files": [image_file()], "options": {"sharpen": 1}}, 400, "invalid_options", "options"),
    ("option out of range", {"files": [image_file()], "options": {"upscale": 9}}, 400, "invalid_options", "options"),
    ("options not an object", {"files": [image_file()], "options": [1]}, 400, "invalid_options", "options"),
    ("unknown upload method", {"files": [image_file()], "upload": "ftp"}, 400, "invalid_upload_method", "upload"),
]


@pytest.mark.parametrize(("case", "payload", "status", "code", "field"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
async def test_bad_input_is_refused_and_creates_nothing(
    start_ingest: StartIngest, settings: Settings, case: str, payload: Any, status: int, code: str, field: str | None
) -> None:
    ingest = await start_ingest(settings)
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    async with ingest.http.post(
        ingest.url("/api/v1/batches"), data=data, headers={"Content-Type": "application/json"}
    ) as response:
        body = await response.json()
    assert response.status == status, body
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["error"].get("field") == field
    assert await count_rows(ingest) == (0, 0)


async def test_oversized_body_is_a_json_413(start_ingest: StartIngest, settings: Settings) -> None:
    ingest = await start_ingest(settings.replace(max_files_per_batch=2))
    async with ingest.http.post(
        ingest.url("/api/v1/batches"), data=b"{" + b" " * 200_000 + b"}", headers={"Content-Type": "application/json"}
    ) as response:
        body = await response.json()
    assert (response.status, body["error"]["code"]) == (413, "request_too_large")
    assert await count_rows(ingest) == (0, 0)


async def test_unknown_routes_and_methods_are_json_errors(start_ingest: StartIngest, settings: Settings) -> None:
    ingest = await start_ingest(settings)
    async with ingest.http.get(ingest.url("/api/v1/nothing")) as response:
        assert (response.status, (await response.json())["error"]["code"]) == (404, "not_found")
    async with ingest.http.delete(ingest.url("/api/v1/batches")) as response:
        assert (response.status, (await response.json())["error"]["code"]) == (405, "method_not_allowed")
        assert "POST" in response.headers["Allow"]


async def test_api_key_may_be_required_to_create(start_ingest: StartIngest, settings: Settings) -> None:
    ingest = await start_ingest(settings.replace(ingest_require_api_key=True, api_keys=("server-key",)))
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        async with ingest.http.post(ingest.url("/api/v1/batches"), json={"files": [image_file()]}, headers=headers) as r:
            assert (r.status, (await r.json())["error"]["code"]) == (401, "api_key_required")
    async with ingest.http.post(
        ingest.url("/api/v1/batches"), json={"files": [image_file()]}, headers={"Authorization": "Bearer server-key"}
    ) as r:
        assert r.status == 201
    assert await count_rows(ingest) == (1, 1)


async def test_only_the_batch_token_or_an_api_key_reads_a_batch(start_ingest: StartIngest, settings: Settings) -> None:
    ingest = await start_ingest(settings.replace(api_keys=("server-key",)))
    mine = await ingest.create([image_file("a.jpg"), image_file("b.jpg")])
    other = await ingest.create([image_file("c.jpg")])
    path = f"/api/v1/batches/{mine['batch_id']}"

    async def get(path: str, token: str | None, query: bool = False) -> tuple[int, dict[str, Any]]:
        headers = {} if token is None or query else {"Authorization": f"Bearer {token}"}
        params = {"token": token} if query and token else {}
        async with ingest.http.get(ingest.url(path), headers=headers, params=params) as response:
            return response.status, await response.json()

    status, body = await get(path, mine["token"])
    assert status == 200
    assert body["state"] == "open"
    assert body["counts"] == {
        "expected": 2, "uploaded": 0, "awaiting_upload": 2, "waiting_for_worker": 0, "pending": 0, "completed": 0,
        "failed": 0, "cancelled": 0,
    }
    assert [(i["name"], i["state"], i["size"]) for i in body["images"]] == [
        ("a.jpg", "awaiting_upload", 1000),
        ("b.jpg", "awaiting_upload", 1000),
    ]
    assert (await get(path, "server-key"))[0] == 200

    unknown = await get("/api/v1/batches/01ARZ3NDEKTSV4RRFFQ69G5FAV", mine["token"])
    assert unknown == (404, {"error": {"code": "batch_not_found", "message": "no such batch"}})
    refusals = {
        "no token": await get(path, None),
        "wrong token": await get(path, "x" * 43),
        "another batch's token": await get(path, other["token"]),
        "token in the query of a JSON route": await get(path, mine["token"], query=True),
        "malformed id": await get("/api/v1/batches/..%2F..%2Fetc", mine["token"]),
        "retry without token": await _post(ingest, f"{path}/retry"),
        "archive with wrong token": await get(f"{path}/archive", other["token"], query=True),
    }
    for case, answer in refusals.items():
        assert answer == unknown, case


async def _post(ingest: RunningIngest, path: str) -> tuple[int, dict[str, Any]]:
    async with ingest.http.post(ingest.url(path)) as response:
        return response.status, await response.json()


async def test_healthz_checks_the_database(start_ingest: StartIngest, settings: Settings) -> None:
    ingest = await start_ingest(settings)
    async with ingest.http.get(ingest.url("/healthz")) as response:
        assert (response.status, await response.json()) == (200, {"database": "up"})
