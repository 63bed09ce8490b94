"""Which worker owns a key: deterministic, the same for one id and for arrays, and even; and
balanced ownership when a few keys carry much of the load."""

from __future__ import annotations

import pickle
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum, IntEnum
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from engine.executors.sharding import (
    Ownership,
    Shard,
    balanced_ownership,
    owner_of_int,
    owner_of_key,
    owners_of_ids,
)
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


_NUMBER_FORMS = (
    int,
    float,
    np.int32,
    np.int64,
    np.float32,
    np.float64,
    Decimal,
    Fraction,
    complex,
)


@settings(max_examples=examples(200))
@given(
    value=st.integers(-(2**24), 2**24) | st.sampled_from([0.5, -2.5, 1e30, 2.0**70, 0.1]),
    forms=st.lists(st.sampled_from(_NUMBER_FORMS), min_size=2, max_size=4, unique=True),
    workers=st.integers(2, 9),
)
def test_python_keys_that_are_equal_have_one_owner(
    value: float, forms: list[type], workers: int
) -> None:
    """The serial executor's dicts make one key of True, 1, 1.0 and np.int32(1); a worker
    that owned one of them apart would never see the other's writes."""
    keys: list[Any] = []
    for form in forms:
        try:
            keys.append(form(value))
        except OverflowError:  # np.int32(1e30)
            continue
    if value in (0, 1):
        keys += [bool(value), np.bool_(value)]
    # One key as the oracle's dicts see it (hash and ==): int(0.5) is another key, and so is
    # np.float32(1e30), although numpy's == says it equals 1e30.
    keys = [k for k in keys if k in {value: None}]
    assume(len(keys) >= 2)
    keys += [(k, "s") for k in keys] + [(np.str_("s"), k) for k in keys]
    singles = {owner_of_key(k, workers) for k in keys if not isinstance(k, tuple)}
    assert len(singles) == 1
    assert (
        len({owner_of_key(k, workers) for k in keys if isinstance(k, tuple) and k[1] == "s"}) == 1
    )
    assert (
        len({owner_of_key(k, workers) for k in keys if isinstance(k, tuple) and k[0] == "s"}) == 1
    )


class _Colour(str, Enum):
    RED = "red"


class _Level(IntEnum):
    HIGH = 3


_TZ = timezone(timedelta(hours=1))


@pytest.mark.parametrize(
    "keys",
    [
        ["red", _Colour.RED, np.str_("red")],
        [3, _Level.HIGH, 3.0],
        [datetime(2020, 1, 1, 12, tzinfo=timezone.utc), datetime(2020, 1, 1, 13, tzinfo=_TZ)],
        [np.datetime64("2020-01-01"), np.datetime64("2020-01-01T00:00")],
        [np.timedelta64(5, "ns"), np.timedelta64(5000, "ps")],
        [2**70, 2.0**70, Decimal(2**70)],
        [Decimal("0.1"), Fraction(1, 10), Decimal("0.10")],
        [frozenset({"a", 1}), frozenset({1.0, np.str_("a")})],
        [("a", (1, 2.0)), (np.str_("a"), (True, 2))],
    ],
    ids=[
        "str-enum",
        "int-enum",
        "aware",
        "datetime64",
        "timedelta64",
        "wide",
        "0.1",
        "set",
        "nest",
    ],
)
@pytest.mark.parametrize("workers", [2, 3, 7])
def test_keys_that_a_dict_makes_one_have_one_owner(keys: list[Any], workers: int) -> None:
    assert all(k in {keys[0]: None} for k in keys)  # one key as the oracle's dicts see it
    assert len({owner_of_key(k, workers) for k in keys}) == 1


@pytest.mark.parametrize(
    "key",
    [
        Decimal("1e1000000"),
        Decimal("1e-5000"),
        (Decimal("1e5000"), "a"),
        10**5000,
        np.timedelta64(5, "D"),
    ],
    ids=["huge decimal", "tiny decimal", "in a tuple", "huge int", "days"],
)
def test_keys_beyond_int64_or_of_numpy_time_get_an_owner_at_once(key: Any) -> None:
    """Owners of huge numbers come from their numeric hash: no int of a million digits is
    built, and no repr beyond Python's 4300-digit limit is asked for."""
    assert 0 <= owner_of_key(key, 3) < 3


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


# -- balanced ownership ----------------------------------------------------------------------


@settings(max_examples=examples(200), deadline=None)  # the first call compiles the kernel
@given(ids=st.lists(_I64, max_size=50), workers=st.integers(1, 64))
def test_uniform_ownership_is_the_hash(ids: list[int], workers: int) -> None:
    keys = np.array(ids, dtype=np.int64)
    uniform = Ownership.uniform(workers)
    assert uniform.is_uniform
    assert uniform.owners(keys).tolist() == owners_of_ids(keys, workers).tolist()
    # The same ranges through the weighted path (a pin on an id nobody asks for).
    ranges = Ownership(workers, uniform.bounds, np.array([0]), np.array([workers - 1]))
    assert not ranges.is_uniform
    expected = owners_of_ids(keys, workers)
    expected[keys == 0] = workers - 1
    assert ranges.owners(keys).tolist() == expected.tolist()


@settings(max_examples=examples(200), deadline=None)
@given(
    ids=st.lists(_I64, max_size=50),
    cuts=st.lists(st.integers(0, 2**32), max_size=63),
    pin=_I64,
)
def test_an_unpinned_id_belongs_to_the_last_range_starting_at_or_below_its_hash(
    ids: list[int], cuts: list[int], pin: int
) -> None:
    """Uneven and empty ranges (equal bounds), 1-64 workers, against a search of the bounds."""
    workers = len(cuts) + 1
    bounds = np.array([0, *sorted(cuts), 2**32], dtype=np.int64)
    ownership = Ownership(workers, bounds, np.array([pin]), np.array([workers - 1]))
    keys = np.array(ids, dtype=np.int64)
    x = keys.view(np.uint64)
    h = (((x ^ (x >> np.uint64(32))) * np.uint64(0xBF58476D1CE4E5B9)) >> np.uint64(32)).view(
        np.int64
    )
    expected = np.searchsorted(bounds[1:workers], h, side="right")
    expected[keys == pin] = workers - 1
    assert ownership.owners(keys).tolist() == expected.tolist()


def _loads_per_worker(ownership: Ownership, ids: np.ndarray, loads: np.ndarray) -> np.ndarray:
    return np.bincount(ownership.owners(ids), weights=loads, minlength=ownership.workers)


@pytest.mark.parametrize("workers", [2, 3, 16])
def test_a_hot_key_and_heavy_hitters_are_balanced(workers: int) -> None:
    """The skewed scenario's shape: one key 40% of the load, 30 keys another 30%, 100,000
    keys the rest. The hash alone leaves the hot key's worker with its 40% plus a hash share
    of everything else; balanced, every worker is within a few % of 1/W (or the hot key alone,
    when 40% is more than 1/W)."""
    rng = np.random.default_rng(3)
    ids = rng.choice(2**40, 100_031, replace=False).astype(np.int64)
    loads = np.ones(len(ids))
    loads[:31] = 0
    rest = float(loads.sum())
    loads[0] = rest * 0.4 / 0.3
    loads[1:31] = rest * 0.3 / 0.3 / 30
    total = float(loads.sum())
    balanced = balanced_ownership(ids, loads, workers)
    assert ids[0] in balanced.pinned.tolist()
    got = _loads_per_worker(balanced, ids, loads) / total
    best = max(1 / workers, 0.4)
    assert got.max() <= best * 1.03, got
    hashed = _loads_per_worker(Ownership.uniform(workers), ids, loads) / total
    assert hashed.max() > got.max()


def test_balanced_ownership_is_deterministic_and_pickles() -> None:
    ids = np.arange(1000, dtype=np.int64)
    loads = np.ones(1000)
    loads[[5, 7]] = 200  # two equal heavy keys: ties go by id
    a = balanced_ownership(ids, loads, 2)
    b = balanced_ownership(ids[::-1].copy(), loads[::-1].copy(), 2)
    assert a.pinned.tolist() == b.pinned.tolist() == [5, 7]
    assert a.pinned_owner.tolist() == b.pinned_owner.tolist() == [0, 1]
    assert a.bounds.tolist() == b.bounds.tolist()
    again = pickle.loads(pickle.dumps(a))
    assert again.owners(ids).tolist() == a.owners(ids).tolist()


def test_no_heavy_key_keeps_the_hash() -> None:
    ids = np.arange(10_000, dtype=np.int64)
    assert balanced_ownership(ids, np.ones(10_000), 4).is_uniform
    assert balanced_ownership(ids[:0], np.ones(0), 4).is_uniform
    assert balanced_ownership(ids, np.ones(10_000), 1).is_uniform


def test_when_pinned_keys_are_all_the_load_the_rest_is_spread_evenly() -> None:
    ids = np.array([1, 2, 3], dtype=np.int64)
    ownership = balanced_ownership(ids, np.array([5.0, 3.0, 1.0]), 2)
    assert sorted(ownership.pinned.tolist()) == [1, 2, 3]
    assert ownership.owners(ids).tolist() == [0, 1, 1]
    assert ownership.bounds.tolist() == Ownership.uniform(2).bounds.tolist()
