"""KafkaSource split for the ray executor's readers (no broker): picklable parts without the
driver's callbacks, and the readers' reports dead-lettered and counted in the driver."""

from __future__ import annotations

import pickle

import pytest

from connector.config import BadRecordLimit
from connector.input.dead_letters import BadRecordError, BadRecords
from connector.input.reader import (
    KafkaPart,
    KafkaPartSource,
    KafkaSource,
    ReadReport,
    TopicInput,
    copy_record,
)
from connector.kafka.records import RecordCopy
from connector.positions.ranges import PartitionRange
from connector.serde.avro import load_schema
from connector.serde.values import RecordProblem, value_decoder


class _Metrics:
    def __init__(self) -> None:
        self.read: list[tuple[str, int, int, int]] = []
        self.done: list[tuple[str, int]] = []

    def records_read(self, topic: str, partition: int, count: int, next_offset: int) -> None:
        self.read.append((topic, partition, count, next_offset))

    def partition_done(self, topic: str, partition: int) -> None:
        self.done.append((topic, partition))


def _source(bad: BadRecords, metrics: _Metrics | None = None) -> KafkaSource:
    schema = load_schema("social/Message")
    ranges = [PartitionRange("in", p, 0, n, 0, n) for p, n in enumerate([100, 10, 10, 80, 0])] + [
        PartitionRange("other", 0, 5, 25, 0, 25)
    ]
    inputs = {t: TopicInput(t, "message", value_decoder("avro", schema)) for t in ("in", "other")}
    return KafkaSource(
        {"bootstrap.servers": "b:9092", "error_cb": lambda _e: None},
        ranges,
        inputs,
        bad,
        job="j",
        metrics=metrics,  # type: ignore[arg-type]
    )


def _bad(policy: str = "fail", limit: BadRecordLimit | None = None) -> BadRecords:
    return BadRecords(policy, job="j", topic=None, producer=None, limit=limit)  # type: ignore[arg-type]


def test_parts_are_disjoint_balanced_by_records_and_picklable_without_callbacks() -> None:
    source = _source(_bad())
    parts = source.split(2)
    assert all(isinstance(p, KafkaPart) for p in parts)
    got = sorted((s.topic, s.partition) for p in parts for s in p.partitions())
    assert got == sorted((s.topic, s.partition) for s in source.partitions())
    loads = [sum(r.records for r in p.ranges) for p in parts if isinstance(p, KafkaPart)]
    assert sorted(loads) == [110, 110]  # 100 + 10 | 80 + 20 + 10 (+ the empty one)
    again = pickle.loads(pickle.dumps(parts[0]))
    assert isinstance(again, KafkaPart) and "error_cb" not in again.client
    assert again.client["bootstrap.servers"] == "b:9092"
    opened = again.open()
    assert isinstance(opened, KafkaPartSource)
    assert opened.partitions() == again.partitions()


def _message(offset: int) -> RecordCopy:
    return RecordCopy("in", 1, offset, b"k", b"\xff", [("h", b"v")], (1, 1_700_000_000_000))


def test_reports_are_counted_and_their_bad_records_handled_by_policy_in_the_driver() -> None:
    metrics = _Metrics()
    bad = _bad("fail", BadRecordLimit(count=5))
    source = _source(bad, metrics)
    source.split(2)
    report = ReadReport(
        [], 30, {("in", 0): (30, 30)}, [("in", 4)], {"consume": 0.5, "decode": 0.25}, False
    )
    source.absorb(report)
    assert metrics.read == [("in", 0, 30, 30)] and metrics.done == [("in", 4)]
    assert source.read_counts == {("in", 0): 30}
    assert source.seconds["reader consume"] == 0.5 and source.seconds["reader decode"] == 0.25
    assert bad.records_read == 30
    problem = RecordProblem(0, "undecodable", "not avro")
    failing = ReadReport([(_message(7), problem)], 1, {}, [], {}, False)
    with pytest.raises(BadRecordError, match=r"bad record at in/1@7 \(undecodable\): not avro"):
        source.absorb(failing)


def test_the_share_of_bad_records_is_judged_once_every_part_finished() -> None:
    bad = _bad("fail", BadRecordLimit(percent=50.0))
    finished: list[bool] = []
    bad.finish = lambda: finished.append(True)  # type: ignore[method-assign]
    source = _source(bad)
    source.split(3)
    for _ in range(2):
        source.absorb(ReadReport([], 0, {}, [], {}, True))
    assert not finished
    source.absorb(ReadReport([], 0, {}, [], {}, True))
    assert finished == [True]


def test_a_bad_message_copy_tells_what_dead_lettering_needs() -> None:
    m = pickle.loads(pickle.dumps(_message(3)))
    assert (m.topic(), m.partition(), m.offset()) == ("in", 1, 3)
    assert (m.key(), m.value(), m.headers(), m.timestamp()) == (
        b"k",
        b"\xff",
        [("h", b"v")],
        (1, 1_700_000_000_000),
    )
    assert copy_record(m) == m
