"""Output checks on resume against a fake consumer: what a checkpoint marked must still be in
each partition, with brokers whose high watermark lags (Tansu) as well as exact ones."""

from __future__ import annotations

import pytest

from connector.errors import ConfigError, SinkError
from connector.output import verify
from connector.output.verify import (
    OutputLostError,
    OutputMarker,
    OutputMarks,
    PartitionMark,
    check_marks,
    last_records,
)
from tests.support.fake_kafka import (
    FakeConsumer,
    StoredRecord,
    dead_letter,
    output_record,
    partition_of,
)

JOB = "j1"
#: Two records per seq: offsets 0..9 hold seqs 0,0,1,1,...,4,4.
SEQS = [s // 2 for s in range(10)]


def _marks(*marks: PartitionMark, topics: dict[str, int] | None = None) -> OutputMarks:
    return OutputMarks(topics or {"out": 2}, {(m.topic, m.partition): m for m in marks})


def _mark(partition: int = 0, offset: int = 5, seq: int | None = 2, low: int = 0) -> PartitionMark:
    return PartitionMark("out", partition, low, offset, seq, "in/0@0")


def _check(
    consumer: FakeConsumer,
    marks: OutputMarks,
    partitions: dict[str, int | None] | None = None,
    bounds: dict[tuple[str, int], tuple[int, int]] | None = None,
) -> list[str]:
    if bounds is None:
        bounds = {
            tp: (rs[0].offset, rs[-1].offset + 1) if rs else (0, 0)
            for tp, rs in consumer.partitions.items()
        }
    return check_marks(consumer, marks, partitions or {"out": 2}, bounds, JOB)


def test_intact_output_passes_also_where_the_high_watermark_lags() -> None:
    consumer = FakeConsumer({("out", 0): partition_of(JOB, SEQS), ("out", 1): []})
    # Records written after the checkpoint (seqs 3 and 4) follow the mark: the job's own.
    assert _check(consumer, _marks(_mark())) == []
    # Tansu: the high watermark is the first offset of the last batch + 1 (here 3, the mark
    # at 5 is past it): the end is found by reading, and the check still passes.
    assert _check(consumer, _marks(_mark()), bounds={("out", 0): (0, 3)}) == []
    assert ("out", 0, 2) in consumer.assigned  # read from high - 1
    # The mark may be the partition's last record.
    assert _check(consumer, _marks(_mark(offset=9, seq=4))) == []


def test_a_missing_topic_names_its_partitions() -> None:
    problems = _check(FakeConsumer(), _marks(_mark(0), _mark(1)), partitions={"out": None})
    assert problems == ["topic out is missing; it held this job's records in partitions [0, 1]"]
    # A topic that held nothing at the checkpoint may be missing: nothing of it is skipped.
    assert _check(FakeConsumer(), _marks(), partitions={"out": None}) == []


def test_another_partition_count_is_refused() -> None:
    problems = _check(FakeConsumer(), _marks(_mark()), partitions={"out": 3})
    assert problems == ["topic out has 3 partitions, the checkpoint was taken with 2"]


def test_an_emptied_partition_is_refused() -> None:
    problems = _check(FakeConsumer({("out", 0): []}), _marks(_mark()))
    assert problems == ["out/0 is empty; it held this job's records up to offset 5"]


def test_a_recreated_partition_that_ends_before_the_mark_is_refused() -> None:
    # Deleted, recreated and written again from the checkpoint on: three records.
    consumer = FakeConsumer({("out", 0): partition_of(JOB, [3, 3, 4])})
    (problem,) = _check(consumer, _marks(_mark()))
    assert "out/0 ends at offset 2, before the checkpoint's last record at offset 5" in problem


def test_a_rewritten_partition_that_reaches_the_mark_is_refused() -> None:
    # Rewritten from the checkpoint on, by enough records to pass the mark's offset.
    consumer = FakeConsumer({("out", 0): partition_of(JOB, [3] * 8)})
    (problem,) = _check(consumer, _marks(_mark()))
    assert (
        "out/0 holds the record at offset 5 (job 'j1', seq 3) where the checkpoint saw" in problem
    )


def test_records_of_another_writer_after_the_mark_are_refused() -> None:
    records = partition_of(JOB, SEQS)
    records[6] = output_record(6, "intruder", 3)
    (problem,) = _check(FakeConsumer({("out", 0): records}), _marks(_mark()))
    assert (
        problem
        == "out/0 holds the record at offset 6 (job 'intruder', seq 3) after the checkpoint's"
    )
    records = partition_of(JOB, SEQS)
    records[-1] = output_record(9, "intruder", 9)
    (problem,) = _check(FakeConsumer({("out", 0): records}), _marks(_mark()))
    assert "offset 9 (job 'intruder', seq 9)" in problem


def test_records_lost_before_the_mark_are_refused() -> None:
    # Retention (or a delete-records) took the partition's first three records.
    consumer = FakeConsumer({("out", 0): partition_of(JOB, SEQS)[3:]})
    (problem,) = _check(consumer, _marks(_mark()))
    assert problem == "out/0 lost records: it starts at offset 3, the checkpoint saw it start at 0"


def test_dead_letters_are_checked_by_their_source() -> None:
    letters = [dead_letter(i, JOB, f"in/0@{i * 7}") for i in range(4)]
    consumer = FakeConsumer({("dlq", 0): letters})
    mark = PartitionMark("dlq", 0, 0, 2, None, "in/0@14")
    assert _check(consumer, _marks(mark, topics={"dlq": 1}), partitions={"dlq": 1}) == []
    other = PartitionMark("dlq", 0, 0, 2, None, "in/0@15")
    (problem,) = _check(consumer, _marks(other, topics={"dlq": 1}), partitions={"dlq": 1})
    assert "dlq/0 holds the record at offset 2 (job 'j1', source in/0@14)" in problem


def test_the_refusal_is_a_config_error_that_says_what_to_do() -> None:
    error = OutputLostError(JOB, 1234, ["topic out is missing", "dlq/0 is empty"])
    assert isinstance(error, ConfigError)  # exit 2
    text = str(error)
    assert text.startswith("restart_from_scratch (--restart-from-scratch, ")
    assert "job j1 cannot resume from its checkpoint at seq 1234" in text
    assert "(topic out is missing; dlq/0 is empty)" in text
    assert "--restart-from-scratch" in text and "new job id" in text


def test_marks_round_trip_and_a_partition_keeps_its_first_low_watermark() -> None:
    marks = _marks(_mark(0, low=4), PartitionMark("dlq", 0, 0, 3, None, "in/1@9"))
    assert OutputMarks.from_json(marks.to_json()) == marks
    newer = marks.merged({("out", 0): _mark(0, offset=9, seq=4, low=7)}, {"out": 2, "dlq": 1})
    assert newer.marks[("out", 0)] == _mark(0, offset=9, seq=4, low=4)
    assert newer.marks[("dlq", 0)] == marks.marks[("dlq", 0)]
    assert newer.topics == {"out": 2, "dlq": 1}


def test_last_records_are_found_past_a_lagging_high_watermark() -> None:
    consumer = FakeConsumer({("out", 0): partition_of(JOB, SEQS), ("out", 1): []})
    last = last_records(consumer, {("out", 0): (0, 4), ("out", 1): (0, 0)})
    assert list(last) == [("out", 0)]
    assert last[("out", 0)].offset == 9 and last[("out", 0)].seq == 4


class _Offsets:
    def __init__(self, bounds: dict[tuple[str, int], tuple[int, int]]) -> None:
        self.bounds = bounds

    def watermarks(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        return {tp: self.bounds[tp] for tp in tps}

    def close(self) -> None:
        pass


def test_the_marker_marks_the_last_records_and_refuses_another_writers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer = FakeConsumer({("out", 0): partition_of(JOB, SEQS), ("out", 1): []})
    offsets = _Offsets({("out", 0): (0, 6), ("out", 1): (0, 0)})
    monkeypatch.setattr(verify, "KafkaOffsets", lambda *a, **k: offsets)
    monkeypatch.setattr(verify, "_consumer", lambda *a: consumer)
    marker = OutputMarker({"bootstrap.servers": "x"}, JOB)
    marks = marker.mark([("out", 0), ("out", 1)], {("out", 0): 4})
    assert marks == {("out", 0): PartitionMark("out", 0, 0, 9, 4, "in/0@0")}
    with pytest.raises(SinkError, match=r"ends with the record at offset 9 .* not this run's"):
        marker.mark([("out", 0)], {("out", 0): 5})
    consumer.partitions[("out", 0)].append(output_record(10, "intruder", 5))
    with pytest.raises(SinkError, match="job 'intruder'"):
        marker.mark([("out", 0)], {})
    marker.close()


def test_a_partition_written_without_headers_is_checked_by_offset_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bare = [StoredRecord(i) for i in range(10)]
    consumer = FakeConsumer({("out", 0): bare, ("out", 1): []})
    mark = PartitionMark("out", 0, 0, 5, None, None)
    bounds = {("out", 0): (0, 10), ("out", 1): (0, 0)}
    assert check_marks(consumer, _marks(mark), {"out": 2}, bounds, JOB, ["out"]) == []
    # Still refused: a partition that no longer reaches the mark, and records of a job.
    short = FakeConsumer({("out", 0): bare[:4], ("out", 1): []})
    bounds_short = {("out", 0): (0, 4), ("out", 1): (0, 0)}
    problems = check_marks(short, _marks(mark), {"out": 2}, bounds_short, JOB, ["out"])
    assert problems and "before the checkpoint's last record" in problems[0]
    mixed = FakeConsumer({("out", 0): [*bare, output_record(10, JOB, 3)], ("out", 1): []})
    bounds_mixed = {("out", 0): (0, 11), ("out", 1): (0, 0)}
    problems = check_marks(mixed, _marks(mark), {"out": 2}, bounds_mixed, JOB, ["out"])
    assert problems and "job 'j1'" in problems[0]
    # The marker of such partitions takes their last record without headers as the job's.
    offsets = _Offsets({("out", 0): (0, 10)})
    monkeypatch.setattr(verify, "KafkaOffsets", lambda *a, **k: offsets)
    monkeypatch.setattr(verify, "_consumer", lambda *a: consumer)
    marker = OutputMarker({"bootstrap.servers": "x"}, JOB, headerless=True)
    assert marker.mark([("out", 0)], {("out", 0): 4}) == {
        ("out", 0): PartitionMark("out", 0, 0, 9, None, None)
    }
    consumer.partitions[("out", 0)].append(output_record(10, "intruder", 5))
    offsets.bounds = {("out", 0): (0, 11)}
    with pytest.raises(SinkError, match="job 'intruder'"):
        marker.mark([("out", 0)], {})
    marker.close()
