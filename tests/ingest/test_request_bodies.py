"""JSON endpoints take JSON only, parse it within bounds, and answer every refusal with a code.

Findings of issue 17: a hostile page's ``fetch(..., {mode: "no-cors", headers: {"Content-Type":
"text/plain"}})`` created batches through its visitors' browsers; a 5,000-digit integer or JSON
nested 50,000 deep answered 500 with a traceback.
"""

from __future__ import annotations

import json
import logging

import pytest
from sqlalchemy import func, select

from db.models import Batch
from photoenhance.settings import Settings
from tests.ingest.conftest import RunningIngest, StartIngest, image_file


async def batches_in(ingest: RunningIngest) -> int:
    async with ingest.repository.db.read() as conn:
        return (await conn.execute(select(func.count()).select_from(Batch))).scalar_one()


def create_body() -> bytes:
    return json.dumps({"files": [image_file()], "options": {"quality": "fast"}}).encode()


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
async def test_batch_creation_refuses_anything_but_json(
    start_ingest: StartIngest, settings: Settings, content_type: str | None
) -> None:
    ingest = await start_ingest(settings)
    headers = {} if content_type is None else {"Content-Type": content_type}
    # skip_auto_headers: with no Content-Type given, aiohttp would add application/octet-stream
    async with ingest.http.post(
        ingest.url("/api/v1/batches"), data=create_body(), headers=headers, skip_auto_headers=["Content-Type"]
    ) as response:
        body = await response.json()
    assert response.status == 415, body
    assert body["error"]["code"] == "unsupported_media_type"
    assert await batches_in(ingest) == 0


async def test_json_with_a_charset_is_accepted(start_ingest: StartIngest, settings: Settings) -> None:
    ingest = await start_ingest(settings)
    async with ingest.http.post(
        ingest.url("/api/v1/batches"), data=create_body(), headers={"Content-Type": "application/json; charset=utf-8"}
    ) as response:
        assert response.status == 201, await response.text()


async def test_retry_with_a_body_must_be_json(start_ingest: StartIngest, settings: Settings) -> None:
    ingest = await start_ingest(settings)
    created = await ingest.create([image_file()])
    url = ingest.url(f"/api/v1/batches/{created['batch_id']}/retry")
    auth = {"Authorization": f"Bearer {created['token']}"}
    async with ingest.http.post(url, data=b"x", headers={**auth, "Content-Type": "text/plain"}) as response:
        assert response.status == 415
        assert (await response.json())["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("label", "body"),
    [
        ("long integer", b'{"files": [{"name": "a.jpg", "size": 1' + b"0" * 5000 + b', "content_type": "image/jpeg"}]}'),
        ("deep nesting", b'{"files": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
        ("nesting past the bound", b'{"options": ' + b"[" * 40 + b"]" * 40 + b"}"),
    ],
)
async def test_hostile_json_answers_400_malformed_json(
    start_ingest: StartIngest, settings: Settings, label: str, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    ingest = await start_ingest(settings)
    with caplog.at_level(logging.ERROR):
        async with ingest.http.post(
            ingest.url("/api/v1/batches"), data=body, headers={"Content-Type": "application/json"}
        ) as response:
            answer = await response.json()
    assert response.status == 400, (label, answer)
    assert answer["error"]["code"] == "malformed_json"
    assert answer["error"]["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "no traceback for bad input"
    assert await batches_in(ingest) == 0


@pytest.mark.parametrize(
    ("options", "field"),
    [({"upscale": "4"}, "upscale"), ({"tile": 10**30}, "tile"), ({"output_quality": "90"}, "output_quality")],
)
async def test_options_take_json_numbers_and_a_bounded_tile(
    start_ingest: StartIngest, settings: Settings, options: dict, field: str
) -> None:
    ingest = await start_ingest(settings)
    async with ingest.http.post(ingest.url("/api/v1/batches"), json={"files": [image_file()], "options": options}) as response:
        answer = await response.json()
    assert response.status == 400, answer
    assert answer["error"]["code"] == "invalid_options"
    assert field in answer["error"]["message"]
    assert await batches_in(ingest) == 0
