"""Fakes and builders for unit tests of the output sink (connector.output.sink, its resume
points and its split over sink processes): a producer that keeps every record it is given,
an encoder of rows as their repr, targets and sinks of those, and the input epoch that output
records point back to. No broker, no processes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import NamedTuple

import numpy as np

from connector.config import OutputHeaders
from connector.output.sink import KafkaSink, OutputTarget, Resume
from connector.serde.avro_bulk import EncodedBatch
from connector.serde.values import encoded_batch
from engine.log import Epoch, Events

Header = tuple[str, bytes]


class ProducedRecord(NamedTuple):
    """One record as the sink handed it to the producer."""

    topic: str
    value: bytes
    key: bytes | None
    partition: int
    timestamp: int
    headers: list[Header]


class ReprEncoder:
    """Encodes each row of the columns as the repr of the tuple of its values (``(1, 'x')``):
    different rows give different bytes, readable in a failing assertion."""

    def encode(self, columns: Mapping[str, np.ndarray]) -> list[bytes]:
        """One value per row."""
        return [repr(v).encode() for v in zip(*(c.tolist() for c in columns.values()), strict=True)]

    def encode_batch(self, columns: Mapping[str, np.ndarray]) -> EncodedBatch:
        """The same values back to back (what the native producer takes)."""
        return encoded_batch(self.encode(columns))


class RecordingProducer:
    """Takes the sink's records as :class:`~connector.kafka.producer.BulkProducer` would and
    keeps them, in order, in ``rows``; ``headers_given`` says whether the last call passed
    headers at all (the ``none`` header mode passes none)."""

    def __init__(self) -> None:
        self.rows: list[ProducedRecord] = []
        self.headers_given: bool | None = None

    def produce(
        self,
        topic: str,
        values: Sequence[bytes],
        keys: Sequence[bytes | None],
        partitions: Sequence[int],
        timestamps: Sequence[int],
        headers: Sequence[Sequence[Header]] | None = None,
    ) -> None:
        """Keep one record per row."""
        self.headers_given = headers is not None
        rows = zip(values, keys, partitions, timestamps, headers or repeat([]), strict=False)
        for value, key, p, ts, h in rows:
            self.rows.append(ProducedRecord(topic, value, key, p, ts, list(h)))


def repr_target(stream: str, topic: str, partitions: int) -> OutputTarget:
    """Stream ``stream`` to ``topic`` (``partitions`` partitions), records of one field
    ``a``, encoded by :class:`ReprEncoder`."""
    return OutputTarget(stream, topic, partitions, ("a",), ReprEncoder())  # type: ignore[arg-type]


def recording_sink(
    targets: Mapping[str, OutputTarget],
    *,
    job: str = "j1",
    resume: Mapping[tuple[str, int], Resume] | None = None,
    headers: OutputHeaders = "full",
) -> tuple[KafkaSink, RecordingProducer]:
    """A sink of job ``job`` writing ``targets`` to a :class:`RecordingProducer`, and that
    producer."""
    producer = RecordingProducer()
    sink = KafkaSink(
        lambda: producer,  # type: ignore[arg-type,return-value]
        targets,
        job=job,
        resume=resume,
        headers=headers,
    )
    return sink, producer


def source_epoch(seq_start: int, n: int, topics: tuple[str, ...] = ("in",)) -> Epoch:
    """The epoch of events ``seq_start`` .. ``seq_start + n - 1``, all of kind ``m``: event
    ``s`` at time ``1000 + 10 s``, from topic ``topics[s % len(topics)]``, partition
    ``s % 2``, offset ``3 s`` (so that records' source headers differ from their seq)."""
    seq = np.arange(seq_start, seq_start + n, dtype=np.int64)
    events = Events(
        kind="m",
        seq=seq,
        ts=1000 + seq * 10,
        topic=(seq % len(topics)).astype(np.int16),
        partition=(seq % 2).astype(np.int32),
        offset=seq * 3,
        columns={},
    )
    return Epoch(
        index=0,
        seq_start=seq_start,
        seq_end=seq_start + n,
        ts=events.ts,
        kind=np.zeros(n, dtype=np.int8),
        kinds=("m",),
        topics=topics,
        events={"m": events},
    )
