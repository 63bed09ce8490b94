"""The streaming k-way merge of partitions into epochs, against a literal heapq merge."""

from __future__ import annotations

import heapq
import random
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.errors import LogError
from engine.log import (
    Column,
    Epoch,
    InMemorySource,
    PartitionBatch,
    PartitionSpec,
    StringColumn,
)
from engine.merge import merge_log
from tests.support.budget import examples
from tests.support.partition_logs import (
    GenPartition,
    ListSource,
    batch_of,
    chunked_source,
    logs,
    tied_partitions,
)


def array(column: Column) -> np.ndarray[Any, Any]:
    assert isinstance(column, np.ndarray)
    return column


def heap_merge(parts: Sequence[GenPartition]) -> list[tuple[str, int, int]]:
    """The log by definition: repeatedly take the head with the smallest key."""
    heap: list[tuple[int, str, int, int, int, int]] = []
    for i, p in enumerate(parts):
        if p.offsets:
            heap.append((p.ts[0], p.spec.topic, p.spec.partition, p.offsets[0], i, 0))
    heapq.heapify(heap)
    out: list[tuple[str, int, int]] = []
    while heap:
        _, topic, partition, offset, i, j = heapq.heappop(heap)
        out.append((topic, partition, offset))
        p = parts[i]
        if j + 1 < len(p.offsets):
            heapq.heappush(heap, (p.ts[j + 1], topic, partition, p.offsets[j + 1], i, j + 1))
    return out


def flatten(epochs: Sequence[Epoch]) -> list[tuple[object, ...]]:
    """Every event as (seq, topic, partition, offset, ts, kind, payload...), in seq order."""
    rows: list[tuple[object, ...]] = []
    for e in epochs:
        for kind, ev in e.events.items():
            assert ev.kind == kind
            payload = [
                c.decode().tolist() if isinstance(c, StringColumn) else c.tolist()
                for _, c in sorted(ev.columns.items())
            ]
            for i in range(len(ev)):
                rows.append(
                    (
                        int(ev.seq[i]),
                        e.topics[ev.topic[i]],
                        int(ev.partition[i]),
                        int(ev.offset[i]),
                        int(ev.ts[i]),
                        kind,
                        *(col[i] for col in payload),
                    )
                )
    rows.sort(key=itemgetter(0))
    return rows


def check_epochs(epochs: Sequence[Epoch], parts: Sequence[GenPartition], size: int) -> None:
    """Epochs are the heapq merge, cut into chunks of ``size``, with consistent fields."""
    expected = heap_merge(parts)
    total = len(expected)
    assert [len(e) for e in epochs] == [min(size, total - s) for s in range(0, total, size)]
    kinds = tuple(sorted({p.spec.kind for p in parts}))
    topics = tuple(sorted({p.spec.topic for p in parts}))
    for i, e in enumerate(epochs):
        assert e.index == i
        assert e.seq_start == i * size and e.seq_end == e.seq_start + len(e)
        assert e.kinds == kinds and e.topics == topics and set(e.events) == set(kinds)
        assert e.ts.dtype == np.int64 and e.kind.dtype == np.int8 and len(e.ts) == len(e)
        for code, kind in enumerate(kinds):
            ev = e.events[kind]
            assert ev.seq.tolist() == [e.seq_start + j for j in np.flatnonzero(e.kind == code)]
            assert ev.ts.tolist() == e.ts[e.kind == code].tolist()
            dtypes = [str(a.dtype) for a in (ev.seq, ev.ts, ev.topic, ev.partition, ev.offset)]
            assert dtypes == ["int64", "int64", "int16", "int32", "int64"]
            want = {"uid", "word"} if kind == "msg" else {"uid", "weight"}
            assert set(ev.columns) == want or (not ev.columns and not len(ev))
            for c in ev.columns.values():
                assert len(c) == len(ev)
    rows = flatten(epochs)
    assert [r[0] for r in rows] == list(range(total))
    assert [r[1:4] for r in rows] == expected
    by_key = {
        (p.spec.topic, p.spec.partition, o): (t, p.spec.kind, u, w)
        for p in parts
        for o, t, u, w in zip(p.offsets, p.ts, p.uid, p.word, strict=True)
    }
    for r in rows:
        ts, kind, uid, word = by_key[(r[1], r[2], r[3])]  # type: ignore[index]
        assert (r[4], r[5], r[6]) == (ts, kind, uid)
        assert r[7] == (word if kind == "msg" else uid / 4)


@settings(max_examples=examples(200), deadline=None)
@given(parts=logs(), seed=st.integers(0, 2**32 - 1), size=st.integers(1, 120))
@example(parts=tied_partitions(), seed=0, size=1)
@example(parts=tied_partitions(), seed=1, size=4)
@example(parts=tied_partitions(), seed=2, size=120)
def test_merge_equals_heapq_merge(parts: list[GenPartition], seed: int, size: int) -> None:
    source = chunked_source(parts, random.Random(seed))
    check_epochs(list(merge_log(source, epoch_size=size)), parts, size)


def signature(epochs: Sequence[Epoch]) -> list[object]:
    """Everything an epoch says, with strings decoded (dictionaries may differ)."""
    out: list[object] = []
    for e in epochs:
        out.append((e.index, e.seq_start, e.seq_end, e.ts.tolist(), e.kind.tolist()))
        out.append((e.kinds, e.topics))
        for kind, ev in sorted(e.events.items()):
            out.append((kind, ev.seq.tolist(), ev.ts.tolist(), ev.topic.tolist()))
            out.append((ev.partition.tolist(), ev.offset.tolist()))
            for name, c in sorted(ev.columns.items()):
                data = c.decode() if isinstance(c, StringColumn) else c
                out.append((name, str(data.dtype), data.tolist()))
    return out


@settings(max_examples=examples(150), deadline=None)
@given(
    parts=logs(), seeds=st.tuples(st.integers(0, 999), st.integers(0, 999)), size=st.integers(1, 40)
)
@example(parts=tied_partitions(), seeds=(0, 1), size=3)
def test_chunking_and_interleaving_do_not_change_epochs(
    parts: list[GenPartition], seeds: tuple[int, int], size: int
) -> None:
    first = list(merge_log(chunked_source(parts, random.Random(seeds[0])), epoch_size=size))
    second = list(merge_log(chunked_source(parts, random.Random(seeds[1])), epoch_size=size))
    assert signature(first) == signature(second)


def gen(
    topic: str, partition: int, ts: list[int], kind: str = "msg", start: int = 0
) -> GenPartition:
    n = len(ts)
    spec = PartitionSpec(topic, partition, kind)
    uid = [partition * 1000 + i for i in range(n)]
    return GenPartition(spec, list(range(start, start + n)), ts, uid, ["a"] * n)


def test_backwards_timestamps_keep_partition_order() -> None:
    parts = [gen("t", 0, [5, 1, 7, 2]), gen("t", 1, [3, 6])]
    epochs = list(merge_log(chunked_source(parts, random.Random(1)), epoch_size=100))
    # running max: p0 5,5,7,7; p1 3,6 -> p1@3, p0@5, p0@1, p1@6, p0@7, p0@2
    got = [(ev_p, off) for _, _, ev_p, off, *_ in flatten(epochs)]
    assert got == [(1, 0), (0, 0), (0, 1), (1, 1), (0, 2), (0, 3)]
    check_epochs(epochs, parts, 100)


def test_ties_break_by_topic_name_then_partition_then_offset() -> None:
    parts = [gen("b", 0, [1, 1]), gen("a", 1, [1]), gen("a", 0, [1], kind="edge")]
    epochs = list(merge_log(chunked_source(parts, random.Random(2)), epoch_size=2))
    assert [r[1:4] for r in flatten(epochs)] == [("a", 0, 0), ("a", 1, 0), ("b", 0, 0), ("b", 0, 1)]
    assert [len(e) for e in epochs] == [2, 2]
    assert epochs[0].kind.tolist() == [0, 1] and epochs[0].kinds == ("edge", "msg")


def test_empty_log_has_no_epochs_and_empty_partitions_are_fine() -> None:
    parts = [gen("t", 0, []), gen("u", 3, [], kind="edge")]
    assert list(merge_log(chunked_source(parts, random.Random(0)), epoch_size=5)) == []
    assert list(merge_log(InMemorySource([]), epoch_size=1)) == []


def test_kinds_without_events_in_an_epoch_are_present_and_typed() -> None:
    parts = [gen("t", 0, [1, 2, 3]), gen("u", 0, [10], kind="edge")]
    epochs = list(merge_log(chunked_source(parts, random.Random(0)), epoch_size=3))
    edge = epochs[0].events["edge"]
    assert len(edge) == 0 and array(edge.columns["uid"]).dtype == np.int64
    assert array(edge.columns["weight"]).dtype == np.float64
    word = epochs[1].events["msg"].columns["word"]
    assert isinstance(word, StringColumn) and len(word) == 0


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_epoch_size_must_be_a_positive_int(size: int) -> None:
    with pytest.raises(LogError, match="epoch_size must be an int >= 1"):
        merge_log(InMemorySource([]), epoch_size=size)


def test_merge_is_streaming() -> None:
    """Epochs come out after a few batches, not after reading the whole source."""
    n = 10_000
    parts = [gen("t", p, list(range(p, 2 * n, 2))) for p in range(2)]
    items = [
        batch_of(p, lo, lo + 100, final=lo + 100 >= n) for lo in range(0, n, 100) for p in parts
    ]
    source = ListSource([p.spec for p in parts], items)
    epochs = merge_log(source, epoch_size=200)
    first = next(epochs)
    assert len(first) == 200 and first.ts.tolist() == list(range(200))
    assert source.pulled <= 8, source.pulled
    count = 1
    for epoch in epochs:
        count += 1
        # read ahead of what was handed out: bounded, whatever the log's length
        assert source.pulled * 100 - epoch.seq_end <= 600, (source.pulled, epoch.seq_end)
    assert source.pulled == len(items) and count == 2 * n // 200


def test_a_silent_partition_blocks_until_its_first_batch() -> None:
    a, b = gen("t", 0, list(range(100))), gen("t", 1, [50, 500])
    items = [batch_of(a, i, i + 10, final=i == 90) for i in range(0, 100, 10)]
    items.append(batch_of(b, 0, 2, final=True))
    source = ListSource([a.spec, b.spec], items)
    epochs = merge_log(source, epoch_size=10)
    first = next(epochs)
    # b says nothing until the last batch, and it might have started before ts 0
    assert source.pulled == len(items)
    check_epochs([first, *epochs], [a, b], 10)


def test_finished_partitions_do_not_hold_back_the_others() -> None:
    a, b = gen("t", 0, [0, 1]), gen("t", 1, list(range(1000)))
    items = [batch_of(a, 0, 2, final=True)]
    items += [batch_of(b, i, i + 10, final=i == 990) for i in range(0, 1000, 10)]
    source = ListSource([a.spec, b.spec], items)
    first = next(merge_log(source, epoch_size=10))
    assert first.ts.tolist() == [0, 0, 1, 1, 2, 3, 4, 5, 6, 7]
    assert source.pulled <= 3


def specs2() -> list[PartitionSpec]:
    return [PartitionSpec("t", 0, "msg"), PartitionSpec("t", 1, "msg")]


def raw(
    partition: int,
    offsets: Sequence[int],
    *,
    final: bool = True,
    columns: Mapping[str, Column] | None = None,
    kind: str = "msg",
    topic: str = "t",
) -> PartitionBatch:
    o = np.array(offsets, dtype=np.int64)
    cols = {"uid": np.arange(len(o), dtype=np.int64)} if columns is None else columns
    return PartitionBatch(topic, partition, kind, o, np.zeros(len(o), np.int64), cols, final)


def run(items: list[PartitionBatch], specs: list[PartitionSpec] | None = None) -> list[Epoch]:
    return list(merge_log(ListSource(specs or specs2(), items), epoch_size=4))


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([raw(0, [1, 2]), raw(7, [1])], "topic 't' partition 7, which its partitions"),
        (
            [raw(0, [1, 3, 3]), raw(1, [])],
            "topic 't' partition 0 do not increase: offset 3 follows 3",
        ),
        (
            [raw(0, [1, 2], final=False), raw(0, [2]), raw(1, [])],
            "topic 't' partition 0 do not increase: batch starts at offset 2 after offset 2",
        ),
        ([raw(0, [5]), raw(0, [6]), raw(1, [])], "topic 't' partition 0 after its final batch"),
        (
            [raw(0, [5]), raw(1, [3], final=False)],
            "without a final batch for topic 't' partition 1",
        ),
        (
            [raw(0, [5, 6], columns={"uid": np.zeros(3, np.int64)})],
            "topic 't' partition 0 at offset 5: column 'uid' has 3 rows but the batch has 2",
        ),
        (
            [raw(0, [5], columns={"uid": np.zeros(1, np.int64)}), raw(1, [9], columns={})],
            "topic 't' partition 1 at offset 9 does not match the columns of kind 'msg' .*"
            "topic 't' partition 0 at offset 5.*missing \\['uid'\\]",
        ),
        (
            [raw(0, [5]), raw(1, [9], columns={"uid": np.zeros(1, np.int32)})],
            "partition 1 at offset 9 .* with another type \\['uid \\(int32 vs int64\\)'\\]",
        ),
        (
            [raw(0, [5]), raw(1, [9], columns={"uid": np.zeros(1, np.int64), "x": np.zeros(1)})],
            "unexpected \\['x'\\]",
        ),
        ([raw(0, [5], kind="edge")], "says kind 'edge' but the partition is declared as 'msg'"),
        (
            [
                raw(
                    0,
                    [1],
                    columns={"w": StringColumn(np.array([2], np.int32), np.array(["a"], object))},
                )
            ],
            "partition 0 at offset 1: column 'w' has codes outside its dictionary",
        ),
        ([raw(0, [1], columns={"w": [1]})], "column 'w' must be a 1-D numpy array"),  # type: ignore[dict-item]
    ],
)
def test_malformed_input_raises_log_error_naming_the_place(
    items: list[PartitionBatch], message: str
) -> None:
    with pytest.raises(LogError, match=message):
        run(items)


def test_mismatched_ts_and_float_offsets_are_rejected() -> None:
    bad_ts = PartitionBatch("t", 0, "msg", np.array([1, 2]), np.array([1]), {}, True)
    with pytest.raises(LogError, match="partition 0 at offset 1: ts has 1 rows but offsets has 2"):
        run([bad_ts])
    floats = PartitionBatch("t", 0, "msg", np.array([1.0]), np.array([1]), {}, True)
    with pytest.raises(LogError, match="offsets must be a 1-D integer array, got 1-D float64"):
        run([floats])


def test_duplicate_partition_declaration_is_rejected() -> None:
    with pytest.raises(LogError, match="declares topic 't' partition 0 more than once"):
        run([], [PartitionSpec("t", 0, "msg"), PartitionSpec("t", 0, "edge")])


def test_gaps_in_offsets_and_bare_final_markers_are_accepted() -> None:
    items = [
        raw(0, [3, 10], final=False),
        raw(1, [], final=False, columns={}),
        raw(1, [0]),
        raw(0, [], columns={}),
    ]
    epochs = run(items)
    assert [e.events["msg"].offset.tolist() for e in epochs] == [[3, 10, 0]]
    assert array(epochs[0].events["msg"].columns["uid"]).tolist() == [0, 1, 0]


def test_the_frontier_partition_releases_its_records_up_to_its_last() -> None:
    """Records tied with the frontier's own last key go out without waiting for more input."""
    a, b = gen("t", 0, [0, 5, 5, 6]), gen("t", 1, [10, 11])
    items = [batch_of(a, 0, 3, final=False), batch_of(b, 0, 1, final=False)]
    items += [batch_of(a, 3, 4, final=True), batch_of(b, 1, 2, final=True)]
    source = ListSource([a.spec, b.spec], items)
    first = next(merge_log(source, epoch_size=3))
    assert first.ts.tolist() == [0, 5, 5] and source.pulled == 2
