"""An unknown batch and a known batch with a wrong token take the same time to refuse.

Issue 17 measured, over 200 interleaved requests, medians of 1,757 vs 1,845 µs on ingest and
1,713 vs 1,782 µs on the notifier: only a real id's row was fetched and built into a record, so
the answer's timing told which ids exist. A first mend still left 1,415 vs 1,435 µs (p = 5.6e-5)
in CI, because a found row's timestamps and JSON were parsed and the absent row's NULLs were not.
Both now do the same work down to the row processing (db/access_lookup.py).

The check compares the two distributions, never single timings: the requests are interleaved
(so drift in the machine's load hits both alike) and a Mann-Whitney U test asks whether one
distribution sits above the other. On a shared machine a test of timing is noisy; the sample is
large enough that the old difference shows every time and chance alone rarely does.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from db.repository import Repository
from harness.progress import seed_batch
from photoenhance.settings import Settings
from tests.ingest.conftest import StartIngest, image_file
from tests.notifier.conftest import StartNotifier

pytestmark = pytest.mark.security

#: Requests of each kind, after the warm-up.
SAMPLES = 400
WARM_UP = 60

#: Below this p-value the two kinds are told apart.
ALPHA = 0.001

#: An unknown id of the right shape (a ULID nobody created).
UNKNOWN_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


def mann_whitney_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test (normal approximation, ties corrected)."""
    pooled = sorted([(x, 0) for x in a] + [(x, 1) for x in b])
    ranks = [0.0] * len(pooled)
    i = 0
    tie_term = 0.0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        t = j - i + 1
        tie_term += t**3 - t
        i = j + 1
    n1, n2 = len(a), len(b)
    r1 = sum(r for r, (_, group) in zip(ranks, pooled) if group == 0)
    u1 = r1 - n1 * (n1 + 1) / 2
    n = n1 + n2
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
    z = (u1 - n1 * n2 / 2) / sigma
    return math.erfc(abs(z) / math.sqrt(2))


async def timed_pairs(
    http: aiohttp.ClientSession, unknown: Callable[[], Awaitable[int]], wrong: Callable[[], Awaitable[int]]
) -> tuple[list[float], list[float]]:
    """Latencies of both kinds, interleaved in a random order per pair."""
    order = random.Random(17)
    times: dict[str, list[float]] = {"unknown": [], "wrong": []}
    calls = {"unknown": unknown, "wrong": wrong}
    for n in range(WARM_UP + SAMPLES):
        kinds = ["unknown", "wrong"]
        order.shuffle(kinds)
        for kind in kinds:
            started = time.perf_counter()
            status = await calls[kind]()
            elapsed = time.perf_counter() - started
            assert status == 404, kind
            if n >= WARM_UP:
                times[kind].append(elapsed)
    return times["unknown"], times["wrong"]


def verdict(unknown: list[float], wrong: list[float]) -> str:
    return (
        f"medians {statistics.median(unknown) * 1e6:.0f} vs {statistics.median(wrong) * 1e6:.0f} µs, "
        f"p = {mann_whitney_p(unknown, wrong):.2g}"
    )


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_ingest_refuses_an_unknown_id_and_a_wrong_token_in_the_same_time(
    start_ingest: StartIngest, settings: Settings
) -> None:
    ingest = await start_ingest(settings)
    created = await ingest.create([image_file()])
    wrong_token = {"Authorization": "Bearer " + "x" * 43}

    async def get(batch_id: str) -> int:
        async with ingest.http.get(ingest.url(f"/api/v1/batches/{batch_id}"), headers=wrong_token) as response:
            await response.read()
            return response.status

    unknown, wrong = await timed_pairs(ingest.http, lambda: get(UNKNOWN_ID), lambda: get(created["batch_id"]))
    assert mann_whitney_p(unknown, wrong) >= ALPHA, verdict(unknown, wrong)


async def test_the_notifier_refuses_an_unknown_id_and_a_wrong_token_in_the_same_time(
    start_notifier: StartNotifier, repository: Repository, http: aiohttp.ClientSession
) -> None:
    notifier = await start_notifier()
    batch = await seed_batch(repository, "01BX5ZZKBKACTAV9WEVGEMMVRZ", 1)

    async def get(batch_id: str) -> int:
        async with http.get(f"{notifier.base_url}/events/batches/{batch_id}?token={'x' * 43}") as response:
            await response.read()
            return response.status

    unknown, wrong = await timed_pairs(http, lambda: get(UNKNOWN_ID), lambda: get(batch.batch_id))
    assert mann_whitney_p(unknown, wrong) >= ALPHA, verdict(unknown, wrong)
