"""The native reader against librdkafka's consumer on a real broker: the same batches (offsets,
timestamps, columns, finals) and the same bad records, whatever wrote the topic (the native
producer's 1 MB batches, librdkafka's batches in every compression codec, one record per
batch), from any start offset (inside a batch too) and with empty ranges."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
from confluent_kafka import Producer

from connector.input.dead_letters import RecordLike
from connector.input.reader import InputReader, KafkaSource, TopicInput
from connector.kafka.offsets import KafkaOffsets
from connector.positions.ranges import PartitionRange
from connector.serde.avro import encode_value, load_schema
from connector.serde.values import RecordProblem, value_decoder
from engine.examples.social.data import generate_social
from engine.log import Column, PartitionBatch, StringColumn, concat_columns
from tests.support.broker import NewTopic
from tooling.broker import LocalBroker
from tooling.dataset import unique_prefix, write_social_topics

PARTITIONS = 3
SCHEMA = load_schema("social/Message")


class _Bad:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int, bytes | None, bytes | None, object, str]] = []
        self.count = 0
        self.finished = 0

    def handle(self, message: RecordLike, problem: RecordProblem) -> None:
        headers = message.headers()
        self.seen.append(
            (
                message.topic() or "",
                message.partition() or 0,
                message.offset() or 0,
                message.key(),
                message.value(),
                None if headers is None else list(headers),
                problem.reason,
            )
        )

    def read(self, records: int) -> None:
        self.count += records

    def finish(self) -> None:
        self.finished += 1


def _value(i: int) -> bytes:
    record = {"message_id": i, "ts": 0, "sender": i % 17, "recipient": i % 5, "content": f"m{i}"}
    return encode_value(SCHEMA, record)


def _write(bootstrap: str, topic: str, codec: str, records: int, linger_ms: int) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": codec,
            "linger.ms": linger_ms,
            "batch.num.messages": 10_000 if linger_ms else 1,
        }
    )
    for i in range(records):
        key = None if i % 97 == 0 else str(i % 13).encode()
        value = b"\xff\x01" if i % 101 == 5 else _value(i)  # some undecodable values
        headers = [("h", str(i).encode()), ("n", None)] if i % 3 == 0 else None
        # Timestamps repeat and go back: the reader keeps them as written.
        producer.produce(
            topic,
            value,
            key,
            partition=i % PARTITIONS,
            timestamp=1_700_000_000_000 + (i // 7) * 1000 - (i % 4) * 5000,
            headers=headers,
        )
    producer.flush(30)
    # A last record alone in its batch, so that the embedded broker's end offsets are exact.
    for p in range(PARTITIONS):
        producer.produce(topic, _value(-1), b"1", partition=p, timestamp=1_700_000_000_000)
        producer.flush(30)


def _read(
    bootstrap: str, ranges: list[PartitionRange], reader: InputReader, batch_records: int
) -> tuple[list[PartitionBatch], _Bad]:
    topics = {r.topic for r in ranges}
    inputs = {t: TopicInput(t, "message", value_decoder("avro", SCHEMA)) for t in topics}
    bad = _Bad()
    source = KafkaSource(
        {"bootstrap.servers": bootstrap},
        ranges,
        inputs,
        bad,
        job="native-reader",
        batch_records=batch_records,
        stall_timeout_s=30,
        reader=reader,
    )
    return list(source.batches()), bad


def _ranges(
    bootstrap: str, topic: str, starts: Mapping[int, int], shorten: int = 0
) -> list[PartitionRange]:
    offsets = KafkaOffsets({"bootstrap.servers": bootstrap}, timeout_s=30)
    try:
        marks = offsets.watermarks([(topic, p) for p in range(PARTITIONS)])
    finally:
        offsets.close()
    out = []
    for p in range(PARTITIONS):
        low, high = marks[(topic, p)]
        start = min(high, low + starts.get(p, 0))
        end = max(start, high - shorten)
        out.append(PartitionRange(topic, p, start, end, low, high))
    return out


def _same(a: list[PartitionBatch], b: list[PartitionBatch]) -> None:
    def by_partition(batches: list[PartitionBatch]) -> dict[tuple[str, int], PartitionBatch]:
        # Batch boundaries depend on arrival; a partition's concatenation must not.
        out: dict[tuple[str, int], list[PartitionBatch]] = {}
        for batch in batches:
            out.setdefault((batch.topic, batch.partition), []).append(batch)
        merged = {}
        for key, parts in out.items():
            assert [p.final for p in parts].count(True) == 1, key
            assert parts[-1].final, key
            merged[key] = parts
        return {k: _concat(v) for k, v in merged.items()}

    left, right = by_partition(a), by_partition(b)
    assert left.keys() == right.keys()
    for key in left:
        x, y = left[key], right[key]
        np.testing.assert_array_equal(x.offsets, y.offsets, err_msg=str(key))
        np.testing.assert_array_equal(x.ts, y.ts, err_msg=str(key))
        assert x.columns.keys() == y.columns.keys()
        for name in x.columns:
            assert _values(x.columns[name]) == _values(y.columns[name]), (key, name)


def _values(column: Column) -> list[object]:
    if isinstance(column, StringColumn):
        return column.values[column.codes].tolist()
    return column.tolist()


def _concat(parts: list[PartitionBatch]) -> PartitionBatch:
    first = parts[0]
    names = list(first.columns)
    nonempty = [p for p in parts if len(p.offsets)] or [first]
    return PartitionBatch(
        first.topic,
        first.partition,
        first.kind,
        np.concatenate([p.offsets for p in parts]),
        np.concatenate([p.ts for p in parts]),
        {n: concat_columns([p.columns[n] for p in nonempty]) for n in names},
        True,
    )


@pytest.mark.parametrize(
    ("codec", "linger_ms"),
    [("none", 50), ("none", 0), ("gzip", 50), ("snappy", 50), ("lz4", 50), ("zstd", 50)],
)
def test_the_native_reader_reads_what_librdkafka_reads(
    broker: LocalBroker, new_topic: NewTopic, codec: str, linger_ms: int
) -> None:
    topic = new_topic(PARTITIONS)
    _write(broker.bootstrap, topic, codec, 3_000 if linger_ms else 300, linger_ms)
    for starts, shorten, batch_records in [({}, 0, 50_000), ({0: 17, 1: 1, 2: 999}, 5, 100)]:
        ranges = _ranges(broker.bootstrap, topic, starts, shorten)
        native, native_bad = _read(broker.bootstrap, ranges, "native", batch_records)
        ours, ours_bad = _read(broker.bootstrap, ranges, "librdkafka", batch_records)
        _same(native, ours)
        assert native_bad.seen == ours_bad.seen
        assert native_bad.seen, "the topic holds undecodable values"
        assert native_bad.count == ours_bad.count == sum(r.end - r.start for r in ranges)
        assert native_bad.finished == ours_bad.finished == 1


def test_empty_ranges_and_a_topic_written_natively(
    broker: LocalBroker, new_topic: NewTopic
) -> None:
    data = generate_social(users=200, events=20_000, days=2, seed=5, partitions=PARTITIONS)
    topics = write_social_topics(data, bootstrap=broker.bootstrap, prefix=unique_prefix("nr"))
    # Partition 0 starts past its end: an empty range.
    ranges = _ranges(broker.bootstrap, topics.messages_topic, {0: 10**9})
    assert ranges[0].start == ranges[0].end
    native, _ = _read(broker.bootstrap, ranges, "native", 4_096)
    ours, _ = _read(broker.bootstrap, ranges, "librdkafka", 4_096)
    _same(native, ours)
    assert sum(len(b.offsets) for b in native) == sum(r.end - r.start for r in ranges)
