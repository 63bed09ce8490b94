"""A fake of the part of ``confluent_kafka.Consumer`` that reads partitions back (assign,
consume to the end of partition, unassign), over records held in memory, for unit tests of
resume points and output checks. It behaves like librdkafka with ``enable.partition.eof``:
a partition yields its records from the assigned offset on, then one end-of-partition event.

Assigning an offset past a partition's end fails the test: some brokers (Tansu) then send
neither records nor an end of partition, so the code under test must never do it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, TopicPartition

TopicPartitionKey = tuple[str, int]


@dataclass(frozen=True)
class StoredRecord:
    """One record of a partition: its offset and headers."""

    offset: int
    headers: tuple[tuple[str, bytes], ...] = ()


def output_record(offset: int, job: str, seq: int, source: str = "in/0@0") -> StoredRecord:
    """A record as the sink writes it: ``restream.seq``, ``restream.source``, ``restream.job``."""
    return StoredRecord(
        offset,
        (
            ("restream.seq", str(seq).encode()),
            ("restream.source", source.encode()),
            ("restream.job", job.encode()),
        ),
    )


def dead_letter(offset: int, job: str, source: str) -> StoredRecord:
    """A dead letter as the job writes it (no ``restream.seq``)."""
    return StoredRecord(
        offset,
        (
            ("restream.reason", b"null-value"),
            ("restream.source", source.encode()),
            ("restream.job", job.encode()),
        ),
    )


def partition_of(job: str, seqs: Sequence[int], start: int = 0) -> list[StoredRecord]:
    """Output records with these seqs at offsets ``start``, ``start + 1``, ..."""
    return [output_record(start + i, job, s) for i, s in enumerate(seqs)]


class _Error:
    def __init__(self, code: int) -> None:
        self._code = code

    def code(self) -> int:
        return self._code

    def str(self) -> str:
        return f"error {self._code}"


class FakeMessage:
    """A consumed record or an end-of-partition event."""

    def __init__(self, tp: TopicPartitionKey, record: StoredRecord | None, eof_at: int = 0):
        self._tp = tp
        self._record = record
        self._eof_at = eof_at

    def topic(self) -> str:
        return self._tp[0]

    def partition(self) -> int:
        return self._tp[1]

    def offset(self) -> int:
        return self._record.offset if self._record is not None else self._eof_at

    def headers(self) -> list[tuple[str, bytes]] | None:
        return list(self._record.headers) if self._record is not None else None

    def error(self) -> _Error | None:
        return _Error(KafkaError._PARTITION_EOF) if self._record is None else None


@dataclass
class FakeConsumer:
    """Reads ``partitions`` (records in offset order) like a consumer assigned to them."""

    partitions: dict[TopicPartitionKey, list[StoredRecord]] = field(default_factory=dict)
    #: Every assignment made: (topic, partition, offset) triples.
    assigned: list[tuple[str, int, int]] = field(default_factory=list)
    _queue: list[FakeMessage] = field(default_factory=list)

    def assign(self, tps: Iterable[TopicPartition]) -> None:
        self._queue = []
        for tp in tps:
            key = (tp.topic, tp.partition)
            records = self.partitions.get(key, [])
            end = records[-1].offset + 1 if records else 0
            assert tp.offset <= end, f"assigned {key} at {tp.offset}, past its end {end}"
            self.assigned.append((tp.topic, tp.partition, tp.offset))
            self._queue += [FakeMessage(key, r) for r in records if r.offset >= tp.offset]
            self._queue.append(FakeMessage(key, None, end))

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        taken, self._queue = self._queue[:num_messages], self._queue[num_messages:]
        return taken

    def unassign(self) -> None:
        self._queue = []

    def close(self) -> None:
        self._queue = []
