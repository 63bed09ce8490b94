"""The sorting helpers against numpy's stable argsort."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.state.packing import pack_order, radix_order, sort_pairs
from tests.support.budget import examples


@settings(max_examples=examples(150), deadline=None)
@given(
    n=st.sampled_from([0, 1, 5, 2047, 2048, 5000]),
    bits=st.integers(0, 40),
    distinct=st.integers(1, 50),
    seed=st.integers(0, 2**32 - 1),
)
def test_pack_order_is_a_stable_argsort(n: int, bits: int, distinct: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Few distinct values, so ties (whose order a stable sort keeps) are everywhere.
    values = rng.integers(0, 1 << bits, distinct) if bits else np.zeros(distinct, np.int64)
    keys = values[rng.integers(0, distinct, n)].astype(np.int64)
    expected = np.argsort(keys, kind="stable")
    assert np.array_equal(pack_order(keys), expected)
    b = int(keys.max()).bit_length() if n else 0
    assert np.array_equal(radix_order(keys, b), expected)


def test_radix_passes_cover_every_bit() -> None:
    # Keys differing only in one bit: the first, the last, and either side of each border
    # between passes (three of 11 bits for 32-bit keys, two of 11 and 12 for 23), with the
    # other passes all alike (and so skipped); and bits just below the top.
    for bits in (32, 23):
        for bit in (0, 10, 11, 12, 15, 16, 17, 21, 22, bits - 1):
            keys = np.tile(np.array([1 << bit, 0], dtype=np.int64), 3000)
            assert np.array_equal(radix_order(keys, bits), np.argsort(keys, kind="stable"))
    for bit in (0, 15, 16, 17, 31):
        keys = np.tile(np.array([1 << bit, 0], dtype=np.int64), 3000)
        assert np.array_equal(radix_order(keys, bit + 1), np.argsort(keys, kind="stable"))


def test_sort_pairs_orders_by_first_then_second() -> None:
    rng = np.random.default_rng(1)
    first, second = rng.integers(0, 50, 4000), rng.integers(0, 1 << 20, 4000)
    assert np.array_equal(sort_pairs(first, second), np.lexsort((second, first)))


def test_negative_keys_still_sort_stably() -> None:
    keys = np.tile(np.array([-3, -1, 2, 1, -3], dtype=np.int64), 1000)
    assert np.array_equal(pack_order(keys), np.argsort(keys, kind="stable"))


@settings(max_examples=examples(100), deadline=None)
@given(
    n=st.sampled_from([2048, 3000, 70_000]),
    low=st.integers(-(2**40), 2**40),
    span=st.integers(1, 200_000),
    seed=st.integers(0, 2**32 - 1),
)
def test_keys_of_a_small_range_sort_stably_by_counting(
    n: int, low: int, span: int, seed: int
) -> None:
    # Ranges up to twice the keys plus 65,536 take the counting sort, wider ones the others;
    # both sides of that line, with offsets far from zero.
    keys = np.random.default_rng(seed).integers(low, low + span, n).astype(np.int64)
    assert np.array_equal(pack_order(keys), np.argsort(keys, kind="stable"))


@settings(max_examples=examples(100), deadline=None)
@given(
    n=st.integers(0, 5000),
    slots=st.integers(1, 9000),
    seed=st.integers(0, 2**32 - 1),
    sorted_second=st.booleans(),
)
def test_sort_pairs_of_reads_in_log_order(
    n: int, slots: int, seed: int, sorted_second: bool
) -> None:
    # Cutoffs of reads in log order never decrease, which lets the pair sort use the slots
    # alone; unsorted ones must still be ordered by both.
    rng = np.random.default_rng(seed)
    first = rng.integers(0, slots, n).astype(np.int64)
    second = rng.integers(0, 50, n).astype(np.int64)
    if sorted_second:
        second = np.sort(second)
    assert np.array_equal(sort_pairs(first, second), np.lexsort((second, first)))


@settings(max_examples=examples(100), deadline=None)
@given(
    n=st.sampled_from([1, 50, 3000, 20_000]),
    slots=st.integers(1, 70_000),
    low=st.integers(-(2**62), 2**62),
    span=st.sampled_from([1, 60, 10**6, 2**40, 2**62]),
    seed=st.integers(0, 2**32 - 1),
)
def test_sort_pairs_takes_any_second_key(
    n: int, slots: int, low: int, span: int, seed: int
) -> None:
    # Time keys (negative ones, and far from zero) as the second key: packed when slots and
    # the time keys' span fit in 62 bits together, np.lexsort otherwise; stable either way.
    rng = np.random.default_rng(seed)
    first = rng.integers(0, slots, n).astype(np.int64)
    top = min(low + span, 2**63 - 1)
    second = rng.integers(low, top, n, endpoint=True).astype(np.int64)
    second[rng.integers(0, n, n // 3)] = second[0]  # ties, which keep their order
    assert np.array_equal(sort_pairs(first, second), np.lexsort((second, first)))


def test_sort_pairs_with_a_negative_first_key_falls_back_to_lexsort() -> None:
    # Packing shifts the first key left: a negative one would overflow into garbage order.
    first = np.array([-(2**62), 3, -1, 3, 0], dtype=np.int64)
    second = np.array([5, -7, 2, -7, 1], dtype=np.int64)
    assert np.array_equal(sort_pairs(first, second), np.lexsort((second, first)))
