"""The access lookup: the stored batch when it exists, None otherwise, through one query shape."""

from __future__ import annotations

import pytest

from db.repository import Repository
from harness.progress import seed_batch

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


async def test_a_stored_batch_comes_back_with_its_own_values(repository: Repository) -> None:
    seeded = await seed_batch(repository, "01BX5ZZKBKACTAV9WEVGEMMVRZ", 2)

    found = await repository.batch_for_access(seeded.batch_id)

    assert found is not None
    assert found == await repository.get_batch(seeded.batch_id)
    # Its NULL columns stay NULL: the decoy only answers for an absent batch.
    assert found.completed_at is None and found.retried_at is None


async def test_an_absent_batch_is_none_though_the_decoy_row_was_read(repository: Repository) -> None:
    await seed_batch(repository, "01BX5ZZKBKACTAV9WEVGEMMVRZ", 1)

    assert await repository.batch_for_access("01ARZ3NDEKTSV4RRFFQ69G5FAV") is None
    # The decoy's id (26 zeros) is not a batch anyone can read, even asked for by name.
    assert await repository.batch_for_access("0" * 26) is None
