"""Bounded reading: exactly the resolved offset ranges, as columnar batches for the engine.

:class:`KafkaSource` implements :class:`engine.log.Source`. It assigns the partitions directly
(no consumer group is joined and nothing is committed), reads each one from its start offset to
just before its end offset, decodes values in bulk (:mod:`connector.serde.values`) and yields
:class:`~engine.log.PartitionBatch` es. A partition is finished when a record at or past its
end offset arrives, when the broker reports end-of-partition at or past it, or when its
range is empty: gaps (compaction, transaction markers) never make it wait for an offset that
will not come. The consumer reads ``read_committed``: records of aborted transactions are not
part of the log.

Records that cannot be used go to :class:`~connector.input.dead_letters.BadRecords`
(dead-lettered or fatal, by policy); the batch then carries only the good rows, with their
own offsets. Besides what the decoder rejects, a record is bad when it has no timestamp
(``undecodable``) or when its timestamp, the event time, is before 1970-01-01 or not before
2200-01-01 (``bad-timestamp``): such a time is a producer's bug, and one of them would make
every event-time figure of the job (replay speed, windows, watermark) absurd.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from connector.errors import BrokerError, WatchdogError
from connector.input.dead_letters import BadRecords
from connector.observability.metrics import JobMetrics
from connector.positions.ranges import PartitionRange
from connector.serde.event_time import EVENT_TIME_RANGE, event_times
from connector.serde.values import RecordProblem, ValueDecoder
from engine.log import PartitionBatch, PartitionSpec, take_column

__all__ = ["KafkaSource", "TopicInput", "consumer_config"]

logger = logging.getLogger(__name__)

_CONSUME_BATCH = 10_000
_NO_TIMESTAMP = 0  # confluent_kafka.TIMESTAMP_NOT_AVAILABLE


@dataclass(frozen=True, slots=True)
class TopicInput:
    """How to read one input topic: the event kind its records are and their decoder."""

    topic: str
    kind: str
    decoder: ValueDecoder
    #: The value field that holds the event time (``--event-time``); None: the record timestamp.
    event_time: str | None = None


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


def _partition_of(m: Message) -> tuple[str, int]:
    return (m.topic() or "", m.partition() or 0)


@dataclass(slots=True)
class _Pending:
    """Records of one partition read but not yet handed to the engine."""

    messages: list[Message] = field(default_factory=list)
    next_offset: int = 0
    done: bool = False


class KafkaSource:
    """The engine's :class:`~engine.log.Source` over resolved Kafka offset ranges."""

    def __init__(
        self,
        client: Mapping[str, Any],
        ranges: Sequence[PartitionRange],
        inputs: Mapping[str, TopicInput],
        bad_records: BadRecords,
        *,
        job: str,
        metrics: JobMetrics | None = None,
        batch_records: int = 50_000,
        stall_timeout_s: float = 120.0,
        reading: Callable[[], tuple[int, int] | None] | None = None,
    ) -> None:
        """``stall_timeout_s``: how long reading may bring no record before it fails with
        :class:`~connector.errors.WatchdogError`; ``reading()``: the index and first ``seq``
        of the epoch being read, for that error's message."""
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
        #: Records handed to the engine and bad records, per (topic, partition).
        self.read_counts: dict[tuple[str, int], int] = {}
        #: Seconds spent in the consumer (``consume``: fetching and sorting the messages in
        #: by partition) and decoding them (``decode``); the rest of the engine's ``read`` is
        #: its merge of the partitions.
        self.seconds: dict[str, float] = {"consume": 0.0, "decode": 0.0}

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
            f"the reader (in the coordinator, pid {os.getpid()}) made no progress for "
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
        messages, state.messages = state.messages, []
        if messages:
            began = time.perf_counter()
            batch = self._decode(key, messages, final=state.done)
            self.seconds["decode"] += time.perf_counter() - began
            if self._metrics is not None:
                self._metrics.records_read(key[0], key[1], len(messages), state.next_offset)
            self.read_counts[key] = self.read_counts.get(key, 0) + len(messages)
            yield batch
        elif state.done:
            yield self._final(key)
        if state.done and self._metrics is not None:
            self._metrics.partition_done(*key)

    def _final(self, key: tuple[str, int]) -> PartitionBatch:
        empty = np.empty(0, dtype=np.int64)
        return PartitionBatch(key[0], key[1], self._inputs[key[0]].kind, empty, empty, {}, True)

    def _decode(
        self, key: tuple[str, int], messages: list[Message], *, final: bool
    ) -> PartitionBatch:
        topic, partition = key
        spec = self._inputs[topic]
        n = len(messages)
        offsets = np.fromiter((m.offset() for m in messages), dtype=np.int64, count=n)
        decoded = spec.decoder.decode([m.value() for m in messages], [m.key() for m in messages])
        problems = list(decoded.problems)
        good = decoded.good
        if spec.event_time is None:
            stamps = [m.timestamp() for m in messages]
            ts = np.fromiter((t for _, t in stamps), dtype=np.int64, count=n)
            lacking = {
                i: "record has no timestamp"
                for i, (kind, _) in enumerate(stamps)
                if kind == _NO_TIMESTAMP
            }
        else:
            # The decoder's columns hold the good rows only: the event times are theirs.
            good_ts, why = event_times(decoded.columns[spec.event_time], spec.event_time)
            ts = np.zeros(n, dtype=np.int64)
            ts[good] = good_ts
            rows = np.flatnonzero(good)
            lacking = {int(rows[local]): detail for local, detail in why.items()}
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
            self._bad.handle(messages[problem.row], problem)
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
