"""Bounded reading: exactly the resolved offset ranges, as columnar batches for the engine.

:class:`KafkaSource` implements :class:`engine.log.Source`. It assigns the partitions directly
(no consumer group is joined and nothing is committed), reads each one from its start offset to
just before its end offset, decodes values in bulk (:mod:`connector.serde.values`) and yields
:class:`~engine.log.PartitionBatch` es. What fetches is the ``reader``: ``native``
(:class:`~connector.kafka.fetcher.NativeFetcher`: Fetch requests read into columns, keys and
values decoded where they lie in the fetched buffer) or ``librdkafka`` (its consumer, a
``Message`` per record); both give the same batches and bad records. A partition is finished
when a record at or past its end offset arrives, when the broker reports end-of-partition at or
past it, or when its range is empty: gaps (compaction, transaction markers) never make it wait
for an offset that will not come. Reading is ``read_committed`` (unless the ``kafka`` settings
say otherwise): records of aborted transactions are not part of the log.

Records that cannot be used go to :class:`~connector.input.dead_letters.BadRecords`
(dead-lettered or fatal, by policy); the batch then carries only the good rows, with their
own offsets.

Besides what the decoder rejects, a record is bad when it has no timestamp
(``undecodable``) or when its timestamp, the event time, is before 1970-01-01 or not before
2200-01-01 (``bad-timestamp``): such a time is a producer's bug, and one of them would make
every event-time figure of the job (replay speed, windows, watermark) absurd.

On the ray executor the source is split (:meth:`KafkaSource.split`, an
:class:`engine.log.SplittableSource`): each :class:`KafkaPart` (picklable: client settings
without callbacks, its partitions' ranges, the topics' decoders, the watchdog's timeout)
opens a :class:`KafkaPartSource` in a reader actor, which reads and decodes there and
reports, with the keys of each batch, its bad records (as :class:`RecordCopy` s: the
record's bytes and coordinates), counts and seconds; :meth:`KafkaSource.absorb` takes them in
the driver, where the run's :class:`~connector.input.dead_letters.BadRecords` dead-letters
or fails and the metrics count, as if the driver had read them.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from connector.errors import BrokerError, ConfigError, WatchdogError
from connector.input.dead_letters import RecordLike
from connector.kafka.fetcher import NativeFetcher
from connector.kafka.native import topic_leaders
from connector.kafka.records import FetchedRecords, RecordCopy
from connector.positions.ranges import PartitionRange
from connector.runtime.gcpolicy import replay_collection
from connector.serde.event_time import EVENT_TIME_RANGE, event_times
from connector.serde.rows import RawRows
from connector.serde.values import RecordProblem, ValueDecoder
from engine.log import PartitionBatch, PartitionSpec, SourcePart, split_partitions, take_column

__all__ = [
    "BadRecordHandler",
    "InputReader",
    "KafkaPart",
    "KafkaPartSource",
    "KafkaSource",
    "ReadMetrics",
    "ReadReport",
    "TopicInput",
    "consumer_config",
    "copy_record",
    "fetch_settings",
]

logger = logging.getLogger(__name__)

_CONSUME_BATCH = 10_000
_NO_TIMESTAMP = 0  # confluent_kafka.TIMESTAMP_NOT_AVAILABLE

#: What reads the input, resolved: restream's own Fetch requests
#: (:class:`~connector.kafka.fetcher.NativeFetcher`) or librdkafka's consumer.
InputReader = Literal["native", "librdkafka"]


@dataclass(frozen=True, slots=True)
class TopicInput:
    """How to read one input topic: the event kind its records are and their decoder."""

    topic: str
    kind: str
    decoder: ValueDecoder
    #: The value field that holds the event time (``--event-time``); None: the record timestamp.
    event_time: str | None = None


#: librdkafka consumer settings the native reader takes too: (its option, type).
_FETCH_SETTINGS = {
    "fetch.wait.max.ms": ("max_wait_ms", int),
    "fetch.max.bytes": ("max_bytes", int),
    "max.partition.fetch.bytes": ("partition_max_bytes", int),
}


def fetch_settings(client: Mapping[str, Any]) -> dict[str, Any]:
    """The native reader's options from the job's librdkafka settings (``kafka`` settings):
    its isolation level and, where set, the fetch sizes and wait, as librdkafka reads them."""
    options: dict[str, Any] = {
        "read_committed": str(client.get("isolation.level", "read_committed")).lower()
        != "read_uncommitted"
    }
    for key, (option, kind) in _FETCH_SETTINGS.items():
        if key in client:
            try:
                value = kind(client[key])
            except (TypeError, ValueError) as exc:
                raise ConfigError("kafka", f"{key}={client[key]!r} is not a number") from exc
            if value < (0 if option == "max_wait_ms" else 1):
                raise ConfigError("kafka", f"{key}={value} is out of range (librdkafka's too)")
            options[option] = value
    return options


def consumer_config(client: Mapping[str, Any], job: str) -> dict[str, Any]:
    """Settings of the job's reading consumer (user client settings applied on top)."""
    return {
        # Required by the client, never used: partitions are assigned, nothing is committed.
        "group.id": f"restream-{job}-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
        # An offset that is gone (retention) must fail the job, never silently skip records.
        "auto.offset.reset": "error",
        # librdkafka pauses fetching for fetch.queue.backoff.ms (default 1 s) whenever its local
        # queue is full; a fast reader drains it in milliseconds, so the pause dominated.
        "fetch.queue.backoff.ms": 1,
        "queued.max.messages.kbytes": 262_144,
        **client,
    }


class BadRecordHandler(Protocol):
    """What the source tells about bad records
    (:class:`~connector.input.dead_letters.BadRecords` in the process that runs the job)."""

    def handle(self, message: RecordLike, problem: RecordProblem) -> None:
        """One bad record: dead-letter it, or raise, by policy."""
        ...

    def read(self, records: int) -> None:
        """``records`` more records read (their bad ones already handled)."""
        ...

    def finish(self) -> None:
        """The whole input has been read."""
        ...


class ReadMetrics(Protocol):
    """The reading metrics the source updates
    (:class:`~connector.observability.metrics.JobMetrics`)."""

    def records_read(self, topic: str, partition: int, count: int, next_offset: int) -> None:
        """``count`` records of a partition were read; the next one is ``next_offset``."""
        ...

    def partition_done(self, topic: str, partition: int) -> None:
        """A partition reached its end offset."""
        ...


def _partition_of(m: Message) -> tuple[str, int]:
    return (m.topic() or "", m.partition() or 0)


@dataclass(slots=True)
class _Pending:
    """Records of one partition read but not yet handed to the engine."""

    messages: list[Message] = field(default_factory=list)
    #: What the native reader fetched (instead of ``messages``).
    fetched: list[FetchedRecords] = field(default_factory=list)
    fetched_count: int = 0
    next_offset: int = 0
    done: bool = False


class _Rows(Protocol):
    """A partition's records as :meth:`KafkaSource._decode` reads them: a librdkafka
    message list (:class:`_Messages`) or fetched columns (:class:`FetchedRecords`)."""

    @property
    def offsets(self) -> npt.NDArray[np.int64]:
        """Each record's offset."""
        ...

    def __len__(self) -> int: ...

    def value_rows(self) -> Sequence[bytes | None] | RawRows:
        """Each record's value."""
        ...

    def key_rows(self) -> Sequence[bytes | None] | RawRows:
        """Each record's key."""
        ...

    def stamps(self) -> tuple[npt.NDArray[np.int64], dict[int, str]]:
        """Each record's timestamp (ms), and the rows without one, with why."""
        ...

    def record(self, row: int) -> RecordLike:
        """One record, for the bad-record handler."""
        ...


class _Messages:
    """A list of librdkafka messages as :class:`_Rows`."""

    def __init__(self, messages: list[Message]) -> None:
        self._messages = messages

    @property
    def offsets(self) -> npt.NDArray[np.int64]:
        n = len(self._messages)
        return np.fromiter((m.offset() for m in self._messages), dtype=np.int64, count=n)

    def __len__(self) -> int:
        return len(self._messages)

    def value_rows(self) -> list[bytes | None]:
        return [m.value() for m in self._messages]

    def key_rows(self) -> list[bytes | None]:
        return [m.key() for m in self._messages]

    def stamps(self) -> tuple[npt.NDArray[np.int64], dict[int, str]]:
        stamps = [m.timestamp() for m in self._messages]
        ts = np.fromiter((t for _, t in stamps), dtype=np.int64, count=len(stamps))
        lacking = {
            i: "record has no timestamp"
            for i, (kind, _) in enumerate(stamps)
            if kind == _NO_TIMESTAMP
        }
        return ts, lacking

    def record(self, row: int) -> RecordLike:
        return self._messages[row]


class KafkaSource:
    """The engine's :class:`~engine.log.Source` over resolved Kafka offset ranges."""

    def __init__(
        self,
        client: Mapping[str, Any],
        ranges: Sequence[PartitionRange],
        inputs: Mapping[str, TopicInput],
        bad_records: BadRecordHandler,
        *,
        job: str,
        metrics: ReadMetrics | None = None,
        batch_records: int = 50_000,
        stall_timeout_s: float = 120.0,
        reading: Callable[[], tuple[int, int] | None] | None = None,
        where: str = "in the coordinator",
        reader: InputReader = "librdkafka",
    ) -> None:
        """``stall_timeout_s``: how long reading may bring no record before it fails with
        :class:`~connector.errors.WatchdogError`; ``reading()``: the index and first ``seq``
        of the epoch being read, and ``where`` the process that reads, for that error's
        message; ``reader``: what reads (the same records either way)."""
        missing = sorted({r.topic for r in ranges} - set(inputs))
        if missing:
            raise BrokerError(f"no input settings for topics {missing}")
        self._client = dict(client)
        self._ranges = sorted(ranges, key=lambda r: (r.topic, r.partition))
        self._inputs = inputs
        self._bad = bad_records
        self._job = job
        self._metrics = metrics
        self._batch_records = batch_records
        self._stall_timeout_s = stall_timeout_s
        self._reading = reading
        self._where = where
        self._reader = reader
        # Parts the source was split into, and how many of them finished reading.
        self._parts = 0
        self._parts_done = 0
        #: Records handed to the engine and bad records, per (topic, partition).
        self.read_counts: dict[tuple[str, int], int] = {}
        #: Seconds spent in the consumer (``consume``: fetching and sorting the messages in
        #: by partition) and decoding them (``decode``); the rest of the engine's ``read`` is
        #: its merge of the partitions. When split, the readers' seconds (summed) are
        #: ``reader consume`` and ``reader decode``.
        self.seconds: dict[str, float] = {"consume": 0.0, "decode": 0.0}

    def split(self, parts: int) -> list[SourcePart]:
        """Shares of about equally many records, each a :class:`KafkaPart` (see the module
        docstring)."""
        by_key = {(r.topic, r.partition): r for r in self._ranges}
        groups = split_partitions(self.partitions(), parts, [r.records for r in self._ranges])
        # Callbacks (error_cb: the driver's metrics) stay here: a reader has its own client.
        client = {k: v for k, v in self._client.items() if not callable(v)}
        self._parts = len(groups)
        self._parts_done = 0
        out: list[SourcePart] = []
        for group in groups:
            ranges = tuple(by_key[(s.topic, s.partition)] for s in group)
            topics = {r.topic for r in ranges}
            out.append(
                KafkaPart(
                    client,
                    ranges,
                    {t: i for t, i in self._inputs.items() if t in topics},
                    self._job,
                    self._batch_records,
                    self._stall_timeout_s,
                    self._reader,
                )
            )
        return out

    def absorb(self, report: object) -> None:
        """Take a :class:`ReadReport` of a part's reader: its bad records go to the run's
        bad-record handling (which may raise), its counts to the metrics, as if read here."""
        if not isinstance(report, ReadReport):
            raise BrokerError(f"expected a ReadReport from a reader, got {type(report).__name__}")
        for message, problem in report.bad:
            self._bad.handle(message, problem)
        if report.records:
            self._bad.read(report.records)
        for key, (count, next_offset) in report.read.items():
            if self._metrics is not None:
                self._metrics.records_read(key[0], key[1], count, next_offset)
            self.read_counts[key] = self.read_counts.get(key, 0) + count
        for key in report.done:
            if self._metrics is not None:
                self._metrics.partition_done(*key)
        for what, spent in report.seconds.items():
            name = f"reader {what}"
            self.seconds[name] = self.seconds.get(name, 0.0) + spent
        if report.finished:
            self._parts_done += 1
            if self._parts_done == self._parts:
                # Every part is read: judge the share of bad records over the whole input.
                self._bad.finish()

    def partitions(self) -> tuple[PartitionSpec, ...]:
        """Every partition of the ranges, empty ones included."""
        return tuple(
            PartitionSpec(r.topic, r.partition, self._inputs[r.topic].kind) for r in self._ranges
        )

    def batches(self) -> Iterator[PartitionBatch]:
        """Read every range to its end, yielding decoded batches; see the module docstring."""
        ends = {(r.topic, r.partition): r.end for r in self._ranges}
        pending = {
            (r.topic, r.partition): _Pending(next_offset=r.start, done=r.end <= r.start)
            for r in self._ranges
        }
        for key, state in pending.items():
            if state.done:
                yield self._final(key)
        live = {k for k, s in pending.items() if not s.done}
        if not live:
            return
        if self._reader == "native":
            yield from self._fetch(live, pending, ends)
            return
        consumer = Consumer(consumer_config(self._client, self._job))
        try:
            consumer.assign([TopicPartition(t, p, pending[(t, p)].next_offset) for t, p in live])
            last_progress = time.monotonic()
            while live:
                began = time.perf_counter()
                messages = consumer.consume(_CONSUME_BATCH, timeout=0.1)
                if messages:
                    last_progress = time.monotonic()
                elif time.monotonic() - last_progress > self._stall_timeout_s:
                    raise self._stalled(live, pending, ends)
                touched = self._sort_in(messages, pending, ends, live)
                self.seconds["consume"] += time.perf_counter() - began
                for key in sorted(touched):
                    state = pending[key]
                    if state.done or len(state.messages) >= self._batch_records:
                        yield from self._flush(key, state)
                    if state.done:
                        # Stop fetching what the range does not want (memory, bandwidth).
                        consumer.pause([TopicPartition(*key)])
        finally:
            consumer.close()
        # Every range is read: judge the share of bad records over the whole input.
        self._bad.finish()

    def _fetch(
        self,
        live: set[tuple[str, int]],
        pending: dict[tuple[str, int], _Pending],
        ends: Mapping[tuple[str, int], int],
    ) -> Iterator[PartitionBatch]:
        """:meth:`batches` through the native reader (:mod:`connector.kafka.fetcher`)."""
        callback = self._client.get("error_cb")
        fetcher = NativeFetcher(
            topic_leaders(self._client, min(self._stall_timeout_s, 30.0), "input"),
            {k: (pending[k].next_offset, ends[k]) for k in live},
            timeout_s=min(self._stall_timeout_s, 30.0),
            on_error=callback if callable(callback) else None,
            **fetch_settings(self._client),
        )
        try:
            fetcher.start()
            last_progress = time.monotonic()
            while live:
                began = time.perf_counter()
                events = fetcher.poll(0.1)
                if events:
                    last_progress = time.monotonic()
                elif time.monotonic() - last_progress > self._stall_timeout_s:
                    raise self._stalled(live, pending, ends)
                touched: set[tuple[str, int]] = set()
                for event in events:
                    key = (event.topic, event.partition)
                    state = pending[key]
                    touched.add(key)
                    records = event.records
                    if records is not None and len(records):
                        state.fetched.append(records)
                        state.fetched_count += len(records)
                        state.next_offset = int(records.offsets[-1]) + 1
                    if event.done:
                        state.done = True
                        live.discard(key)
                self.seconds["consume"] += time.perf_counter() - began
                for key in sorted(touched):
                    state = pending[key]
                    if state.done or state.fetched_count >= self._batch_records:
                        yield from self._flush(key, state)
        finally:
            fetcher.close()
        # Every range is read: judge the share of bad records over the whole input.
        self._bad.finish()

    def _stalled(
        self,
        live: set[tuple[str, int]],
        pending: Mapping[tuple[str, int], _Pending],
        ends: Mapping[tuple[str, int], int],
    ) -> WatchdogError:
        at = self._reading() if self._reading is not None else None
        where = "" if at is None else f" reading epoch {at[0]} (from seq {at[1]})"
        short = ", ".join(
            f"{t}/{p} at offset {pending[(t, p)].next_offset} of {ends[(t, p)]}"
            for t, p in sorted(live)
        )
        return WatchdogError(
            f"the reader ({self._where}, pid {os.getpid()}) made no progress for "
            f"{self._stall_timeout_s:.0f} s{where}: no records arrived while partitions are "
            f"short of their end offsets ({short}); is the broker reachable, or is a "
            "transaction on them still open (a read_committed reader waits for it)?",
            process="reader",
        )

    def _sort_in(
        self,
        messages: list[Message],
        pending: dict[tuple[str, int], _Pending],
        ends: Mapping[tuple[str, int], int],
        live: set[tuple[str, int]],
    ) -> set[tuple[str, int]]:
        touched: set[tuple[str, int]] = set()
        # The client hands out runs of one partition's records (one fetch response each):
        # handle a run at once, and only runs that carry an event (end of partition, an
        # error) record by record. Per-record Python here cost ~4 us a record.
        for key, group in groupby(messages, key=_partition_of):
            if key not in live:
                continue
            run = list(group)
            if any(m.error() is not None for m in run):
                self._sort_in_slowly(run, key, pending[key], ends[key], live)
                touched.add(key)
                continue
            state, end = pending[key], ends[key]
            last = run[-1].offset() or 0
            if last >= end:
                offsets = [m.offset() or 0 for m in run]
                run = run[: bisect_left(offsets, end)]
                state.done = True
                live.discard(key)
            if run:
                state.messages.extend(run)
                state.next_offset = (run[-1].offset() or 0) + 1
                if state.next_offset >= end:
                    state.done = True
                    live.discard(key)
            touched.add(key)
        return touched

    def _sort_in_slowly(
        self,
        run: list[Message],
        key: tuple[str, int],
        state: _Pending,
        end: int,
        live: set[tuple[str, int]],
    ) -> None:
        for m in run:
            if key not in live:
                return
            offset = m.offset() or 0
            error = m.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    if offset >= end:
                        state.done = True
                        live.discard(key)
                    continue
                if error.fatal() or not error.retriable():
                    raise BrokerError(f"reading {key[0]}/{key[1]}: {error.str()}")
                logger.warning("retriable error reading %s/%s: %s", key[0], key[1], error.str())
                continue
            if offset >= end:
                state.done = True
                live.discard(key)
                return
            state.messages.append(m)
            state.next_offset = offset + 1
            if state.next_offset >= end:
                state.done = True
                live.discard(key)

    def _flush(self, key: tuple[str, int], state: _Pending) -> Iterator[PartitionBatch]:
        rows: _Rows
        if state.fetched:
            rows = FetchedRecords.concat(state.fetched)
            state.fetched, state.fetched_count = [], 0
        else:
            rows = _Messages(state.messages)
            state.messages = []
        if len(rows):
            began = time.perf_counter()
            batch = self._decode(key, rows, final=state.done)
            self.seconds["decode"] += time.perf_counter() - began
            if self._metrics is not None:
                self._metrics.records_read(key[0], key[1], len(rows), state.next_offset)
            self.read_counts[key] = self.read_counts.get(key, 0) + len(rows)
            yield batch
        elif state.done:
            yield self._final(key)
        if state.done and self._metrics is not None:
            self._metrics.partition_done(*key)

    def _final(self, key: tuple[str, int]) -> PartitionBatch:
        empty = np.empty(0, dtype=np.int64)
        return PartitionBatch(key[0], key[1], self._inputs[key[0]].kind, empty, empty, {}, True)

    def _decode(self, key: tuple[str, int], rows: _Rows, *, final: bool) -> PartitionBatch:
        topic, partition = key
        spec = self._inputs[topic]
        n = len(rows)
        # A copy: the engine keeps offsets for a while, and fetched ones are a row of a
        # larger array.
        offsets = np.array(rows.offsets, dtype=np.int64)
        decoded = spec.decoder.decode(rows.value_rows(), rows.key_rows())
        problems = list(decoded.problems)
        good = decoded.good
        if spec.event_time is None:
            stamps, lacking = rows.stamps()
            ts = np.array(stamps, dtype=np.int64)
        else:
            # The decoder's columns hold the good rows only: the event times are theirs.
            good_ts, why = event_times(decoded.columns[spec.event_time], spec.event_time)
            ts = np.zeros(n, dtype=np.int64)
            ts[good] = good_ts
            good_rows = np.flatnonzero(good)
            lacking = {int(good_rows[local]): detail for local, detail in why.items()}
        lo, hi = EVENT_TIME_RANGE
        out_of_range = [
            i for i in np.flatnonzero((ts < lo) | (ts >= hi)).tolist() if i not in lacking
        ]
        if lacking or out_of_range:
            good = good.copy()
            for i, detail in lacking.items():
                if good[i]:
                    good[i] = False
                    problems.append(RecordProblem(i, "undecodable", detail))
            for i in out_of_range:
                if good[i]:
                    good[i] = False
                    problems.append(RecordProblem(i, "bad-timestamp", _time_detail(int(ts[i]))))
            problems.sort(key=lambda p: p.row)
        for problem in problems:
            self._bad.handle(rows.record(problem.row), problem)
        self._bad.read(n)
        columns = decoded.columns
        if lacking or out_of_range:
            # The decoder kept rows whose timestamp is missing or bad: drop them from its
            # columns too.
            keep = good[decoded.good]
            columns = {name: take_column(col, keep) for name, col in columns.items()}
        if spec.event_time == "ts":
            # "ts" is the event's own time, not a field beside it.
            columns = {name: col for name, col in columns.items() if name != "ts"}
        if problems:
            offsets, ts = offsets[good], ts[good]
        return PartitionBatch(topic, partition, spec.kind, offsets, ts, columns, final)


def _time_detail(ms: int) -> str:
    """Why an event time is out of range, for the dead letter's ``restream.detail``."""
    lo, hi = EVENT_TIME_RANGE
    when = (
        "before 1970-01-01 or at its first instant (Kafka writes 0 as the time of writing)"
        if ms < lo
        else "not before 2200-01-01"
    )
    return f"event time {ms} ms is {when}; accepted: [{lo}, {hi}) ms since the epoch"


def copy_record(message: RecordLike) -> RecordCopy:
    """A picklable copy of a bad record (a client's ``Message``, or a fetched record): what
    :class:`~connector.input.dead_letters.BadRecords` needs to dead-letter it in another
    process."""
    raw = message.headers()
    headers = None if raw is None else list(raw.items() if isinstance(raw, dict) else raw)
    return RecordCopy(
        message.topic() or "",
        message.partition() or 0,
        message.offset() or 0,
        message.key(),
        message.value(),
        headers,
        message.timestamp(),
    )


@dataclass(frozen=True, slots=True)
class ReadReport:
    """What a reader's :class:`KafkaPartSource` read since its last report: bad records with
    their problems, records read (good and bad), per partition the records and next offset,
    partitions finished, seconds (``consume``, ``decode``), and whether reading ended."""

    bad: list[tuple[RecordCopy, RecordProblem]]
    records: int
    read: dict[tuple[str, int], tuple[int, int]]
    done: list[tuple[str, int]]
    seconds: dict[str, float]
    finished: bool


class _Collected:
    """A reader's bad records and counts, kept for its next report (the handler and metrics
    of a :class:`KafkaPartSource`)."""

    def __init__(self) -> None:
        self.bad: list[tuple[RecordCopy, RecordProblem]] = []
        self.records = 0
        self.read: dict[tuple[str, int], tuple[int, int]] = {}
        self.done: list[tuple[str, int]] = []
        self.finished = False

    def handle(self, message: RecordLike, problem: RecordProblem) -> None:
        self.bad.append((copy_record(message), problem))

    def read_records(self, records: int) -> None:
        self.records += records

    def finish(self) -> None:
        self.finished = True

    def records_read(self, topic: str, partition: int, count: int, next_offset: int) -> None:
        before = self.read.get((topic, partition), (0, 0))[0]
        self.read[(topic, partition)] = (before + count, next_offset)

    def partition_done(self, topic: str, partition: int) -> None:
        self.done.append((topic, partition))


class _CollectedBad:
    """:class:`_Collected` as a :class:`BadRecordHandler` (its ``read`` is a counter there)."""

    def __init__(self, into: _Collected) -> None:
        self._into = into

    def handle(self, message: RecordLike, problem: RecordProblem) -> None:
        self._into.handle(message, problem)

    def read(self, records: int) -> None:
        self._into.read_records(records)

    def finish(self) -> None:
        self._into.finish()


class KafkaPartSource(KafkaSource):
    """A :class:`KafkaSource` over one part's ranges in a reader actor, that keeps what it
    finds for :meth:`report` instead of handling it (see the module docstring)."""

    def __init__(self, part: KafkaPart) -> None:
        self._collected = _Collected()
        super().__init__(
            part.client,
            part.ranges,
            part.inputs,
            _CollectedBad(self._collected),
            job=part.job,
            metrics=self._collected,
            batch_records=part.batch_records,
            stall_timeout_s=part.stall_timeout_s,
            where=f"a ray reader actor on {socket.gethostname()}",
            reader=part.reader,
        )
        self._reported = dict(self.seconds)

    def batches(self) -> Iterator[PartitionBatch]:
        """As :meth:`KafkaSource.batches`; the report after the last batch says so (also
        when every range of the part is empty, where nothing calls ``finish``). The reader
        actor reads with the replay's collector thresholds, as a run's coordinator does
        (a ``Message`` per record: see :mod:`connector.runtime.gcpolicy`)."""
        with replay_collection():
            yield from super().batches()
        self._collected.finished = True

    def report(self) -> ReadReport:
        """What was read since the last report (see :class:`ReadReport`)."""
        c = self._collected
        seconds = {k: v - self._reported.get(k, 0.0) for k, v in self.seconds.items()}
        self._reported = dict(self.seconds)
        out = ReadReport(c.bad, c.records, c.read, c.done, seconds, c.finished)
        self._collected.bad, self._collected.records = [], 0
        self._collected.read, self._collected.done = {}, []
        return out


@dataclass(frozen=True, slots=True)
class KafkaPart:
    """A share of a :class:`KafkaSource` for a reader actor (picklable; see the module
    docstring)."""

    client: Mapping[str, Any]
    ranges: tuple[PartitionRange, ...]
    inputs: Mapping[str, TopicInput]
    job: str
    batch_records: int
    stall_timeout_s: float
    reader: InputReader = "librdkafka"

    def partitions(self) -> tuple[PartitionSpec, ...]:
        """The part's partitions."""
        return tuple(
            PartitionSpec(r.topic, r.partition, self.inputs[r.topic].kind) for r in self.ranges
        )

    def open(self) -> KafkaPartSource:
        """The source over the part's ranges (in the reader actor)."""
        return KafkaPartSource(self)
