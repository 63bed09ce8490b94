"""Output topics: the engine's :class:`~engine.output.Sink` that writes each epoch to Kafka.

Every output record is keyed by the UTF-8 text of its output key (integers as decimal
strings), goes to the partition that Kafka's Java client would pick for that key (murmur2),
carries the timestamp of the event that produced it, and has the headers of the job's
``output_headers`` mode (:mod:`connector.output.headers`); in the default mode, ``full``::

    restream.seq      decimal seq of the event that produced it
    restream.source   topic/partition@offset of that event
    restream.job      the job id

Epochs arrive in order and each chunk is already in serial order, and neither writer
reorders (librdkafka's producer is idempotent, so its retries keep order; the native
producer never retries and has one request in flight per broker), so each output partition
receives its records in serial order. :class:`ResumePoint` s and :class:`ResumeCount` s
(found by :mod:`connector.output.topics`) make the sink skip the records that an earlier
attempt of the same job already wrote.

Per record the sink makes no Python object when the producer is the native one
(:class:`~connector.kafka.native.NativeProducer`): values are encoded a column at a time
into one buffer, integer keys written as decimal text and their murmur2 partitions computed
on arrays, and each record's headers built by a compiled loop
(:func:`~connector.output.headers.header_sections`). For librdkafka
(:class:`~connector.kafka.producer.BulkProducer`) it makes only what that client needs: the
value and key bytes, the header list, and one positional ``produce`` call.
:attr:`KafkaSink.stage_seconds` says where the time went (keys and partitioning, resume
skip, encoding, headers, produce calls).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from connector.config import OutputHeaders
from connector.errors import SerdeError
from connector.kafka.batches import ByteRows, decimal_rows
from connector.kafka.native import NativeProducer
from connector.kafka.partitioner import partition_byte_keys, partition_decimal_keys
from connector.kafka.producer import BulkProducer, Header
from connector.observability.metrics import JobMetrics, event_time_bounds
from connector.output.headers import COMPACT, compact_values, header_sections
from connector.runtime import failpoints
from connector.serde.values import JsonRecordEncoder, ValueEncoder
from engine.executors.base import RunStats
from engine.log import Epoch
from engine.output import ABSENT, OutputChunk

__all__ = [
    "Coordinates",
    "KafkaSink",
    "OutputTarget",
    "ResumeCount",
    "ResumePoint",
    "decimal_bytes",
    "epoch_done",
    "key_bytes",
    "key_partitions",
    "output_producer_settings",
]

logger = logging.getLogger(__name__)


def output_producer_settings() -> dict[str, Any]:
    """Producer settings for output topics: idempotent, so retries neither reorder nor
    duplicate; a client queue of at most 500,000 records or 256 MiB."""
    return {
        "enable.idempotence": True,
        "acks": "all",
        "retries": 2_147_483_647,
        "max.in.flight.requests.per.connection": 5,
        "delivery.timeout.ms": 300_000,
        # A replay produces faster than the broker takes, so the queue stays full: at the
        # bulk default (2M records, 1 GiB) the sink process peaked at 1,411 MiB RSS on 10M
        # spam events, at these limits at 535 MiB, in the same time (55.4 s vs 58.2 s).
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 262_144,
    }


@dataclass(frozen=True, slots=True)
class OutputTarget:
    """Where one output stream goes and how its values are encoded."""

    stream: str
    topic: str
    partitions: int
    #: Fields every record must carry; empty: each record's own (JSON without a schema).
    fields: tuple[str, ...]
    encoder: ValueEncoder | JsonRecordEncoder


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """The last record already in an output partition: skip up to and including it.

    ``count`` records with ``seq`` are there (one event may emit several records to a
    partition), so the first ``count`` records with that ``seq`` are skipped.
    """

    seq: int
    count: int


@dataclass(frozen=True, slots=True)
class ResumeCount:
    """The first ``count`` records that the run produces for an output partition are already
    there: skip them, whatever their seq.

    For ``output_headers`` ``none``, whose records say nothing about their seq: a resumed
    run regenerates a partition's records in the same order as the attempt before it (the
    replay is deterministic), starting with the first record after its checkpoint's mark, so
    the records behind the mark are exactly the first ones it produces there
    (:func:`connector.output.topics.prepare_outputs`)."""

    count: int


#: Where a resumed sink starts writing in an output partition.
Resume = ResumePoint | ResumeCount


def decimal_bytes(values: npt.NDArray[np.integer[Any]]) -> list[bytes]:
    """Each integer as its decimal ASCII bytes (``b"-12"``), by numpy's C loops: fixed-width
    ``S`` strings as narrow as the widest value (``tolist`` costs with the width)."""
    if not len(values):
        return []
    ints = np.asarray(values, dtype=np.int64)
    lo, hi = int(ints.min()), int(ints.max())
    width = max(len(str(lo)), len(str(hi)))
    out: list[bytes] = ints.astype(f"S{width}").tolist()
    return out


def key_bytes(key: Hashable) -> bytes:
    """The Kafka key of an output record: UTF-8 text, integers as decimal strings."""
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        return str(int(key)).encode()
    raise SerdeError(
        f"output key {key!r} ({type(key).__name__}) has no Kafka key encoding; key output "
        "records by an int, str or bytes field"
    )


class KafkaSink:
    """Writes each epoch's output chunks to their topics; see the module docstring."""

    def __init__(
        self,
        producer: Callable[[], BulkProducer | NativeProducer],
        targets: Mapping[str, OutputTarget],
        *,
        job: str,
        metrics: JobMetrics | None = None,
        stats: RunStats | None = None,
        resume: Mapping[tuple[str, int], Resume] | None = None,
        on_epoch: Callable[[Epoch], None] | None = None,
        headers: OutputHeaders = "full",
    ) -> None:
        self._producer = producer
        self._mode = headers
        self._targets = targets
        self._job = job.encode()
        self._metrics = metrics
        self._stats = stats
        self._resume = dict(resume or {})
        self._on_epoch = on_epoch
        #: Records written (queued to the producer) and skipped as already present, per topic.
        self.written: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        #: time.monotonic() when the first record was handed to the producer.
        self.first_write_at: float | None = None
        #: Per output partition written by this sink, the seq of the last record written
        #: (what a checkpoint's mark must find there: connector.output.verify).
        self.last_seq: dict[tuple[str, int], int] = {}
        #: Seconds spent per stage of writing: keys (keys and partitions), skip (the resume
        #: skip), encode (values), headers, produce (the client's produce calls).
        self.stage_seconds: dict[str, float] = {}

    def write(self, chunks: Sequence[OutputChunk], epoch: Epoch) -> None:
        """Encode and produce one epoch's output (see :class:`engine.output.Sink`)."""
        self.produce(chunks, Coordinates(epoch) if any(len(c) for c in chunks) else None)
        epoch_done(epoch, self._metrics, self._stats, self._on_epoch)
        failpoints.hit("sink.epoch")

    def produce(
        self,
        chunks: Sequence[OutputChunk],
        coords: Coordinates | None,
        partitions: Sequence[npt.NDArray[np.int32]] | None = None,
    ) -> None:
        """Encode and queue the records of ``chunks`` (``coords``: their epoch's events).

        The part of :meth:`write` that a sink process runs
        (:mod:`connector.output.sink_process`); the epoch's bookkeeping stays with the caller.
        ``partitions``: per chunk, each record's output partition when the caller computed
        them already (a sink split over processes by partition), else computed here."""
        for i, chunk in enumerate(chunks):
            if not len(chunk):
                continue
            target = self._targets.get(chunk.output)
            if target is None:
                raise SerdeError(f"no output topic configured for stream {chunk.output!r}")
            assert coords is not None
            self._write_chunk(target, chunk, coords, None if partitions is None else partitions[i])

    def _write_chunk(
        self,
        target: OutputTarget,
        chunk: OutputChunk,
        coords: Coordinates,
        known: npt.NDArray[np.int32] | None,
    ) -> None:
        clock = time.perf_counter
        t0 = clock()
        ints = _integer_keys(chunk.keys)
        listed = None if ints is not None else [key_bytes(k) for k in chunk.keys.tolist()]
        if known is not None:
            partitions = known
        elif ints is not None:
            partitions = partition_decimal_keys(ints, target.partitions)
        else:
            assert listed is not None
            partitions = partition_byte_keys(listed, target.partitions)
        seq = chunk.seq
        t1 = clock()
        keep = self._skip_mask(target.topic, partitions, seq) if self._resume else None
        missing = [f for f in target.fields if f not in chunk.columns]
        if missing:
            raise SerdeError(
                f"output stream {chunk.output!r} lacks fields {missing} of its schema; emit "
                "them or choose a schema that matches the pipeline's output"
            )
        columns = {f: chunk.columns[f] for f in target.fields or chunk.columns}
        if keep is not None:
            rows = np.flatnonzero(keep)
            skipped = len(seq) - len(rows)
            self.skipped[target.topic] = self.skipped.get(target.topic, 0) + skipped
            if not len(rows):
                self._time("keys", t1 - t0)
                self._time("skip", clock() - t1)
                return
            columns = {f: c[rows] for f, c in columns.items()}
            if ints is not None:
                ints = ints[rows]
            else:
                assert listed is not None
                listed = [listed[i] for i in rows.tolist()]
            partitions, seq = partitions[rows], seq[rows]
        t2 = clock()
        if target.fields:
            # After the resume skip: records written before the restart are not judged again.
            _check_present(chunk.output, seq, columns)
        producer = self._producer()
        index = seq - coords.seq_start
        if isinstance(producer, NativeProducer):
            encoded = target.encoder.encode_batch(columns)
            values = ByteRows.joined(encoded.data, encoded.offsets)
            keys = decimal_rows(ints) if ints is not None else ByteRows.of(listed or [])
            t3 = clock()
            headers = header_sections(self._mode, seq, self._job, coords.source_columns(index))
            t4 = clock()
            producer.produce(target.topic, partitions, coords.ts[index], keys, values, headers)
        else:
            values_list = target.encoder.encode(columns)
            keys_list = decimal_bytes(ints) if ints is not None else (listed or [])
            timestamps = coords.ts[index].tolist()
            t3 = clock()
            headers_list = self._headers(seq, coords, index)
            t4 = clock()
            producer.produce(
                target.topic, values_list, keys_list, partitions.tolist(), timestamps, headers_list
            )
        t5 = clock()
        # seq never decreases within a chunk: each partition's last row has its last seq.
        found, last_in_reverse = np.unique(partitions[::-1], return_index=True)
        for p, s in zip(found.tolist(), seq[len(seq) - 1 - last_in_reverse].tolist(), strict=True):
            self.last_seq[(target.topic, p)] = s
        if self.first_write_at is None:
            self.first_write_at = time.monotonic()
        self.written[target.topic] = self.written.get(target.topic, 0) + len(seq)
        if self._metrics is not None:
            self._metrics.records_written(target.topic, len(seq))
        for stage, seconds in (
            ("keys", t1 - t0),
            ("skip", t2 - t1),
            ("encode", t3 - t2),
            ("headers", t4 - t3),
            ("produce", t5 - t4),
        ):
            self._time(stage, seconds)

    def _headers(
        self, seq: npt.NDArray[np.int64], coords: Coordinates, index: npt.NDArray[np.int64]
    ) -> list[list[Header]] | None:
        """Each record's header list in the sink's mode (None: no headers)."""
        if self._mode == "none":
            return None
        if self._mode == "compact":
            # One list of one tuple per record, built by C-level loops (zip, map).
            return list(map(list, zip(zip(repeat(COMPACT), compact_values(seq, self._job)))))
        # Built with C-level loops (zip, map): per-record Python code here cost ~3 µs a record.
        return list(
            map(
                list,
                zip(
                    zip(repeat("restream.seq"), decimal_bytes(seq)),
                    zip(repeat("restream.source"), coords.sources(index)),
                    repeat(("restream.job", self._job)),
                ),
            )
        )

    def _time(self, stage: str, seconds: float) -> None:
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds

    def _skip_mask(
        self, topic: str, partitions: npt.NDArray[np.int32], seq: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_] | None:
        keep = np.ones(len(seq), dtype=bool)
        touched = False
        for (t, p), point in list(self._resume.items()):
            if t != topic:
                continue
            rows = np.flatnonzero(partitions == p)
            if not len(rows):
                continue
            touched = True
            if isinstance(point, ResumeCount):
                keep[rows[: point.count]] = False
                left = point.count - min(point.count, len(rows))
                if left:
                    self._resume[(t, p)] = ResumeCount(left)
                else:
                    del self._resume[(t, p)]
                continue
            s = seq[rows]
            before = s < point.seq
            same = np.flatnonzero(s == point.seq)
            drop = before.copy()
            drop[same[: point.count]] = True
            keep[rows[drop]] = False
            if s[-1] > point.seq or len(same) > point.count:
                # Past the resume point: everything after it in this partition is new.
                del self._resume[(t, p)]
            elif len(same) == point.count and len(same):
                del self._resume[(t, p)]
        return keep if touched else None

    def flush(self) -> None:
        """Wait until every record is delivered (raises BrokerError if any failed)."""
        self._producer().flush()


def epoch_done(
    epoch: Epoch,
    metrics: JobMetrics | None,
    stats: RunStats | None,
    on_epoch: Callable[[Epoch], None] | None,
) -> None:
    """An epoch's output was handed on: epoch metrics and the progress callback."""
    if metrics is not None:
        first, last = event_time_bounds(epoch.ts)
        metrics.epoch_done(len(epoch), first, last, stats.seconds if stats is not None else {})
    if on_epoch is not None:
        on_epoch(epoch)


class Coordinates:
    """Per seq of an epoch: its event's timestamp and where it was read (plain arrays, so
    that it pickles cheaply to a sink process)."""

    def __init__(self, epoch: Epoch) -> None:
        n = len(epoch)
        self.seq_start = epoch.seq_start
        self.ts = np.empty(n, dtype=np.int64)
        self._topic = np.zeros(n, dtype=np.int64)
        self._partition = np.zeros(n, dtype=np.int64)
        self._offset = np.zeros(n, dtype=np.int64)
        self._topics = epoch.topics
        for events in epoch.events.values():
            if not len(events):
                continue
            i = events.seq - epoch.seq_start
            self.ts[i] = events.ts
            self._topic[i] = events.topic
            self._partition[i] = events.partition
            self._offset[i] = events.offset

    def source_columns(
        self, index: npt.NDArray[np.int64]
    ) -> tuple[Sequence[str], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """``(topic names, topic index, partition, offset)`` of the events at ``index``."""
        return self._topics, self._topic[index], self._partition[index], self._offset[index]

    def sources(self, index: npt.NDArray[np.int64]) -> list[bytes]:
        """``topic/partition@offset`` of the events at ``index`` (positions in the epoch)."""
        if not len(index):
            return []
        partition = self._partition[index]
        width = int(partition.max()) + 1
        pair = self._topic[index] * width + partition
        # One "topic/partition@" prefix per pair that occurs, then a C-level concatenation
        # with each offset's digits: object-array arithmetic cost ~0.45 us a record.
        prefix = np.empty(int(pair.max()) + 1, dtype=object)
        for p in np.flatnonzero(np.bincount(pair)).tolist():
            prefix[p] = f"{self._topics[p // width]}/{p % width}@".encode()
        digits = decimal_bytes(self._offset[index])
        return list(map(bytes.__add__, prefix[pair].tolist(), digits))


def _integer_keys(keys: npt.NDArray[Any]) -> npt.NDArray[np.int64] | None:
    """The keys as int64 when every one is an integer (not a bool), else None."""
    if keys.dtype.kind in "iu":
        return keys.astype(np.int64)
    if keys.dtype == object and all(
        isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)) for k in keys
    ):
        return np.array([int(k) for k in keys], dtype=np.int64)
    return None


def key_partitions(keys: npt.NDArray[Any], partitions: int) -> npt.NDArray[np.int32]:
    """The partition Kafka's Java client picks for each key among ``partitions``, as
    :class:`KafkaSink` places its records; integer keys without building their bytes."""
    ints = _integer_keys(keys)
    if ints is not None:
        return partition_decimal_keys(ints, partitions)
    return partition_byte_keys([key_bytes(k) for k in keys.tolist()], partitions)


def _check_present(
    output: str, seq: npt.NDArray[np.int64], columns: Mapping[str, npt.NDArray[Any]]
) -> None:
    """SerdeError if a record lacks a schema field (rather than writing it as null).

    Checked per record, so whether a record can be written never depends on which other
    records share its chunk.
    """
    for name, col in columns.items():
        if col.dtype != object:
            continue
        lacking = np.flatnonzero(np.fromiter((v is ABSENT for v in col), bool, len(col)))
        if len(lacking):
            raise SerdeError(
                f"output stream {output!r}: {len(lacking)} record(s) lack schema field "
                f"{name!r}, the first at seq {int(seq[lacking[0]])}; emit the field in every "
                "record (None for null) or choose a schema without it"
            )
