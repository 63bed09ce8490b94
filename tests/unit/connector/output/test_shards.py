"""The output split over sink processes: how many, who owns which partition, and the split of
an epoch's chunks (no processes: the split shares are written by in-process sinks)."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping

import numpy as np
import pytest

from connector.errors import SerdeError
from connector.kafka.partitioner import java_partition
from connector.output.shards import (
    PartitionRouter,
    assign_partitions,
    auto_sink_processes,
    describe_partitions,
    owned_partitions,
    sink_process_count,
    split_chunks,
)
from connector.output.sink import (
    Coordinates,
    KafkaSink,
    OutputTarget,
    Resume,
    ResumeCount,
    ResumePoint,
    key_bytes,
    key_partitions,
)
from connector.runtime.cpus import CpuBudget
from engine.output import OutputChunk, split_output
from tests.support.sink_fakes import (
    ProducedRecord,
    RecordingProducer,
    recording_sink,
    repr_target,
    source_epoch,
)

# -- how many ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpus", "partitions", "workers", "expected"),
    [
        (1, 12, 1, 1),
        (2, 12, 2, 1),
        (7, 12, 7, 1),  # below 8 CPUs one sink process: the workers need the rest
        (8, 12, 8, 2),
        (16, 12, 16, 4),
        (64, 12, 64, 12),  # at most one per output partition
        (64, 3, 64, 3),
        (16, 0, 16, 1),
        # A pod without a CPU limit sees the node's 64 CPUs: not more than its 2 workers.
        (64, 12, 2, 2),
        (64, 12, 1, 1),
    ],
)
def test_auto_count_is_one_per_four_cpus_within_one_the_workers_and_the_partitions(
    cpus: int, partitions: int, workers: int, expected: int
) -> None:
    assert auto_sink_processes(cpus, partitions, workers) == expected


def _targets(**partitions: int) -> dict[str, OutputTarget]:
    return {
        f"stream-{topic}": repr_target(f"stream-{topic}", topic, n)
        for topic, n in partitions.items()
    }


def test_the_count_is_logged_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    budget = CpuBudget(16, "cgroup v2 quota 16 CPUs (/sys/fs/cgroup/cpu.max)")
    targets = _targets(scores=3, alerts=3)
    with caplog.at_level(logging.INFO, logger="connector.output.shards"):
        assert sink_process_count(0, targets, budget, 16) == 4
        assert sink_process_count(2, targets, budget, 16) == 2
        assert sink_process_count(9, targets, budget, 1) == 6  # explicit: workers no bound
    auto, given, capped = caplog.records
    assert auto.getMessage() == (
        "4 sink processes (sink_processes 0: one per 4 usable CPUs, at most one per worker "
        "and per output partition; 16 workers, 6 output partitions; cgroup v2 quota 16 CPUs "
        "(/sys/fs/cgroup/cpu.max))"
    )
    assert given.getMessage() == "2 sink processes (sink_processes)"
    assert capped.levelno == logging.WARNING
    assert capped.getMessage() == (
        "sink_processes 9: the output has only 6 partitions, so 6 sink processes write it"
    )


def test_two_streams_of_one_topic_count_its_partitions_once() -> None:
    targets = {
        "a": repr_target("a", "shared", 4),
        "b": repr_target("b", "shared", 4),
    }
    assert sink_process_count(16, targets, CpuBudget(64, "test"), 64) == 4
    assert sink_process_count(0, targets, CpuBudget(64, "test"), 64) == 4


# -- who owns which partition ---------------------------------------------------------------


@pytest.mark.parametrize("processes", [1, 2, 3, 5, 7])
def test_every_partition_has_one_owner_and_the_shares_are_balanced(processes: int) -> None:
    partitions = {"scores": 7, "alerts": 3, "audit": 1}
    owners = assign_partitions(partitions, processes)
    assert {t: len(o) for t, o in owners.items()} == partitions
    shares = [owned_partitions(owners, i) for i in range(processes)]
    every = [(t, p) for t, n in partitions.items() for p in range(n)]
    assert sorted(pair for share in shares for pair in share) == sorted(every)
    sizes = [len(share) for share in shares]
    assert max(sizes) - min(sizes) <= 1
    for topic, owner in owners.items():
        per_process = np.bincount(owner, minlength=processes)
        # Within a topic too: a topic's partitions spread over the processes.
        assert per_process.max() - per_process[: min(processes, len(owner))].min() <= 1, topic


def test_the_assignment_depends_on_topics_and_counts_only() -> None:
    one = assign_partitions({"b": 3, "a": 2}, 2)
    other = assign_partitions({"a": 2, "b": 3}, 2)
    assert one.keys() == other.keys()
    assert all(np.array_equal(one[t], other[t]) for t in one)
    # Round-robin over the topics in name order: a/0, a/1, b/0, b/1, b/2.
    assert one["a"].tolist() == [0, 1] and one["b"].tolist() == [0, 1, 0]
    assert owned_partitions(one, 1) == [("a", 1), ("b", 1)]
    assert describe_partitions(owned_partitions(one, 0)) == "a/0 b/0,2"
    assert describe_partitions([]) == "(none)"


def test_no_processes_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        assign_partitions({"a": 2}, 0)


# -- the split of an epoch --------------------------------------------------------------------


def _chunk(stream: str, n: int, keys: np.ndarray, seed: int) -> OutputChunk:
    rng = np.random.default_rng(seed)
    # Several records of one seq, in serial order, as an emit of many records writes them.
    seq = np.sort(rng.integers(0, n, len(keys))).astype(np.int64)
    columns = {"a": rng.integers(0, 1000, len(keys)), "b": np.array([f"v{i}" for i in seq])}
    return OutputChunk(stream, seq, keys, columns)


def test_each_share_holds_its_partitions_rows_in_order() -> None:
    targets = _targets(scores=5, alerts=2)
    owners = assign_partitions({"scores": 5, "alerts": 2}, 3)
    rng = np.random.default_rng(7)
    chunks = [
        _chunk("stream-scores", 300, rng.integers(-50, 10_000, 400), 1),
        _chunk("stream-alerts", 300, np.array([f"user-{i}" for i in rng.integers(0, 99, 50)]), 2),
        _chunk("stream-scores", 300, np.array([], dtype=np.int64), 3),  # empty: in no share
    ]
    shares = split_chunks(chunks, targets, owners, 3)
    assert len(shares) == 3
    for i, (mine, partitions) in enumerate(shares):
        expected_parts = []
        for chunk in chunks[:2]:
            target = targets[chunk.output]
            placed = np.array([java_partition(key_bytes(k), target.partitions) for k in chunk.keys])
            rows = np.flatnonzero(owners[target.topic][placed] == i)
            if len(rows):
                expected_parts.append((chunk, rows, placed[rows]))
        assert len(mine) == len(partitions) == len(expected_parts)
        for part, p, (chunk, rows, placed_rows) in zip(
            mine, partitions, expected_parts, strict=True
        ):
            assert part.output == chunk.output
            assert np.array_equal(p, placed_rows)
            assert np.array_equal(part.seq, chunk.seq[rows])  # in serial order
            assert np.array_equal(part.keys, chunk.keys[rows])
            assert part.columns.keys() == chunk.columns.keys()
            for name, column in part.columns.items():
                assert np.array_equal(column, chunk.columns[name][rows])


def test_the_router_cuts_what_split_chunks_cuts_and_pickles() -> None:
    """The sink actors' router, run by the workers with engine.output.split_output, gives each
    writer the same rows in the same order as the sink processes' split; a stream without a
    topic goes to writer 0 (whose sink then names it)."""
    targets = _targets(scores=5, alerts=2)
    owners = assign_partitions({"scores": 5, "alerts": 2}, 3)
    router = pickle.loads(pickle.dumps(PartitionRouter.of(targets, owners, 3)))
    rng = np.random.default_rng(8)
    chunks = [
        _chunk("stream-scores", 300, rng.integers(-50, 10_000, 400), 1),
        _chunk("stream-alerts", 300, np.array([f"user-{i}" for i in rng.integers(0, 99, 50)]), 2),
        _chunk("stream-scores", 300, np.array([], dtype=np.int64), 3),
    ]
    parts = split_output(chunks, router)
    assert len(parts) == router.parts == 3
    for part, (mine, _) in zip(parts, split_chunks(chunks, targets, owners, 3), strict=True):
        assert len(part) == len(mine)
        for got, want in zip(part, mine, strict=True):
            assert got.output == want.output
            assert np.array_equal(got.seq, want.seq) and np.array_equal(got.keys, want.keys)
            for name, column in want.columns.items():
                assert np.array_equal(got.columns[name], column)
    stray = _chunk("stream-unknown", 10, np.arange(12), 4)
    assert np.array_equal(router(stray), np.zeros(12, dtype=np.intp))


def test_a_chunk_of_one_owner_is_handed_on_whole() -> None:
    targets = _targets(scores=2)
    owners = assign_partitions({"scores": 2}, 2)
    keys = np.array([k for k in range(200) if java_partition(str(k).encode(), 2) == 1])
    chunk = _chunk("stream-scores", 50, keys, 4)
    (none, _), (whole, partitions) = split_chunks([chunk], targets, owners, 2)
    assert none == [] and whole[0] is chunk
    assert (partitions[0] == 1).all()


def test_an_unknown_stream_is_named() -> None:
    chunk = _chunk("nowhere", 10, np.arange(5), 5)
    with pytest.raises(SerdeError, match="no output topic configured for stream 'nowhere'"):
        split_chunks([chunk], _targets(scores=2), assign_partitions({"scores": 2}, 2), 2)


@pytest.mark.parametrize("processes", [2, 3])
@pytest.mark.parametrize("mode", ["full", "compact", "none"])
def test_split_sinks_write_what_one_sink_writes_per_partition(processes: int, mode: str) -> None:
    """Each partition's records, bytes and order are the same whether one sink writes them
    all or ``processes`` sinks write one share each, given the parent's partitions; resume
    points and counts skip in the share that owns their partition."""
    n = 500
    epoch = source_epoch(0, n)
    rng = np.random.default_rng(11)
    targets = _targets(scores=4)
    epochs = [[_chunk("stream-scores", n, rng.integers(0, 5_000, 700), seed)] for seed in range(3)]
    resume: dict[tuple[str, int], Resume] = (
        {("scores", 0): ResumeCount(150), ("scores", 3): ResumeCount(20)}
        if mode == "none"
        else {("scores", 1): ResumePoint(seq=int(epochs[0][0].seq[300]), count=1)}
    )

    def sink(resumed: Mapping[tuple[str, int], Resume]) -> tuple[KafkaSink, RecordingProducer]:
        return recording_sink(targets, job="j", resume=resumed, headers=mode)  # type: ignore[arg-type]

    one, one_out = sink(resume)
    for chunks in epochs:
        one.produce(chunks, Coordinates(epoch))
    owners = assign_partitions({"scores": 4}, processes)
    split = []
    for i in range(processes):
        mine = set(owned_partitions(owners, i))
        split.append(sink({k: r for k, r in resume.items() if k in mine}))
    for chunks in epochs:
        for (share, partitions), (part_sink, _) in zip(
            split_chunks(chunks, targets, owners, processes), split, strict=True
        ):
            part_sink.produce(share, Coordinates(epoch), partitions)

    def by_partition(rows: list[ProducedRecord]) -> dict[int, list[ProducedRecord]]:
        out: dict[int, list[ProducedRecord]] = {}
        for row in rows:
            out.setdefault(row[3], []).append(row)
        return out

    expected = by_partition(one_out.rows)
    got: dict[int, list[ProducedRecord]] = {}
    for _, producer in split:
        for p, rows in by_partition(producer.rows).items():
            assert p not in got, "a partition written by two sinks"
            got[p] = rows
    assert got == expected
    assert sum(s.skipped.get("scores", 0) for s, _ in split) == one.skipped["scores"] > 0
    merged = {k: v for s, _ in split for k, v in s.last_seq.items()}
    assert merged == one.last_seq


def test_key_partitions_place_keys_as_the_sink_does() -> None:
    keys = np.array([0, -7, 123456789012, 42], dtype=np.int64)
    assert key_partitions(keys, 5).tolist() == [java_partition(key_bytes(k), 5) for k in keys]
    texts = np.array(["a", "bb", "ccc"], dtype=object)
    assert key_partitions(texts, 3).tolist() == [java_partition(k.encode(), 3) for k in texts]
