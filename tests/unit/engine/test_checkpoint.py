"""Checkpoints and resume: the merge continues exactly, and the batch executor resumed from any
checkpoint finishes with the uninterrupted run's output bytes."""

from __future__ import annotations

import io
import random
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.checkpoint import EngineSnapshot, PositionTracker
from engine.errors import CheckpointError, LogError
from engine.examples.social import generate_social, social_source
from engine.executors.batch import BatchExecutor
from engine.executors.runtime import EpochRuntime
from engine.executors.serial import SerialExecutor
from engine.executors.sharding import Shard
from engine.log import Epoch, InMemorySource, StringColumn, TopicTable
from engine.merge import merge_log
from engine.output import collect
from engine.pipeline import Pipeline, Record, Update
from engine.planner import plan
from engine.positions import LogPosition, PartitionPosition
from tests.support.budget import THOROUGH, examples, size
from tests.support.checkpoints import (
    EpochSink,
    FromPosition,
    MemoryStore,
    check_resumes,
    every,
    order_revealing,
    spam_with_timers,
    table_of,
)
from tests.support.engine_logs import LogSpec, logs, pipelines
from tests.support.partition_logs import GenPartition, chunked_source
from tests.support.partition_logs import logs as merge_logs

# -- the merge ------------------------------------------------------------------------------


def _events(epochs: Sequence[Epoch]) -> list[object]:
    """Every epoch's cut and events (empty kinds' columns aside: a resumed source need not
    describe the columns of a kind it has no records of)."""
    out: list[object] = []
    for e in epochs:
        out.append((e.index, e.seq_start, e.seq_end, e.ts.tolist(), e.kind.tolist(), e.kinds))
        for kind, ev in sorted(e.events.items()):
            out.append((kind, ev.seq.tolist(), ev.ts.tolist(), ev.topic.tolist()))
            out.append((ev.partition.tolist(), ev.offset.tolist()))
            if len(ev):
                for name, c in sorted(ev.columns.items()):
                    data = c.decode() if isinstance(c, StringColumn) else c
                    out.append((name, data.tolist()))
    return out


def _after(parts: Sequence[GenPartition], position: LogPosition) -> list[GenPartition]:
    out = []
    for p in parts:
        pos = position.partitions.get((p.spec.topic, p.spec.partition))
        start = 0 if pos is None else sum(o < pos.next_offset for o in p.offsets)
        out.append(
            GenPartition(p.spec, p.offsets[start:], p.ts[start:], p.uid[start:], p.word[start:])
        )
    return out


@settings(max_examples=examples(60), deadline=None)
@given(
    parts=merge_logs(),
    seeds=st.tuples(st.integers(0, 999), st.integers(0, 999)),
    size=st.integers(1, 30),
)
def test_a_resumed_merge_continues_with_the_same_epochs(
    parts: list[GenPartition], seeds: tuple[int, int], size: int
) -> None:
    full = list(merge_log(chunked_source(parts, random.Random(seeds[0])), epoch_size=size))
    tracker = PositionTracker()
    for c, epoch in enumerate(full):
        tracker.advance(epoch)
        position = tracker.position
        # The position: offset after, and max ts of, each partition's records so far.
        seen: dict[tuple[str, int], list[tuple[int, int]]] = {}
        for e in full[: c + 1]:
            for ev in e.events.values():
                for t, p, o, ts in zip(ev.topic, ev.partition, ev.offset, ev.ts, strict=True):
                    seen.setdefault((e.topics[t], int(p)), []).append((int(o), int(ts)))
        assert position.partitions == {
            k: PartitionPosition(max(o for o, _ in v) + 1, max(t for _, t in v))
            for k, v in seen.items()
        }
        assert (position.seq, position.epoch) == (epoch.seq_end, c + 1)
        # Rest of the log, delivered in other chunks and another interleaving.
        rest = chunked_source(_after(parts, position), random.Random(seeds[1] + c))
        resumed = list(merge_log(rest, epoch_size=size, start=position))
        assert _events(resumed) == _events(full[c + 1 :])


def _ab_source(parts: Sequence[Sequence[int]], batch_size: int = 1) -> InMemorySource:
    return InMemorySource.from_tables(TopicTable("t", "a", table_of(parts)), batch_size=batch_size)


def test_timestamps_going_backwards_across_the_checkpoint() -> None:
    # Both partitions reach ts 100 before the checkpoint and go back after it: the records
    # after it keep their place behind the running max (100) of their partition.
    parts = [[100, 50, 120], [30, 100, 40, 110]]
    full = list(merge_log(_ab_source(parts), epoch_size=4))
    assert full[0].ts.tolist() == [30, 100, 50, 100]
    tracker = PositionTracker()
    tracker.advance(full[0])
    position = tracker.position
    assert position.partitions == {
        ("t", 0): PartitionPosition(2, 100),
        ("t", 1): PartitionPosition(2, 100),
    }
    (resumed,) = merge_log(FromPosition(_ab_source(parts), position), epoch_size=4, start=position)
    assert resumed.ts.tolist() == [40, 110, 120]
    assert _events([resumed]) == _events(full[1:])


def test_resume_position_is_checked_against_the_source_and_epoch_size() -> None:
    parts = [[1, 2, 3], [1, 2, 3]]
    position = LogPosition(
        2, 1, {("t", 0): PartitionPosition(1, 1), ("t", 1): PartitionPosition(1, 1)}
    )
    with pytest.raises(LogError, match="before the resume position's offset 1"):
        list(merge_log(_ab_source(parts), epoch_size=2, start=position))
    with pytest.raises(LogError, match="another epoch size"):
        list(merge_log(FromPosition(_ab_source(parts), position), epoch_size=1, start=position))
    ghost = LogPosition(2, 1, {("other", 0): PartitionPosition(1, 1)})
    with pytest.raises(LogError, match="'other' partition 0, which the source does not declare"):
        list(merge_log(_ab_source(parts), epoch_size=2, start=ghost))


def test_a_resumed_merge_still_streams() -> None:
    # Every partition has a position: none blocks the merge before it speaks again.
    parts = [list(range(0, 4000, 2)), list(range(1, 4001, 2))]
    full = list(merge_log(_ab_source(parts, 100), epoch_size=500))
    tracker = PositionTracker()
    tracker.advance(full[0])
    pulled = 0

    class Counting(FromPosition):
        def batches(self) -> Any:
            nonlocal pulled
            for b in super().batches():
                pulled += 1
                yield b

    epochs = merge_log(
        Counting(_ab_source(parts, 100), tracker.position), epoch_size=500, start=tracker.position
    )
    next(epochs)
    assert pulled < 20  # of 36 batches left


# -- the batch executor ---------------------------------------------------------------------


def _batch(size: int) -> Any:
    return lambda: BatchExecutor(epoch_size=size)


@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pipeline=pipelines(),
    log=logs(),
    # One-event epochs checkpoint after every event and resume from each (quadratic): seconds
    # an example, so a quick run at a prompt leaves them to CI's thorough one.
    epoch_size=st.sampled_from([1, 3, 7, 25] if THOROUGH else [3, 7, 25]),
    k=st.integers(1, 3),
)
def test_batch_resumed_from_any_checkpoint_gives_the_same_bytes(
    pipeline: Pipeline, log: LogSpec, epoch_size: int, k: int
) -> None:
    check_resumes(_batch(epoch_size), lambda: pipeline, log.source, every(k))


def test_social_spam_with_windows_and_timers_resumes_byte_for_byte() -> None:
    events = size(6_000, 3_000)  # nine epochs either way
    data = generate_social(users=300, events=events, days=3, seed=5, jitter_ms=20_000)
    saved = check_resumes(
        _batch(events * 7 // 60),
        spam_with_timers,
        lambda: social_source(data, batch_size=events // 12),
        every(3),
        chain=True,
    )
    assert [s.position.epoch for s in saved] == [3, 6, 9]
    assert all(len(s.states) == 1 and s.executor == "batch" for s in saved)


def _order_source(parts: Sequence[Sequence[int]]) -> Any:
    return lambda: InMemorySource.from_tables(
        TopicTable("t", "a", table_of(parts), len(parts)), batch_size=2
    )


@pytest.mark.parametrize(
    ("parts", "size"),
    [
        # timestamps go backwards in both partitions right after the boundary
        ([[100, 50, 60, 5], [100, 40, 70, 6]], 2),
        # equal timestamps across partitions at (and around) the boundary
        ([[5, 5, 5, 5], [5, 5, 5], [5, 5, 5, 5, 5]], 4),
        # partition 2 has no records before the first checkpoints; partition 1 none at all
        ([[1, 2, 3, 4, 5, 6], [], [50, 60, 70]], 2),
    ],
)
def test_edge_cases_at_the_checkpoint_boundary(parts: list[list[int]], size: int) -> None:
    saved = check_resumes(_batch(size), order_revealing, _order_source(parts), every(1), chain=True)
    # A checkpoint after the last epoch too: resuming from it produces nothing more.
    assert saved[-1].position.seq == sum(map(len, parts))
    if len(parts) == 3 and not parts[1]:
        assert ("t", 2) not in saved[0].position.partitions
        assert ("t", 1) not in saved[-1].position.partitions


def test_checkpointing_asks_once_per_epoch_and_saves_after_the_sink() -> None:
    order: list[str] = []

    class Sink:
        def write(self, chunks: Any, epoch: Epoch) -> None:
            order.append(f"write {epoch.index}")

    class Store(MemoryStore):
        def save(self, snapshot: EngineSnapshot) -> None:
            order.append(f"save {snapshot.position.epoch - 1}")
            super().save(snapshot)

    store = Store(every(2))
    stats = BatchExecutor(epoch_size=2).run(
        plan(order_revealing()), _order_source([[1, 2, 3, 4, 5, 6, 7]])(), Sink(), checkpoints=store
    )
    assert order == ["write 0", "write 1", "save 1", "write 2", "write 3", "save 3"]
    assert store.asked == [0, 1, 2, 3]
    assert stats.seconds["checkpoint"] > 0


# -- errors ---------------------------------------------------------------------------------


def _snapshot(
    executor: Any = None, parts: Sequence[Sequence[int]] = ((1, 2, 3, 4),)
) -> EngineSnapshot:
    store = MemoryStore(every(1))
    (executor or BatchExecutor(epoch_size=2)).run(
        plan(order_revealing()), _order_source(parts)(), collect(), checkpoints=store
    )
    return store.saved[0]


def test_a_snapshot_of_another_executor_or_epoch_size_is_refused() -> None:
    snap = _snapshot()
    source = FromPosition(_order_source([[1, 2, 3, 4]])(), snap.position)
    foreign = replace(snap, executor="parallel", workers=2, states=(snap.states[0],) * 2)
    with pytest.raises(CheckpointError, match="parallel executor with 2 worker"):
        BatchExecutor(epoch_size=2).run(plan(order_revealing()), source, collect(), resume=foreign)
    with pytest.raises(CheckpointError, match="epoch_size 2, this run has 3"):
        BatchExecutor(epoch_size=3).run(plan(order_revealing()), source, collect(), resume=snap)
    with pytest.raises(CheckpointError, match="serial executor cannot checkpoint"):
        SerialExecutor().run(plan(order_revealing()), source, collect(), resume=snap)


def test_a_runtime_refuses_a_snapshot_of_another_pipeline_or_worker() -> None:
    blob = _snapshot().states[0]
    with pytest.raises(CheckpointError, match="another pipeline"):
        EpochRuntime(plan(spam_with_timers())).restore(blob)
    # Same operators, another constant in a function: another pipeline too.
    changed = order_revealing()
    add = changed.operators[0]
    assert isinstance(add, Update)
    changed.operators[0] = replace(add, merge=lambda old, e, _v: old * 2 + e.v)
    with pytest.raises(CheckpointError, match="another pipeline"):
        EpochRuntime(plan(changed)).restore(blob)
    sharded = EpochRuntime(plan(order_revealing()), shard=Shard(1, 2), exchange=lambda parts: parts)
    with pytest.raises(CheckpointError, match=r"worker 1 of 2.*worker 0 of 1"):
        EpochRuntime(plan(order_revealing())).restore(sharded.snapshot())
    with pytest.raises(CheckpointError, match="not a runtime snapshot"):
        EpochRuntime(plan(order_revealing())).restore(b"x" * 64)
    EpochRuntime(plan(order_revealing())).restore(blob)  # the right plan takes it


def test_unpicklable_state_names_the_table() -> None:
    p = Pipeline("locks")
    locks = p.table("locks", default=None)
    p.update("lock", on="a", table=locks, key="k", merge=lambda _o, _e, _v: threading.Lock())
    with pytest.raises(CheckpointError, match=r"table 'locks'.*lock"):
        BatchExecutor(epoch_size=2).run(
            plan(p), _order_source([[1, 2, 3]])(), collect(), checkpoints=MemoryStore(every(1))
        )


def test_snapshot_bytes_round_trip_and_damage_is_detected() -> None:
    snap = _snapshot(parts=((1, 2, 3, 4), (7, 8)))
    data = snap.to_bytes()
    out = io.BytesIO()
    assert snap.write_to(out) == len(data) and out.getvalue() == data
    back = EngineSnapshot.from_bytes(data)
    assert back.position == snap.position and back.states == snap.states
    assert (back.executor, back.workers, back.epoch_size) == ("batch", 1, 2)
    broken = bytearray(data)
    broken[-5] ^= 0xFF
    with pytest.raises(CheckpointError, match="damaged"):
        EngineSnapshot.from_bytes(bytes(broken))
    with pytest.raises(CheckpointError, match="not a restream engine snapshot"):
        EngineSnapshot.from_bytes(b"PK\x03\x04" + data)
    with pytest.raises(CheckpointError, match="needs 2 state blob"):
        EngineSnapshot(snap.position, "parallel", 2, 2, snap.states)


def test_timers_pending_across_the_checkpoint_fire_after_resume() -> None:
    # A timer scheduled before the checkpoint (a lambda made inside the merge) fires after it.
    p_parts = [[0, 5, 30, 41, 42]]
    store = MemoryStore(lambda e: e.index == 0)

    def build() -> Pipeline:
        p = Pipeline("expiry")
        live = p.table("live", default=0)

        def add(old: int, e: Any, view: Any) -> int:
            v: int = e.v
            view.schedule(e.ts + 10, lambda o, d=v: o - d)
            return old + v

        p.update("add", on="a", table=live, key="k", merge=add)
        seen = p.lookup("seen", on="a", table=live, key="k")
        out = p.output("o", key="k")
        p.emit(
            "show", on="a", output=out, inputs=[seen], fn=lambda e, _v: [Record(e.k, {"n": e.seen})]
        )
        return p

    plain, sink = collect(), EpochSink()
    BatchExecutor(epoch_size=2).run(plan(build()), _order_source(p_parts)(), plain)
    BatchExecutor(epoch_size=2).run(
        plan(build()), _order_source(p_parts)(), sink, checkpoints=store
    )
    (snap,) = store.saved
    resumed = collect()
    BatchExecutor(epoch_size=2).run(
        plan(build()), FromPosition(_order_source(p_parts)(), snap.position), resumed, resume=snap
    )
    rows = [r for c in sink.chunks(before=1) + resumed.chunks for r in c.records()]
    assert rows == [r for c in plain.chunks for r in c.records()]
    # keys alternate 0, 1; the timers of seqs 0 and 1 (due at 10 and 15) fire before seq 2
    assert [r[1]["n"] for r in rows] == [1, 2, 3, 4, 5]
