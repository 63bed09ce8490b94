"""White-box checks of the vectorised tables' building blocks against plain Python."""

from __future__ import annotations

import bisect
import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.state.clock import EpochClock
from engine.state.epoch import EpochWrites
from engine.state.keyindex import KeyIndex
from engine.state.packing import expand_ranges, pack_order, sort_pairs
from engine.state.regions import Prefix, RegionStore
from engine.state.search import gallop_ranges, search_ranges
from engine.state.segscan import _packed_extreme_scan, segment_extreme_scan, segment_float_sums
from engine.state.spec import AggregateSpec
from engine.state.windowed import WindowedTable
from engine.windows import Sliding
from tests.support.budget import examples

_KEYS = st.one_of(st.integers(0, 50), st.integers(-(2**63), 2**63 - 1))


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.lists(_KEYS, max_size=30), max_size=6))
def test_key_index_gives_stable_dense_slots(batches: list[list[int]]) -> None:
    index = KeyIndex()
    seen: dict[int, int] = {}
    for batch in batches:
        keys = np.array(batch, dtype=np.int64)
        slots = index.register(keys)
        for k, s in zip(batch, slots.tolist(), strict=True):
            assert seen.setdefault(k, s) == s
        assert len(set(seen.values())) == len(seen)  # injective
        assert all(0 <= s < index.n_slots for s in seen.values())
        probe = np.array([*seen, 2**62 + 11], dtype=np.int64)
        looked = index.lookup(probe).tolist()
        assert looked[:-1] == [seen[k] for k in seen]
        assert looked[-1] == -1 or looked[-1] not in seen.values()
        if not index._direct:  # the hash table holds every key once, at load <= 1/4
            live = int(np.count_nonzero(index._table_slots >= 0))
            assert live == len(seen) and live * 2 <= len(index._table_slots)


def test_key_index_grows_its_hash_table_as_batches_of_new_keys_arrive() -> None:
    rng = np.random.default_rng(7)
    index = KeyIndex()
    seen: list[np.ndarray] = []
    for _ in range(12):
        batch = rng.integers(2**40, 2**41, 3_000)
        batch[:500] = batch[500:1000]  # repeats within the batch
        if seen:
            batch[1000:1500] = seen[-1][:500]  # and keys of earlier batches
        index.register(batch)
        seen.append(batch)
        keys = np.unique(np.concatenate(seen))
        live = int(np.count_nonzero(index._table_slots >= 0))
        assert live == len(keys) == index.n_slots
        # At most half full, and at most 4 cells per key (beyond the smallest table).
        assert live * 2 <= len(index._table_slots) <= max(1024, 4 * live)
        assert sorted(index.lookup(keys).tolist()) == list(range(len(keys)))


def test_key_index_switches_to_hashing_for_wide_keys() -> None:
    index = KeyIndex()
    small = index.register(np.arange(10, dtype=np.int64))
    assert small.tolist() == list(range(10))
    wide = index.register(np.array([2**40, -3, 5, 2**40], dtype=np.int64))
    assert wide[2] == 5 and wide[0] == wide[3] and len({*wide.tolist()}) == 3
    assert index.lookup(np.array([7, 2**40, 99], dtype=np.int64)).tolist()[:2] == [7, wide[0]]
    assert index.lookup(np.array([99], dtype=np.int64)).tolist() == [-1]


@settings(max_examples=examples(300), deadline=None)
@given(
    st.lists(st.integers(0, 9), max_size=40).map(sorted),
    st.lists(
        st.tuples(st.integers(0, 45), st.integers(0, 45), st.integers(-1, 10), st.integers(-3, 45)),
        min_size=1,
        max_size=8,
    ),
)
def test_searches_match_bisect(values: list[int], lanes: list[tuple[int, int, int, int]]) -> None:
    n = len(values)
    arr = np.array(values, dtype=np.int64)
    lo = np.array([min(a, n) for a, _, _, _ in lanes])
    hi = np.array([max(min(a, n), min(b, n)) for a, b, _, _ in lanes])
    x = np.array([v for _, _, v, _ in lanes])
    hint = np.array([h for _, _, _, h in lanes])
    for side, fn in (("left", bisect.bisect_left), ("right", bisect.bisect_right)):
        want = [fn(values, int(v), int(a), int(b)) for a, b, v in zip(lo, hi, x, strict=True)]
        assert search_ranges(arr, lo, hi, x, side).tolist() == want  # type: ignore[arg-type]
        assert gallop_ranges(arr, lo, hi, hint, x, side).tolist() == want  # type: ignore[arg-type]


def _bits(x: float) -> int:
    return int(struct.unpack("<q", struct.pack("<d", x))[0])


def _sum_bits(x: float) -> int:
    """Bits of a sum, every NaN as one: IEEE 754 leaves which operand's payload NaN + NaN
    keeps to the implementation, and CPython's own ``a + b`` keeps the second one's on
    some builds (the compiler may swap the operands of a commutative add)."""
    return -1 if math.isnan(x) else _bits(x)


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(st.integers(0, 70), max_size=8),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.data(),
)
def test_segment_float_sums_are_sequential(
    lengths: list[int], init: float, data: st.DataObject
) -> None:
    total = sum(lengths)
    values = data.draw(st.lists(st.floats(allow_nan=True), min_size=total, max_size=total))
    starts = np.cumsum([0, *lengths[:-1]]).astype(np.int64) if lengths else np.zeros(0, np.int64)
    inits = np.full(len(lengths), init)
    got = segment_float_sums(
        np.array(values, dtype=np.float64), starts, np.array(lengths, dtype=np.int64), inits
    )
    want: list[float] = []
    pos = 0
    for n in lengths:
        acc = init
        for v in values[pos : pos + n]:
            acc = acc + v
            want.append(acc)
        pos += n
    assert [_sum_bits(x) for x in got] == [_sum_bits(x) for x in want]


# Narrow values take the packed single-pass scan; full-range ones the doubling scan, whose
# segments longer than 32 get an accumulate each.
_SCAN_VALUES = st.one_of(st.integers(-50, 50), st.integers(-(2**63), 2**63 - 1))


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(st.lists(_SCAN_VALUES, min_size=1, max_size=40), min_size=1, max_size=6),
    st.booleans(),
)
def test_segment_extreme_scan(segments: list[list[int]], largest: bool) -> None:
    flat = np.array([v for s in segments for v in s], dtype=np.int64)
    starts = np.cumsum([0, *[len(s) for s in segments[:-1]]]).astype(np.int64)
    seg_of = np.repeat(np.arange(len(segments)), [len(s) for s in segments])
    got = segment_extreme_scan(flat, starts, seg_of, largest=largest).tolist()
    pick = max if largest else min
    want = [pick(s[: i + 1]) for s in segments for i in range(len(s))]
    assert got == want


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize(("spread", "packed"), [(2**56, True), (2**57, True), (2**58, False)])
def test_segment_extreme_scan_at_the_packing_width(
    largest: bool, spread: int, packed: bool
) -> None:
    """8 segments (3 bits) and values spanning 2 x ``spread``: packed up to 62 bits in all,
    the doubling scan beyond; the same answers either way."""
    segments = [[0, spread // 3, -spread], [spread, -1], [5], [-spread, 0, 7]] * 2
    flat = np.array([v for s in segments for v in s], dtype=np.int64)
    starts = np.cumsum([0, *[len(s) for s in segments[:-1]]]).astype(np.int64)
    seg_of = np.repeat(np.arange(len(segments)), [len(s) for s in segments])
    pick = max if largest else min
    want = [pick(s[: i + 1]) for s in segments for i in range(len(s))]
    assert (_packed_extreme_scan(flat, seg_of, largest) is not None) == packed
    assert segment_extreme_scan(flat, starts, seg_of, largest=largest).tolist() == want


def test_packing_helpers_fall_back_when_fields_are_wide() -> None:
    wide = np.array([2**62, 3, 2**62, 0], dtype=np.int64)
    assert pack_order(wide).tolist() == [3, 1, 0, 2]
    assert sort_pairs(wide, np.array([5, 1, 4, 9])).tolist() == [3, 1, 2, 0]
    at, owner = expand_ranges(np.array([10, 0, 5]), np.array([2, 0, 3]))
    assert at.tolist() == [10, 11, 5, 6, 7] and owner.tolist() == [0, 0, 2, 2, 2]


def test_epoch_latest_write_below_each_cutoff() -> None:
    ep = EpochWrites(np.array([4, 2, 4, 4, 2]), np.array([10, 10, 11, 12, 12]))
    assert ep.rank.tolist() == [0, 0, 1, 2, 1]
    cut = ep.cutoffs(np.array([9, 10, 11, 12, 12]), before=False)
    assert cut.tolist() == [0, 2, 3, 5, 5]
    assert ep.cutoffs(np.array([12]), before=True).tolist() == [3]
    latest = ep.latest(np.array([4, 4, 2, 2, -1]), np.array([0, 3, 3, 5, 5]))
    assert latest.tolist() == [-1, 2, 1, 4, -1]


def _latest_by_scanning(writes: list[int], slot: int, cutoff: int) -> int:
    return max((i for i in range(min(cutoff, len(writes))) if writes[i] == slot), default=-1)


# Slots up to 2**61: keys far too wide to pack with a write index, as a KeyIndex never hands out.
_SLOTS = st.one_of(st.integers(0, 5), st.integers(0, 2**61))


@settings(max_examples=examples(200), deadline=None)
@given(st.data(), st.lists(_SLOTS, min_size=1, max_size=40))
def test_epoch_latest_matches_a_scan_of_the_writes(data: st.DataObject, writes: list[int]) -> None:
    n = len(writes)
    slot = st.one_of(st.sampled_from(writes), _SLOTS, st.just(-1))
    reads = data.draw(st.lists(st.tuples(slot, st.integers(0, n)), max_size=40))
    ep = EpochWrites(np.array(writes, dtype=np.int64), np.arange(n, dtype=np.int64))
    slots = np.array([r[0] for r in reads], dtype=np.int64)
    cutoffs = np.array([r[1] for r in reads], dtype=np.int64)
    expected = [-1 if s < 0 else _latest_by_scanning(writes, s, c) for s, c in reads]
    assert ep.latest(slots, cutoffs).tolist() == expected


def test_epoch_latest_over_many_reads_in_slot_order_and_not() -> None:
    """Thousands of reads (the radix-sorted search path), of keys with and without writes."""
    rng = np.random.default_rng(7)
    writes = rng.integers(0, 3_000, 5_000)
    ep = EpochWrites(writes, np.arange(len(writes), dtype=np.int64))
    slots = rng.integers(0, 6_000, 20_000)
    cutoffs = np.sort(rng.integers(0, len(writes) + 1, len(slots)))
    got = ep.latest(slots, cutoffs)
    last_seen: dict[int, int] = {}
    expected = np.empty(len(slots), dtype=np.int64)
    w = 0
    for i, (slot, cut) in enumerate(zip(slots.tolist(), cutoffs.tolist(), strict=True)):
        while w < cut:
            last_seen[int(writes[w])] = w
            w += 1
        expected[i] = last_seen.get(slot, -1)
    assert (got == expected).all()
    assert (got >= 0).sum() > 1_000 and (got < 0).sum() > 1_000  # both kinds of answer


def test_epoch_latest_with_a_hot_slot_few_reads_and_cutoffs_that_go_back() -> None:
    """One slot with most of the writes, reads of it whose cutoffs jump back and forth (the
    walk searches back), and a handful of reads among many writes (it gallops far ahead)."""
    rng = np.random.default_rng(11)
    writes = np.where(rng.random(8_000) < 0.6, 7, rng.integers(0, 500, 8_000))
    ep = EpochWrites(writes, np.arange(len(writes), dtype=np.int64))
    # seen[c, s]: the last write of slot s among the first c writes.
    seen = np.full((len(writes) + 1, 501), -1, dtype=np.int64)
    for i, slot in enumerate(writes.tolist()):
        seen[i + 1] = seen[i]
        seen[i + 1, slot] = i
    for reads in (3, 5_000):
        slots = np.where(rng.random(reads) < 0.7, 7, rng.integers(0, 501, reads))
        cutoffs = rng.integers(0, len(writes) + 1, reads)  # not sorted: back and forth
        assert (ep.latest(slots, cutoffs) == seen[cutoffs, slots]).all()


@settings(max_examples=examples(150), deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(st.integers(0, 6), st.integers(-30, 30), st.integers(-9, 9)), max_size=25
        ),
        min_size=1,
        max_size=8,
    ),
    st.booleans(),
)
def test_region_store_matches_sorted_lists(
    batches: list[list[tuple[int, int, int]]], combine: bool
) -> None:
    """Insert mode keeps every record sorted by (tk, arrival); combine mode sums per tk."""
    if combine:
        store = RegionStore(
            {"tk": np.dtype(np.int64), "v": np.dtype(np.int64)},
            (Prefix("cv", "v", "sum"),),
            {"v": "sum"},
        )
    else:
        store = RegionStore(
            {"tk": np.dtype(np.int64), "v": np.dtype(np.int64)}, (Prefix("pv", "v", "min"),)
        )
    store.compact_floor, store.compact_share = 0, 0.0  # compact eagerly: exercise it
    model: dict[int, list[tuple[int, int]]] = {}
    for batch in batches:
        if combine:
            merged: dict[tuple[int, int], int] = {}
            for slot, tk, v in batch:
                merged[(slot, tk)] = merged.get((slot, tk), 0) + v
            rows = sorted((s, t, v) for (s, t), v in merged.items())
        else:
            rows = sorted(batch, key=lambda r: (r[0], r[1]))  # stable: arrival order on ties
        for slot, tk, v in rows:
            recs = model.setdefault(slot, [])
            if combine and any(t == tk for t, _ in recs):
                recs[:] = [(t, w + v if t == tk else w) for t, w in recs]
            else:
                recs.insert(bisect.bisect_right([t for t, _ in recs], tk), (tk, v))
        if rows:
            slots = np.array([r[0] for r in rows], dtype=np.int64)
            store.add(
                slots, {"tk": np.array([r[1] for r in rows]), "v": np.array([r[2] for r in rows])}
            )
        for slot, recs in model.items():
            base, n = int(store.start[slot]), int(store.length[slot])
            assert store.cols["tk"][base : base + n].tolist() == [t for t, _ in recs]
            assert store.cols["v"][base : base + n].tolist() == [v for _, v in recs]
            if combine:
                want = np.cumsum([v for _, v in recs]).tolist()
                assert store.cols["cv"][base : base + n].tolist() == want
            else:
                assert (
                    store.cols["pv"][base : base + n].tolist()
                    == np.minimum.accumulate([v for _, v in recs]).tolist()
                )
        # Windows (a, b]: in lane order, hints carried over from earlier batches (the store's
        # own, and stale or wild ones: a hint may only change the speed).
        lanes = [
            (s, a, a + w) for s in range(-1, 8) for a in (-31, -5, 0, 12, 30) for w in (0, 7, 99)
        ]
        ws = np.array([lane[0] for lane in lanes], dtype=np.int64)
        wa = np.array([lane[1] for lane in lanes], dtype=np.int64)
        wb = np.array([lane[2] for lane in lanes], dtype=np.int64)
        tks = {slot: [t for t, _ in recs] for slot, recs in model.items()}
        want_a = [bisect.bisect_right(tks.get(s, []), a) for s, a, _ in lanes]
        want_b = [
            max(bisect.bisect_right(tks.get(s, []), b), r)
            for (s, _, b), r in zip(lanes, want_a, strict=True)
        ]
        wild = np.array([0, 3, 10**6, -5, 1, 40, 7, 2] * (len(store.hint) // 8 + 1))[
            : len(store.hint)
        ]
        for hints in (None, wild.astype(np.int64)):
            ra, rb = store.rank2(ws, wa, wb, hints)
            assert ra.tolist() == want_a and rb.tolist() == want_b
        probe_slots = np.array([s for s in range(8) for _ in range(3)], dtype=np.int64)
        probe_x = np.array([x for _ in range(8) for x in (-31, 0, 12)], dtype=np.int64)
        got = store.rank(probe_slots, probe_x, "right").tolist()
        want = [
            bisect.bisect_right([t for t, _ in model.get(s, [])], x)
            for s, x in zip(probe_slots.tolist(), probe_x.tolist(), strict=True)
        ]
        assert got == want


def _keys_homed_at_the_end(count: int, bits: int) -> np.ndarray:
    """Wide keys whose home cells (in a table of ``2**bits`` cells) are its last three."""
    probe = KeyIndex()
    probe._bits = bits
    found: list[np.ndarray] = []
    rng = np.random.default_rng(5)
    while sum(len(f) for f in found) < count:
        candidates = rng.integers(2**40, 2**50, 200_000, dtype=np.int64)
        found.append(candidates[probe._hash(candidates) >= (1 << bits) - 3])
    keys = np.unique(np.concatenate(found))[:count]
    assert len(keys) == count
    return keys


def test_key_index_places_keys_that_run_past_the_end_of_the_table() -> None:
    """Keys crowding the last cells wrap around to the start: in the compiled probe that
    registers them, in the lookups, and in a resize's placement in cell order."""
    keys = _keys_homed_at_the_end(300, bits=10)
    index = KeyIndex()
    first = index.register(keys[:100])  # switches to hashing: a table of 2**10 cells
    assert index._bits == 10 and first.tolist() == list(range(100))
    assert index.lookup(keys[:100]).tolist() == first.tolist()
    index._resize(index._bits)  # the same keys again, placed in cell order
    assert index.lookup(keys[:100]).tolist() == first.tolist()
    more = index.register(keys)  # probing from the end, around to the start
    assert more[:100].tolist() == first.tolist()
    assert more.tolist() == list(range(300))  # new keys: next slots, in order of appearance
    assert index.lookup(np.array([2**41], dtype=np.int64)).tolist() == [-1]


@settings(max_examples=examples(150), deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 3), st.integers(-6, 10)), min_size=1, max_size=12),
        min_size=1,
        max_size=12,
    ),
    st.integers(0, 4),
)
def test_expiry_keeps_the_write_positions_that_first_and_last_rely_on(
    epochs: list[list[tuple[int, int]]], lateness: int
) -> None:
    """A sliding first/last table finds a range's earliest (latest) record within ``disp`` of
    its ends, because a record's write position ``wp`` is increasing in write order ``o`` and
    within ``disp`` of its place. Expiry rebuilds regions; the invariant must survive it, and
    the table's next write position for a slot must stay above every stored one."""
    table = WindowedTable(AggregateSpec("last", Sliding(5, lateness)))
    seq, now = 0, 0
    for epoch in epochs:
        times = []
        for _key, step in epoch:
            now += step  # steps back in time too
            times.append(now)
        seqs = np.arange(seq, seq + len(epoch), dtype=np.int64)
        seq += len(epoch)
        table.set_clock(EpochClock.of(int(seqs[0]), np.array(times, dtype=np.int64)))
        keys = np.array([k for k, _ in epoch], dtype=np.int64)
        table.write_epoch(keys, seqs, np.array(times, dtype=np.int64), keys)
        table.end_epoch()
        store = table._store
        for slot in np.flatnonzero(store.length > 0).tolist():
            at = int(store.start[slot]) + np.arange(int(store.length[slot]))
            o, wp = store.cols["o"][at], store.cols["wp"][at]
            by_o = np.argsort(o, kind="stable")
            assert np.all(np.diff(wp[by_o]) > 0)
            assert np.all(np.abs(np.arange(len(at)) - wp) <= store.disp[slot])
            assert int(table._writes[slot]) > int(wp.max())
