"""Which worker owns a key: deterministic, the same for one id and for arrays, and even."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.executors.sharding import Shard, owner_of_int, owner_of_key, owners_of_ids
from engine.keys import KeyCodec, Unordered
from tests.support.budget import examples

_I64 = st.integers(-(2**63), 2**63 - 1)


@settings(max_examples=examples(200))
@given(ids=st.lists(_I64, max_size=50), workers=st.integers(1, 64))
def test_arrays_and_single_ids_agree_and_stay_in_range(ids: list[int], workers: int) -> None:
    owners = owners_of_ids(np.array(ids, dtype=np.int64), workers)
    assert owners.tolist() == [owner_of_int(i, workers) for i in ids]
    assert all(0 <= o < workers for o in owners.tolist())


def test_python_keys_use_the_same_owner_for_ints() -> None:
    assert [owner_of_key(i, 7) for i in range(100)] == owners_of_ids(np.arange(100), 7).tolist()
    assert owner_of_key(("a", 1), 5) == owner_of_key(("a", 1), 5)  # no per-process seed


def _pairs(n: int) -> np.ndarray:
    a = np.repeat(np.arange(n), 50)
    b = np.tile(np.arange(50), n) * 7919
    return KeyCodec().encode(Unordered("a", "b"), {"a": a, "b": b})


@pytest.mark.parametrize("workers", [2, 3, 5, 16])
@pytest.mark.parametrize(
    "ids",
    [
        np.arange(100_000),  # user ids
        np.arange(0, 1_600_000, 16),  # strided
        np.arange(100_000) << 40,  # only high bits vary
        _pairs(2_000),  # packed user pairs
    ],
    ids=["consecutive", "strided", "high-bits", "pairs"],
)
def test_keys_spread_evenly(ids: np.ndarray, workers: int) -> None:
    counts = np.bincount(owners_of_ids(ids, workers), minlength=workers)
    assert counts.min() > 0.95 * len(ids) / workers
    assert counts.max() < 1.05 * len(ids) / workers


def test_shard_rows_cover_every_row_once() -> None:
    for count in (1, 2, 3, 7):
        rows = [Shard(i, count).rows(10) for i in range(count)]
        assert [i for r in rows for i in list(range(10))[r]] == list(range(10))


@pytest.mark.parametrize("workers", [2, 3, 16])
@pytest.mark.parametrize(
    "ids", [np.arange(1 << 40, (1 << 40) + 200_000), _pairs(4_000)], ids=["wide", "pairs"]
)
def test_a_workers_keys_fill_its_hash_tables_evenly(ids: np.ndarray, workers: int) -> None:
    """Ownership must not decide where keys land in a worker's KeyIndex (if it hashed like
    the index, one worker's keys would share the top bits of their cells)."""
    from engine.state.keyindex import KeyIndex

    owned = ids[owners_of_ids(ids, workers) == 0]
    index = KeyIndex()
    index._bits = 16
    regions = np.bincount(index._hash(owned) >> 10, minlength=64)
    assert regions.min() > 0.8 * regions.mean()
    assert regions.max() < 1.2 * regions.mean()
