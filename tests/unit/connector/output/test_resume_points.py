"""Resume points against a fake consumer: a run that died after writing part of its output,
then resumed from an earlier checkpoint, ends with each output partition exactly as an
uninterrupted run wrote it, also when one event writes several records to a partition and
when more records than the tail window share one seq."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from connector.config import OutputHeaders
from connector.errors import ConfigError
from connector.kafka.partitioner import java_partition
from connector.output.sink import Resume, ResumeCount, ResumePoint
from connector.output.topics import _TAIL_WINDOW, Headerless, _resume_count, _resume_point
from connector.output.verify import OutputMarks, PartitionMark
from engine.output import OutputChunk
from tests.support.fake_kafka import FakeConsumer, StoredRecord, output_record
from tests.support.sink_fakes import recording_sink, repr_target, source_epoch

JOB = "j1"
PARTITIONS = 2
Row = tuple[int, bytes, list[tuple[str, bytes]]]  # partition, value, headers


def _run(
    seqs: list[int],
    keys: list[int],
    resume: Mapping[tuple[str, int], Resume],
    mode: OutputHeaders = "full",
    first: int = 0,
) -> list[Row]:
    """What a sink writes for one epoch's records (in serial order), skipping per ``resume``;
    the records' values count from ``first`` (a replay from a later seq: where it starts)."""
    sink, producer = recording_sink(
        {"s": repr_target("s", "out", PARTITIONS)}, job=JOB, resume=resume, headers=mode
    )
    chunk = OutputChunk(
        "s",
        np.array(seqs, dtype=np.int64),
        np.array(keys),
        {"a": np.arange(first, first + len(seqs))},
    )
    sink.write([chunk], source_epoch(0, max(seqs) + 1))
    return [(r.partition, r.value, r.headers) for r in producer.rows]


def _partitions(rows: list[Row]) -> dict[tuple[str, int], list[StoredRecord]]:
    out: dict[tuple[str, int], list[StoredRecord]] = {("out", p): [] for p in range(PARTITIONS)}
    for p, value, headers in rows:
        records = out[("out", p)]
        records.append(StoredRecord(len(records), (*headers, ("value", value))))
    return out


def _restart_after(
    seqs: list[int], keys: list[int], delivered: int, mode: OutputHeaders = "full"
) -> None:
    """The first ``delivered`` records were written before the crash; the restart replays from
    seq 0 (an early checkpoint) with the resume points found in the partitions' tails."""
    full = _run(seqs, keys, {}, mode)
    consumer = FakeConsumer(_partitions(full[:delivered]))
    resume: dict[tuple[str, int], Resume] = {}
    for (topic, p), records in consumer.partitions.items():
        if records:
            point = _resume_point(consumer, topic, p, 0, len(records), JOB, "outputs", False)
            assert point is not None
            resume[(topic, p)] = point
    written = full[:delivered] + _run(seqs, keys, resume, mode)
    assert _partitions(written) == _partitions(full), f"after {delivered} records"


def _mixed_log() -> tuple[list[int], list[int]]:
    """Keys 7 and 2 go to different partitions; each event writes 0 to 4 records to each."""
    seqs, keys = [], []
    for s, (n7, n8) in enumerate([(1, 0), (3, 1), (2, 2), (0, 4), (4, 0), (1, 1), (2, 3)]):
        seqs += [s] * (n7 + n8)
        keys += [7] * n7 + [2] * n8
    return seqs, keys


def test_compact_headers_resume_exactly_wherever_the_run_died() -> None:
    seqs, keys = _mixed_log()
    for delivered in range(len(seqs) + 1):
        _restart_after(seqs, keys, delivered, "compact")


def test_without_headers_a_resume_skips_by_count_past_the_checkpoints_marks() -> None:
    # A checkpoint at seq `at` marked each partition's last record before it; the run wrote
    # `delivered` records in all and died; the restart replays from `at` and must skip, per
    # partition, the records after the mark: the first ones it regenerates there.
    seqs, keys = _mixed_log()
    full = _run(seqs, keys, {}, "none")
    assert all(headers == [] for _p, _v, headers in full)
    for at in range(max(seqs) + 2):
        before = sum(1 for s in seqs if s < at)
        for delivered in range(before, len(seqs) + 1):
            stored = _partitions(full[:delivered])
            marks = {
                tp: PartitionMark(tp[0], tp[1], 0, len(r) - 1, None, None)
                for tp, r in _partitions(full[:before]).items()
                if r
            }
            headerless = Headerless(True, OutputMarks({"out": PARTITIONS}, marks), "outputs")
            consumer = FakeConsumer(stored)
            resume: dict[tuple[str, int], Resume] = {}
            for (topic, p), records in stored.items():
                count = _resume_count(consumer, topic, p, 0, len(records), headerless)
                if count is not None:
                    resume[(topic, p)] = count
            again = (
                _run(seqs[before:], keys[before:], resume, "none", first=before)
                if before < len(seqs)
                else []
            )
            assert _partitions(full[:delivered] + again) == _partitions(full), (at, delivered)


def test_without_headers_a_filled_partition_is_the_jobs_only_by_its_manifest() -> None:
    stored = {("out", 0): [StoredRecord(i) for i in range(3)]}
    refused = Headerless(False, OutputMarks(), "output_headers")
    with pytest.raises(ConfigError, match="holds records without restream headers"):
        _resume_count(FakeConsumer(stored), "out", 0, 0, 3, refused)
    owned = Headerless(True, OutputMarks(), "output_headers")
    assert _resume_count(FakeConsumer(stored), "out", 0, 0, 3, owned) == ResumeCount(3)
    # A record with restream headers is some job's, written in another mode: not this one's.
    other = {("out", 0): [output_record(0, JOB, 4)]}
    with pytest.raises(ConfigError, match="records of job 'j1'"):
        _resume_count(FakeConsumer(other), "out", 0, 0, 1, owned)


def test_several_records_per_seq_resume_exactly_wherever_the_run_died() -> None:
    # Keys 7 and 2 go to different partitions; each event writes 1 to 4 records, some of
    # them to both partitions.
    k7, k8 = 7, 2
    assert java_partition(b"7", PARTITIONS) != java_partition(b"2", PARTITIONS)
    seqs, keys = [], []
    for s, (n7, n8) in enumerate([(1, 0), (3, 1), (2, 2), (0, 4), (4, 0), (1, 1), (2, 3)]):
        seqs += [s] * (n7 + n8)
        keys += [k7] * n7 + [k8] * n8
    for delivered in range(len(seqs) + 1):
        _restart_after(seqs, keys, delivered)


@pytest.mark.parametrize("run", [_TAIL_WINDOW + 1, 3 * _TAIL_WINDOW, 5 * _TAIL_WINDOW])
def test_a_tail_window_full_of_one_seq_is_widened(run: int) -> None:
    # One event writes more records to a partition than the first tail read holds.
    seqs = [0, 0, 1] + [2] * run + [3, 3]
    keys = [7] * len(seqs)
    for delivered in (3 + _TAIL_WINDOW, 3 + run - 1, 3 + run, 3 + run + 1):
        _restart_after(seqs, keys, delivered)


def test_a_partition_of_one_seq_from_its_first_offset_is_counted_whole() -> None:
    records = [output_record(i, JOB, 5) for i in range(200)]
    consumer = FakeConsumer({("out", 0): records})
    assert _resume_point(consumer, "out", 0, 0, 200, JOB, "outputs", False) == ResumePoint(5, 200)
    # The tail read started a little before the (possibly lagging) high watermark.
    assert consumer.assigned[0] == ("out", 0, 200 - _TAIL_WINDOW)


def test_a_tail_of_another_job_is_refused() -> None:
    records = [output_record(0, JOB, 1), output_record(1, "other", 2)]
    consumer = FakeConsumer({("out", 0): records})
    with pytest.raises(ConfigError, match="written by job 'other'"):
        _resume_point(consumer, "out", 0, 0, 2, JOB, "outputs", False)
