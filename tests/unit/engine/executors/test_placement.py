"""Placement: home keys, which columns cross workers, and sharded runtimes against the oracle.

The sharded runtimes here run in threads of this process (an all-gather exchange over a
``threading.Barrier``), so the partitioning logic is checked on many random pipelines without
starting processes; tests/integration/engine/test_parallel.py does the same with real workers.
"""

from __future__ import annotations

import io
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.examples.social.spam import build_spam_pipeline
from engine.executors.columns import Part
from engine.executors.placement import place
from engine.executors.runtime import EpochRuntime
from engine.executors.serial import SerialExecutor
from engine.executors.sharding import Shard, owner_of_key
from engine.keys import Unordered
from engine.merge import merge_log
from engine.output import OutputChunk, canonical_bytes, collect, merge_shares
from engine.pipeline import Pipeline, Record
from engine.planner import plan
from tests.support.budget import examples, size
from tests.support.engine_logs import LogSpec, edge_log, edge_pipeline, logs, pipelines


def test_spam_exchanges_only_the_pair_lookups() -> None:
    placement = place(plan(build_spam_pipeline()), frozenset())
    assert placement.home == {
        "message": "sender",
        "friendship": Unordered("user_a", "user_b"),
    }
    assert placement.exchanged == {("message", "link_count"), ("message", "last_from_recipient")}


def _flag_pipeline(flag_key: str) -> Pipeline:
    p = Pipeline("flags")
    big = p.derive(
        "big", on="a", dtype="bool", fn=lambda e, _v: e.v > 2, batch_fn=lambda c: c["v"] > 2
    )
    per_k1 = p.count("per_k1", on="a", key="k1")
    p.count("per_k1_again", on="a", key="k1")
    p.count("big_by", on="a", key=flag_key, where=big)
    n = p.lookup("n", on="a", table=per_k1, key="k1")
    out = p.output("o", key="k1")
    p.emit("out", on="a", output=out, inputs=[n], fn=lambda e, _v: [Record(e.k1, {"n": e.n})])
    return p


def test_a_column_read_by_a_table_keyed_otherwise_is_exchanged() -> None:
    at_home = place(plan(_flag_pipeline("k1")), frozenset())
    assert at_home.home == {"a": "k1"}
    assert at_home.exchanged == frozenset()
    elsewhere = place(plan(_flag_pipeline("k2")), frozenset())
    assert elsewhere.exchanged == {("a", "big")}


def test_python_merges_and_callable_keys_read_complete_columns() -> None:
    p = Pipeline("python")
    big = p.derive("big", on="a", dtype="bool", fn=lambda e, _v: e.v > 2)
    p.derive("other", on="a", dtype="int64", fn=lambda e, _v: e.v + 1)
    seen = p.table("seen", default=0)
    p.update("u", on="a", table=seen, key="k1", merge=lambda o, _e, _v: o + 1, inputs=[big])
    per_k1 = p.count("per_k1", on="a", key="k1")
    p.lookup("by_fn", on="a", table=per_k1, key=lambda e: e.k1 % 2)
    placement = place(plan(p), frozenset())
    # big: read by a Python merge; other: visible to the callable key; by_fn: made off home.
    assert placement.exchanged == {("a", "big"), ("a", "other"), ("a", "by_fn")}


# -- sharded runtimes in threads, against the serial executor --------------------------------


class _ThreadExchange:
    """All-gather of every worker's parts (the parallel executor's exchange, in threads)."""

    def __init__(self, workers: int) -> None:
        self.barrier = threading.Barrier(workers, timeout=60)
        self.slots: list[list[Part]] = [[] for _ in range(workers)]

    def of(self, worker: int) -> Any:
        def exchange(parts: list[Part]) -> list[Part]:
            self.slots[worker] = parts
            self.barrier.wait()
            out = [p for share in self.slots for p in share]
            self.barrier.wait()  # nobody overwrites a slot before all have read it
            return out

        return exchange


def _sharded_bytes(pipeline: Pipeline, log: LogSpec, workers: int, epoch_size: int) -> Any:
    the_plan = plan(pipeline)
    exchange = _ThreadExchange(workers)
    runtimes = [
        EpochRuntime(the_plan, shard=Shard(w, workers), exchange=exchange.of(w))
        for w in range(workers)
    ]
    chunks: list[OutputChunk] = []
    with ThreadPoolExecutor(workers) as pool:
        for epoch in merge_log(log.source(), epoch_size=epoch_size):
            futures = [pool.submit(rt.process, epoch) for rt in runtimes]
            try:
                shares = [f.result() for f in futures]
            except BaseException:
                exchange.barrier.abort()
                raise
            chunks.extend(merge_shares(shares))
    return canonical_bytes(chunks)


def _serial_bytes(pipeline: Pipeline, log: LogSpec) -> Any:
    sink = collect()
    SerialExecutor().run(plan(pipeline), log.source(), sink)
    return canonical_bytes(sink.chunks)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pipeline=pipelines(),
    log=logs(),
    workers=st.sampled_from([2, 3]),
    epoch_size=st.sampled_from([1, 3, 1000]),
)
@example(pipeline=edge_pipeline(), log=edge_log(), workers=2, epoch_size=1)
@example(pipeline=edge_pipeline(), log=edge_log(), workers=3, epoch_size=3)
def test_sharded_runtimes_equal_serial_on_random_pipelines(
    pipeline: Pipeline, log: LogSpec, workers: int, epoch_size: int
) -> None:
    assert _sharded_bytes(pipeline, log, workers, epoch_size) == _serial_bytes(pipeline, log)


def test_sharded_runtimes_equal_serial_on_spam() -> None:
    from engine.examples.social.data import generate_social
    from engine.examples.social.source import social_source

    data = generate_social(users=300, events=6_000, days=3, seed=5, jitter_ms=90_000)
    pipeline = build_spam_pipeline()
    the_plan = plan(pipeline)
    sink = collect()
    SerialExecutor().run(the_plan, social_source(data), sink)
    exchange = _ThreadExchange(2)
    runtimes = [EpochRuntime(the_plan, shard=Shard(w, 2), exchange=exchange.of(w)) for w in (0, 1)]
    chunks: list[OutputChunk] = []
    with ThreadPoolExecutor(2) as pool:
        for epoch in merge_log(social_source(data), epoch_size=1_000):
            shares = [f.result() for f in [pool.submit(rt.process, epoch) for rt in runtimes]]
            chunks.extend(merge_shares(shares))
    assert canonical_bytes(chunks) == canonical_bytes(sink.chunks)
    assert np.sum([len(c) for c in chunks]) > 0


def _runtimes(the_plan: Any, workers: int) -> list[EpochRuntime]:
    exchange = _ThreadExchange(workers)
    return [
        EpochRuntime(the_plan, shard=Shard(w, workers), exchange=exchange.of(w))
        for w in range(workers)
    ]


def _process(runtimes: list[EpochRuntime], epochs: list[Any]) -> list[OutputChunk]:
    chunks: list[OutputChunk] = []
    with ThreadPoolExecutor(len(runtimes)) as pool:
        for epoch in epochs:
            shares = [f.result() for f in [pool.submit(rt.process, epoch) for rt in runtimes]]
            chunks.extend(merge_shares(shares))
    return chunks


@pytest.mark.parametrize("workers", [2, 3])
def test_a_hot_key_is_pinned_and_the_output_stays_the_oracles(
    workers: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A sender with 40% of the messages: every worker pins it, to the same worker, from the
    first epoch; the output equals the serial executor's, also across a snapshot taken
    mid-run and restored into new runtimes (which keep the ownership, not decide anew)."""
    from engine.examples.social.data import Skew, generate_social
    from engine.examples.social.source import social_source

    skew = Skew(hot_share=0.4, heavy_share=0.3, heavy_users=10, clock_ms=60_000)
    events = size(8_000, 4_000)  # six epochs either way
    data = generate_social(users=500, events=events, days=3, seed=9, jitter_ms=3_600_000, skew=skew)
    hot = int(np.bincount(data.messages.sender).argmax())
    the_plan = plan(build_spam_pipeline())
    sink = collect()
    SerialExecutor().run(the_plan, social_source(data), sink)
    epochs = list(merge_log(social_source(data), epoch_size=events * 3 // 16))
    runtimes = _runtimes(the_plan, workers)
    with caplog.at_level(logging.INFO, logger="engine.executors.runtime"):
        chunks = _process(runtimes, epochs[:2])
    logged = [r.getMessage() for r in caplog.records if "balanced key ownership" in r.message]
    assert len(logged) == 1 and f"over {workers} workers" in logged[0]  # worker 0's, once
    first = runtimes[0].ownership
    assert first is not None and hot in first.pinned.tolist()
    for rt in runtimes[1:]:
        assert rt.ownership is not None
        assert rt.ownership.pinned.tolist() == first.pinned.tolist()
        assert rt.ownership.pinned_owner.tolist() == first.pinned_owner.tolist()
        assert rt.ownership.bounds.tolist() == first.bounds.tolist()
    blobs = [rt.snapshot() for rt in runtimes]
    resumed = _runtimes(the_plan, workers)
    for rt, blob in zip(resumed, blobs, strict=True):
        rt.restore(blob)
        assert rt.ownership is not None
        assert rt.ownership.pinned.tolist() == first.pinned.tolist()
    chunks.extend(_process(resumed, epochs[2:]))
    assert canonical_bytes(chunks) == canonical_bytes(sink.chunks)


def test_an_epoch_without_events_leaves_the_choice_to_the_next() -> None:
    from dataclasses import replace

    from engine.examples.social.data import Skew, generate_social
    from engine.examples.social.source import social_source

    skew = Skew(hot_share=0.5, clock_ms=1)
    data = generate_social(users=200, events=3_000, days=2, seed=4, skew=skew)
    epochs = list(merge_log(social_source(data), epoch_size=1_000))
    empty = replace(
        epochs[0],
        seq_end=epochs[0].seq_start,
        ts=epochs[0].ts[:0],
        kind=epochs[0].kind[:0],
        events={},
    )
    runtimes = _runtimes(plan(build_spam_pipeline()), 2)
    _process(runtimes, [empty])
    assert all(rt.ownership is None for rt in runtimes)
    _process(runtimes, epochs[:1])
    assert all(rt.ownership is not None and rt.ownership.pinned.size for rt in runtimes)


def test_a_snapshot_without_ownership_resumes_with_the_hash() -> None:
    """Snapshots written before ownership was balanced (format 4) hold each key where the
    hash put it; formats this version cannot read are refused."""
    from engine.errors import CheckpointError
    from engine.executors import snapshot

    the_plan = plan(build_spam_pipeline())
    runtime = _runtimes(the_plan, 2)[0]
    runtime.ownership = None
    blob = runtime.snapshot()
    state = snapshot.load_state(blob, runtime._plan_objects(), shard=0, shards=2)
    del state["ownership"]
    old = io.BytesIO()
    snapshot.dump_state(state, runtime._plan_objects(), old, shard=0, shards=2)
    # What an earlier version wrote: format 4, no ownership.
    v4 = bytearray(old.getvalue())
    v4[4:6] = (4).to_bytes(2, "little")
    fresh = _runtimes(the_plan, 2)[0]
    fresh.restore(bytes(v4))
    assert fresh.ownership is not None and fresh.ownership.is_uniform
    for other in (3, 8):  # an older hash, or a newer format
        v4[4:6] = other.to_bytes(2, "little")
        with pytest.raises(CheckpointError, match=f"version {other}"):
            fresh.restore(bytes(v4))
    # A snapshot taken before any epoch leaves the choice to the first epoch.
    fresh.restore(blob)
    assert fresh.ownership is None


def test_a_key_that_cannot_be_encoded_fails_naming_the_operator() -> None:
    """Balancing encodes the first epoch's keys before any operator runs; a key that cannot
    be encoded (an int and a str as one unordered pair) fails as the operator itself would."""
    from engine.errors import ExecutionError

    p = Pipeline("bad-pairs")
    p.count("pairs", on="a", key=Unordered("k1", "s"))
    rows = {kind: [] for kind in ("a", "b")}
    rows["a"] = [(0, 1, 1, 0, 0, "x"), (0, 2, 2, 0, 0, "y")]
    log = LogSpec(partitions={"a": 1, "b": 1}, rows=rows)
    runtimes = _runtimes(plan(p), 2)
    with pytest.raises(ExecutionError, match="operator 'pairs' raised") as caught:
        _process(runtimes, list(merge_log(log.source(), epoch_size=10)))
    assert caught.value.operator == "pairs" and caught.value.seq == 0


def _python_table_read_by_other_key_types() -> Pipeline:
    """Kind a writes a Python table by its int64 k1; kind b reads it by its own k1."""
    p = Pipeline("python-key-types")
    total = p.table("total", default=0)
    p.update("add", on="a", table=total, key="k1", merge=lambda old, e, _v: old + e.v)
    got = p.lookup("got", on="b", table=total, key="k1", default=-1, dtype="object")
    p.emit(
        "out",
        on="b",
        output=p.output("o", key="k1"),
        inputs=[got],
        fn=lambda e, _v: [Record(e.k1, {"got": e.got})],
    )
    return p


@pytest.mark.parametrize("key_type", ["bool", "float32", "float64", "uint32", "int32"])
@pytest.mark.parametrize("workers", [2, 3])
def test_python_table_keys_equal_under_eq_meet_on_one_worker(key_type: Any, workers: int) -> None:
    """True, 1.0 and np.uint32(1) read what 1 wrote, as in the serial executor's dicts.
    Before, a worker owned a Python table's non-int keys by their repr ("True", "1.0"), so
    the read ran on a worker that held no write and returned the default."""
    rows: dict[str, list[tuple[int, int, int, int, int, str]]] = {
        "a": [(0, t, k, 0, 10 * k + t, "x") for t, k in enumerate([0, 1, 2, 3, 1, 0])],
        "b": [(0, 7 + i, k, 0, 0, "x") for i, k in enumerate([1, 0, 3, 2])],
    }
    log = LogSpec({"a": 1, "b": 1}, rows, key_types={"a": "int64", "b": key_type})
    pipeline = _python_table_read_by_other_key_types()
    expected = _serial_bytes(pipeline, log)
    assert b"'got':-1" not in expected["o"]  # every read finds a write
    for epoch_size in (1, 1000):
        assert _sharded_bytes(pipeline, log, workers, epoch_size) == expected


def test_a_snapshot_holding_another_workers_python_key_is_refused() -> None:
    """A snapshot of a build that owned True apart from 1 restores into this build's worker
    that does not own it: its state would never be read again, so the job must start over.
    Snapshots whose keys (and pending timers) are where this build owns them restore."""
    from engine.errors import CheckpointError

    p = _python_table_read_by_other_key_types()

    def later(old: int, e: Any, view: Any) -> int:
        view.schedule(e.ts + 100, lambda o: o - 1)  # pending at the snapshot
        return old + 1

    p.update("later", on="a", table=p.table("timed", default=0), key="k1", merge=later)
    the_plan = plan(p)
    rows: dict[str, list[tuple[int, int, int, int, int, str]]] = {
        "a": [(0, t, k, 0, 1, "x") for t, k in enumerate([0, 1, 2, 3, 4, 5])],
        "b": [(0, 7, 1, 0, 0, "x")],
    }
    log = LogSpec({"a": 1, "b": 1}, rows, key_types={"a": "int64", "b": "bool"})
    runtimes = _runtimes(the_plan, 2)
    _process(runtimes, list(merge_log(log.source(), epoch_size=1000)))
    held = [set(rt.python["total"].base) for rt in runtimes]
    assert all(held) and not held[0] & held[1]
    pending = [t for rt in runtimes for t in rt._pending]
    assert pending and all(t.table == "timed" for t in pending)
    blobs = [rt.snapshot() for rt in runtimes]
    resumed = _runtimes(the_plan, 2)
    for rt, blob in zip(resumed, blobs, strict=True):
        rt.restore(blob)
    assert [set(rt.python["total"].base) for rt in resumed] == held

    worker = runtimes[0]
    elsewhere = next(k for k in (True, 1.0, 2.0, 3.0) if owner_of_key(k, 2) != 0)
    worker.python["total"].base[elsewhere] = 5
    with pytest.raises(CheckpointError, match="start the job over"):
        _runtimes(the_plan, 2)[0].restore(worker.snapshot())
