"""Token guessing and cross-batch access are refused on every surface that reads a batch.

Ingest (``GET /api/v1/batches/{id}``, its ``/archive`` and ``/retry``, and the presigned result
links it hands out) and the notifier (``/ws/batches/{id}``, ``/events/batches/{id}``) must answer
every wrong credential and every malformed id exactly as they answer an unknown batch: the same
status, headers that matter and body, so nothing (names, counts, existence) tells a real batch
from a guessed one. Tokens are 256-bit random secrets kept only as SHA-256: neither the database
nor the services' logs ever hold one.

tests/ingest/test_api.py and tests/notifier/test_access.py already cover no token, one wrong
token, another batch's token and malformed ``since`` values; they are not repeated here.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import aiohttp
import pytest
from sqlalchemy import select
from yarl import URL

from db.connection import Database
from db.models import Base
from db.repository import Repository
from harness.objectstore import put_bytes
from harness.progress import seed_batch
from harness.stack import StartStack
from harness.subscribers import stream_url
from ingest.presign import Presigner
from photoenhance.contracts.states import ImageState
from photoenhance.contracts.tokens import hash_token
from photoenhance.s3 import minio_client
from photoenhance.settings import Settings
from tests.ingest.conftest import RunningIngest, StartIngest, image_file, record_result
from tests.notifier.conftest import RunningNotifier
from tests.notifier.test_access import answer as stream_answer

pytestmark = pytest.mark.security

#: Random, well-formed tokens tried per surface: what someone guessing at a token would send.
RANDOM_GUESSES = 20

#: A well-formed batch id that no test stores.
UNKNOWN_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"

#: Path segments (as sent, percent-encoded) that are no valid batch id but still reach the
#: batch routes: too long, leading dot or dash, non-ASCII, NUL, newline, encoded dots, a space.
MALFORMED_IDS = ["a" * 65, ".hidden", "-rf", "%C3%BCn%C3%AF", "x%00y", "x%0A", "%2e%2e", "a%20b", "%F0%9F%94%91"]

#: A header longer than the HTTP parser takes (8190 bytes): refused before any route runs.
OVERSIZED = "x" * 9000

Answer = tuple[int, str, bytes]


def credential_guesses(own: str, other: str) -> dict[str, str]:
    """Credentials that must not open the batch whose token is ``own``; ``other`` is another
    batch's valid token."""
    guesses = {
        "another batch's token": other,
        "the stored hash of the token": hash_token(own),
        "the token less its last character": own[:-1],
        "the token plus one character": own + "A",
        "the token twice": own + own,
        "a 6000-character token": "t" * 6000,
        "a unicode token": "ünïcødé-🔑-" + own[:12],
    }
    if own.swapcase() != own:
        guesses["the token in swapped case"] = own.swapcase()
    guesses.update({f"random guess {i}": secrets.token_urlsafe(32) for i in range(RANDOM_GUESSES)})
    return guesses


def differing(answers: dict[str, Answer], expected: Answer) -> dict[str, tuple[int, bytes]]:
    """The cases whose answer is not ``expected``, with what they got instead (for the message)."""
    return {case: (got[0], got[2][:200]) for case, got in answers.items() if got != expected}


# -- ingest ----------------------------------------------------------------------------------------
#: The ingest routes that read one batch: (method, path after /api/v1/batches/{id}).
INGEST_SURFACES = {"status": ("GET", ""), "archive": ("GET", "/archive"), "retry": ("POST", "/retry")}


async def ingest_answer(
    ingest: RunningIngest, method: str, path: str, *, authorization: str | None = None, query: str | None = None
) -> Answer:
    """Status, content type and body; ``path`` and ``query`` go out exactly as written."""
    url = URL(ingest.url(path) + ("" if query is None else f"?token={query}"), encoded=True)
    headers = {} if authorization is None else {"Authorization": authorization}
    async with ingest.http.request(method, url, headers=headers) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.read()


@pytest.mark.parametrize("surface", sorted(INGEST_SURFACES))
async def test_ingest_answers_every_guess_like_an_unknown_batch(
    surface: str, start_ingest: StartIngest, settings: Settings
) -> None:
    # No retry rate limit here: the controls below retry twice in a row, to show both credentials open it.
    ingest = await start_ingest(settings.replace(api_keys=("server-key",), retry_min_interval_s=0.0))
    a = await ingest.create([image_file("a-private-name.jpg")])
    b = await ingest.create([image_file("b-private-name.jpg"), image_file("b-second.jpg")])
    method, suffix = INGEST_SURFACES[surface]
    target = b["batch_id"]

    def path(batch_id: str) -> str:
        return f"/api/v1/batches/{batch_id}{suffix}"

    async def ask(batch_id: str, **kwargs: Any) -> Answer:
        return await ingest_answer(ingest, method, path(batch_id), **kwargs)

    # The reference: a well-formed id that does not exist, asked with a real (B's) token.
    unknown = await ask(UNKNOWN_ID, authorization=f"Bearer {b['token']}")
    assert unknown[0] == 404 and unknown[1].startswith("application/json")
    assert json.loads(unknown[2]) == {"error": {"code": "batch_not_found", "message": "no such batch"}}

    answers: dict[str, Answer] = {}
    for case, guess in credential_guesses(b["token"], a["token"]).items():
        answers[f"{case} (header)"] = await ask(target, authorization=f"Bearer {guess}")
        answers[f"{case} (query)"] = await ask(target, query=quote(guess, safe=""))
    answers["an empty bearer"] = await ask(target, authorization="Bearer ")
    answers["an empty query token"] = await ask(target, query="")
    answers["invalid UTF-8 and NUL in the query"] = await ask(target, query="%FF%FE%00")
    answers["the right token under Basic"] = await ask(target, authorization=f"Basic {b['token']}")
    answers["the right token without a scheme"] = await ask(target, authorization=b["token"])
    if surface != "archive":  # JSON routes take the token from the header only (it leaks from URLs)
        answers["the right token in the query"] = await ask(target, query=b["token"])
    for raw_id in [*MALFORMED_IDS, target.lower()]:
        answers[f"id {raw_id!r} with B's token"] = await ask(raw_id, authorization=f"Bearer {b['token']}")
    answers["an unknown batch with an API key"] = await ask(UNKNOWN_ID, authorization="Bearer server-key")
    assert differing(answers, unknown) == {}
    assert not [case for case, got in answers.items() if b"private-name" in got[2]]

    # A header past the parser's limit is refused before routing: the same for a real batch and
    # an unknown one, apart from the echo of the client's own request line.
    real = await ask(target, authorization=f"Bearer {OVERSIZED}")
    absent = await ask(UNKNOWN_ID, authorization=f"Bearer {OVERSIZED}")
    assert real[0] == absent[0] == 400
    assert real[2].replace(target.encode(), UNKNOWN_ID.encode()) == absent[2]

    # The control: B's own token (and the API key) open it.
    assert (await ask(target, authorization=f"Bearer {b['token']}"))[0] in (200, 202)
    assert (await ask(target, authorization="Bearer server-key"))[0] in (200, 202)


async def test_a_refused_retry_changes_nothing(start_ingest: StartIngest, settings: Settings) -> None:
    """A retry with a wrong credential must not re-run (and so re-bill, or reveal) anything."""
    ingest = await start_ingest(settings)
    a = await ingest.create([image_file("a.jpg")])
    b = await ingest.create([image_file("bad.jpg")])
    failed = await record_result(
        ingest.repository, b["batch_id"], settings.s3_input_bucket, "bad.jpg", etag="e1", size=10, output_key=None,
        code="processing_failed",  # one a retry can help: the control below must reset it
    )
    retry = f"/api/v1/batches/{b['batch_id']}/retry"
    for credential in (a["token"], secrets.token_urlsafe(32), hash_token(b["token"])):
        status, _, _ = await ingest_answer(ingest, "POST", retry, authorization=f"Bearer {credential}")
        assert status == 404
    image = await ingest.repository.get_image(failed.id)
    batch = await ingest.repository.get_batch(b["batch_id"])
    assert image is not None and batch is not None
    assert (image.state, image.attempts, image.updated_at) == (ImageState.FAILED, failed.attempts, failed.updated_at)
    assert (batch.failed, batch.completed) == (1, 0)
    # The control: the batch's own token retries it.
    status, _, body = await ingest_answer(ingest, "POST", retry, authorization=f"Bearer {b['token']}")
    assert (status, json.loads(body)["retried"]) == (202, 1)


async def test_a_batch_without_a_token_opens_only_with_an_api_key(
    start_ingest: StartIngest, settings: Settings, repository: Repository, notifier: RunningNotifier,
    http: aiohttp.ClientSession,
) -> None:
    """Direct uploads make batches with no token hash: no token, however crafted, opens one."""
    ingest = await start_ingest(settings.replace(api_keys=("server-key",)))
    await repository.create_batch("holiday-2024", input_bucket="in", options={}, source="direct")
    guesses = ["", "None", "null", hash_token(""), secrets.token_urlsafe(32), "Server-Key", "server-key2"]
    status_path = "/api/v1/batches/{}"
    unknown = await ingest_answer(ingest, "GET", status_path.format(UNKNOWN_ID), authorization="Bearer x")
    for guess in guesses:
        got = await ingest_answer(ingest, "GET", status_path.format("holiday-2024"), authorization=f"Bearer {guess}")
        assert got == unknown, guess
    for transport in ("ws", "sse"):
        ws = transport == "ws"
        refused = await stream_answer(http, stream_url(notifier.base_url, transport, "nothing", token="x"), websocket=ws)
        for guess in guesses:
            url = stream_url(notifier.base_url, transport, "holiday-2024", token=guess)
            assert await stream_answer(http, url, websocket=ws) == refused, (transport, guess)
    assert notifier.hub.subscriber_count("holiday-2024") == 0
    ok = await ingest_answer(ingest, "GET", status_path.format("holiday-2024"), authorization="Bearer server-key")
    assert ok[0] == 200


@pytest.mark.objectstore
async def test_a_result_link_opens_only_its_own_object(store_settings: Settings, start_ingest: StartIngest) -> None:
    """The link is signed over its object, its download name and its lifetime: pointing it at
    another batch's result, changing how the store serves it, or using it late are refused."""
    ingest = await start_ingest(store_settings)
    client = minio_client(store_settings)
    created = {}
    for label in ("a", "b"):
        batch = await ingest.create([image_file("photo.jpg")])
        key = f"{batch['batch_id']}/photo.jpg"
        await asyncio.to_thread(put_bytes, client, store_settings.s3_output_bucket, key, f"{label} result".encode(), "image/jpeg")
        await record_result(
            ingest.repository, batch["batch_id"], store_settings.s3_input_bucket, "photo.jpg",
            etag=f"e{label}", size=10, output_key=key,
        )
        created[label] = batch
    a, b = created["a"], created["b"]
    status, _, body = await ingest_answer(ingest, "GET", f"/api/v1/batches/{a['batch_id']}", authorization=f"Bearer {a['token']}")
    assert status == 200
    link = json.loads(body)["images"][0]["result"]["url"]
    parts = urlsplit(link)
    query = parse_qsl(parts.query, keep_blank_values=True)

    def with_query(pairs: list[tuple[str, str]], path: str = parts.path) -> str:
        return urlunsplit(parts._replace(path=path, query=urlencode(pairs, quote_via=quote)))

    past = Presigner(store_settings, clock=lambda: datetime.now(UTC) - timedelta(seconds=store_settings.presign_expiry_s + 120))
    misuses = {
        "B's key under A's signature": with_query(query, parts.path.replace(a["batch_id"], b["batch_id"])),
        "another download name": with_query(
            [(k, 'attachment; filename="photo.html"' if k == "response-content-disposition" else v) for k, v in query]
        ),
        "served as text/html": with_query([*query, ("response-content-type", "text/html")]),
        "without its signature": with_query([(k, v) for k, v in query if k != "X-Amz-Signature"]),
        "a longer lifetime": with_query([(k, "604800" if k == "X-Amz-Expires" else v) for k, v in query]),
        "expired": past.download_url(store_settings.s3_output_bucket, f"{a['batch_id']}/photo.jpg", "photo.jpg"),
    }
    async with aiohttp.ClientSession() as anonymous:
        for case, url in misuses.items():
            async with anonymous.get(URL(url, encoded=True)) as response:
                content = await response.read()
            assert response.status == 403, f"{case}: {response.status}"
            assert b"result" not in content, case
        async with anonymous.get(URL(link, encoded=True)) as response:
            assert (response.status, await response.read()) == (200, b"a result")


@pytest.mark.objectstore
async def test_tokens_are_kept_only_as_hashes_and_never_logged(start_stack: StartStack, database: Database) -> None:
    """After a token has been used on every surface of the real services (header and query,
    API, ZIP, retry, WebSocket, SSE), no table cell and no line of either service's log holds it
    (nor its first half); the batch row holds its SHA-256."""
    stack = await start_stack(processor=False)
    async with aiohttp.ClientSession() as http:
        async with http.post(stack.ingest_url + "/api/v1/batches", json={"files": [image_file("a.jpg")]}) as response:
            assert response.status == 201
            created = await response.json()
        batch_id, token = created["batch_id"], created["token"]
        bearer = {"Authorization": f"Bearer {token}"}
        api = f"{stack.ingest_url}/api/v1/batches/{batch_id}"
        async with http.get(api, headers=bearer) as response:
            assert response.status == 200
        async with http.get(f"{api}/archive", params={"token": token}) as response:
            assert response.status == 200
            await response.read()
        async with http.post(f"{api}/retry", headers=bearer) as response:
            assert response.status == 202
        async with http.ws_connect(stream_url(stack.notifier_url, "ws", batch_id, token=token)) as ws:
            assert json.loads((await ws.receive()).data)["kind"] == "snapshot"
        async with http.get(stream_url(stack.notifier_url, "sse", batch_id, token=token)) as response:
            assert response.status == 200
            first = b""
            while b"snapshot" not in first:  # a retry hint may come first
                first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 30)
    await asyncio.to_thread(stack.ingest.stop)  # flush and close both logs before reading them
    await asyncio.to_thread(stack.notifier.stop)

    cells = await every_cell(database)
    assert hash_token(token) in cells
    for fragment in (token, token[: len(token) // 2]):
        assert not [cell for cell in cells if fragment in cell]
        assert fragment not in stack.logs()


async def every_cell(database: Database) -> list[str]:
    """Every non-empty value in every table of the schema, as text (JSON columns serialised)."""
    cells: list[str] = []
    async with database.read() as conn:
        for table in Base.metadata.sorted_tables:
            for row in (await conn.execute(select(table))).all():
                for value in row:
                    if value is None:
                        continue
                    cells.append(value if isinstance(value, str) else json.dumps(value, default=str))
    return cells


# -- notifier --------------------------------------------------------------------------------------
@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_the_notifier_answers_every_guess_like_an_unknown_batch(
    transport: str, repository: Repository, notifier: RunningNotifier, http: aiohttp.ClientSession
) -> None:
    mine, other = [await seed_batch(repository, batch_id, 1) for batch_id in ("mine", "other")]

    async def ask(url: str, headers: dict[str, str] | None = None) -> Answer:
        # As a URL object the path goes out exactly as written (a string would have "%2e%2e"
        # normalised away by the client, testing nothing); aiohttp takes either.
        sent = URL(url, encoded=True)
        return await stream_answer(http, sent, websocket=transport == "ws", headers=headers)  # type: ignore[arg-type]

    def url(batch_id: str, raw_query: str = "") -> str:
        plain = stream_url(notifier.base_url, transport, batch_id)
        return f"{plain}?{raw_query}" if raw_query else plain

    unknown = await ask(url("nobatch", f"token={mine.token}"))
    assert unknown[0] == 404 and b'"batch_not_found"' in unknown[2]
    answers: dict[str, Answer] = {}
    for case, guess in credential_guesses(mine.token, other.token).items():
        answers[f"{case} (query)"] = await ask(url("mine", "token=" + quote(guess, safe="")))
        answers[f"{case} (header)"] = await ask(url("mine"), {"Authorization": f"Bearer {guess}"})
    answers["invalid UTF-8 and NUL in the query"] = await ask(url("mine", "token=%FF%FE%00"))
    answers["the right token under Basic"] = await ask(url("mine"), {"Authorization": f"Basic {mine.token}"})
    answers["the right token without a scheme"] = await ask(url("mine"), {"Authorization": mine.token})
    answers["the token as another parameter"] = await ask(url("mine", "access_token=" + mine.token))
    for raw_id in MALFORMED_IDS:
        answers[f"id {raw_id!r}"] = await ask(url(raw_id, f"token={mine.token}"))
    assert differing(answers, unknown) == {}
    assert not [case for case, got in answers.items() if b"img000" in got[2]]

    real = await ask(url("mine"), {"Authorization": f"Bearer {OVERSIZED}"})
    absent = await ask(url("nobatch"), {"Authorization": f"Bearer {OVERSIZED}"})
    assert real[0] == absent[0] == 400
    assert real[2].replace(b"mine", b"nobatch") == absent[2]
    # Not one refusal subscribed to anything.
    assert notifier.hub.subscriber_count("mine") == 0
    assert notifier.metric("notifier_bound_batches") == 0
