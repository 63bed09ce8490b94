"""One writer of output partitions, wherever it runs: what a sink process's child
(:mod:`connector.output.sink_process`) and a sink actor (:mod:`connector.output.ray_sinks`)
each run.

A :class:`PartitionWriter` holds a :class:`~connector.output.sink.KafkaSink` with its own
producer (the native one or librdkafka's, made on first use), the client that reads a
checkpoint's marks back (:class:`~connector.output.verify.OutputMarker`) and the count of
the producer's broker errors. It takes one epoch's records at a time (:meth:`write`) and
flushes when asked (:meth:`flush`), and answers each with a small report that its owner
sends back to the run's coordinator: :class:`Written` (records written and skipped per
topic, seconds per stage) and :class:`Flushed` (the marks of the partitions written since
their last mark).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from connector.config import OutputHeaders
from connector.kafka.native import NativeProducer, topic_leaders
from connector.kafka.producer import BulkProducer
from connector.output.sink import Coordinates, KafkaSink, OutputTarget, Resume
from connector.output.verify import OutputMarker, PartitionMark
from engine.output import OutputChunk

__all__ = ["FlushOrder", "Flushed", "PartitionWriter", "SinkSettings", "Written"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SinkSettings:
    """What a writer needs to build its :class:`KafkaSink` (pickled when not forked)."""

    bootstrap: str
    producer_overrides: Mapping[str, Any]
    targets: Mapping[str, OutputTarget]
    job: str
    resume: Mapping[tuple[str, int], Resume]
    #: Seconds between the child's heartbeats (at most a quarter of the parent's timeout).
    heartbeat_s: float = 1.0
    #: The run's lease gate (:class:`connector.job.lease.LeaseGate`): checked before records
    #: are queued, and on SIGCONT, so a run that lost its lease writes nothing more.
    gate: Callable[[], None] | None = None
    #: Settings of the client that reads marks back (default: the bootstrap servers only).
    client: Mapping[str, Any] | None = None
    #: The job's ``output_headers`` mode.
    headers: OutputHeaders = "full"
    #: What writes the records: the native producer or librdkafka (``output_writer``,
    #: resolved: :func:`connector.kafka.native.native_unsupported`).
    writer: Literal["native", "librdkafka"] = "librdkafka"
    #: The native producer's wait for each broker response.
    write_timeout_s: float = 120.0


@dataclass(frozen=True, slots=True)
class Written:
    """One epoch written (queued to the producer): records written and skipped (as already
    there) per topic, when the writer queued its first record (``time.monotonic()`` of its
    own host), broker errors since the last report, and seconds in all and per stage."""

    written: dict[str, int]
    skipped: dict[str, int]
    first_write_at: float | None
    broker_errors: int
    seconds: float
    stages: dict[str, float]


@dataclass(frozen=True, slots=True)
class Flushed:
    """Everything written so far delivered: broker errors since the last report, the marks
    of the partitions written since they were last marked (empty unless asked for), and the
    seconds the flush took."""

    broker_errors: int
    marks: dict[tuple[str, int], PartitionMark]
    seconds: float


class _BrokerErrors:
    """The producer's error callback: log and count (the coordinator counts them too)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, error: Any) -> None:
        self.count += 1
        logger.warning("producer: %s (retrying)", error)


class PartitionWriter:
    """A :class:`KafkaSink` with its producer and marker; see the module docstring. Call
    :meth:`close` when done (:meth:`purge` first for a run that lost its lease)."""

    def __init__(self, settings: SinkSettings) -> None:
        self._settings = settings
        self._errors = _BrokerErrors()
        self._reported = 0  # broker errors already counted in a report
        self._producer: BulkProducer | NativeProducer | None = None
        self.sink = KafkaSink(
            self._make_producer,
            settings.targets,
            job=settings.job,
            resume=settings.resume,
            headers=settings.headers,
        )
        self._marker = OutputMarker(
            settings.client or {"bootstrap.servers": settings.bootstrap},
            settings.job,
            headerless=settings.headers == "none",
        )
        self._marked: dict[tuple[str, int], int] = {}  # the seq each partition was last marked at

    def _make_producer(self) -> BulkProducer | NativeProducer:
        settings = self._settings
        if self._producer is None and settings.writer == "native":
            client = settings.client or {"bootstrap.servers": settings.bootstrap}
            self._producer = NativeProducer(
                topic_leaders(client, settings.write_timeout_s),
                gate=settings.gate,
                timeout_s=settings.write_timeout_s,
                on_retry=self._errors,
            )
        elif self._producer is None:
            self._producer = BulkProducer(
                settings.bootstrap,
                {**settings.producer_overrides, "error_cb": self._errors},
                gate=settings.gate,
            )
        return self._producer

    def write(
        self,
        chunks: Sequence[OutputChunk],
        coords: Coordinates | None,
        partitions: Sequence[npt.NDArray[np.int32]] | None = None,
        *,
        began: float | None = None,
        began_cpu: float | None = None,
        stages: Mapping[str, float] | None = None,
    ) -> Written:
        """Encode and queue one epoch's records (see :meth:`KafkaSink.produce`). ``began``
        and ``began_cpu``: ``time.perf_counter()`` and ``time.thread_time()`` when the caller
        began the epoch (loading it), ``stages``: the caller's own seconds so far, all
        counted in the report. The stage ``cpu`` is the thread's CPU time for it all: on a
        busy machine the other stages, wall times, count waiting for a core too."""
        started = time.perf_counter() if began is None else began
        started_cpu = time.thread_time() if began_cpu is None else began_cpu
        sink = self.sink
        before_w, before_s = dict(sink.written), dict(sink.skipped)
        before_t = dict(sink.stage_seconds)
        sink.produce(chunks, coords, partitions)
        return Written(
            _delta(sink.written, before_w),
            _delta(sink.skipped, before_s),
            sink.first_write_at,
            self._new_errors(),
            time.perf_counter() - started,
            {
                **(stages or {}),
                **_seconds_delta(sink.stage_seconds, before_t),
                "cpu": time.thread_time() - started_cpu,
            },
        )

    def flush(self, mark: bool) -> Flushed:
        """Wait until every record queued is delivered; with ``mark``, read back the last
        record of every partition written since its last mark."""
        began = time.perf_counter()
        if self.sink.written:  # else no producer was made
            self._make_producer().flush()
        flushed = time.perf_counter() - began
        marks: dict[tuple[str, int], PartitionMark] = {}
        if mark:
            # Only partitions written since their last mark: the others' marks stand.
            changed = {k: s for k, s in self.sink.last_seq.items() if self._marked.get(k) != s}
            marks = self._marker.mark(changed, changed)
            self._marked.update(changed)
        return Flushed(self._new_errors(), marks, flushed)

    def purge(self) -> None:
        """Drop the records still queued (a run that lost its lease: they must not land)."""
        if self._producer is not None:
            self._producer.purge()

    def close(self) -> None:
        """Close the marker's clients."""
        self._marker.close()

    def _new_errors(self) -> int:
        count = self._errors.count - self._reported
        self._reported = self._errors.count
        return count


def _delta(now: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {k: n - before.get(k, 0) for k, n in now.items() if n != before.get(k, 0)}


def _seconds_delta(now: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    return {k: t - before.get(k, 0.0) for k, t in now.items() if t != before.get(k, 0.0)}


class FlushOrder:
    """The flushes a sink asked of all its ``writers`` (sink processes, sink actors), each
    complete once every writer has answered it, in the order asked. A flush's marks join
    :attr:`marks` only then (a mark from a later flush must not count for an earlier
    checkpoint), and then its callback runs."""

    def __init__(self, writers: int) -> None:
        #: Flushes asked, and flushes answered by every writer.
        self.asked = 0
        self.done = 0
        self._then: deque[Callable[[], None] | None] = deque()
        self._answers: list[deque[Mapping[tuple[str, int], PartitionMark]]] = [
            deque() for _ in range(writers)
        ]
        #: Per partition written, its newest mark (from flushes that asked for marks).
        self.marks: dict[tuple[str, int], PartitionMark] = {}

    @property
    def pending(self) -> bool:
        """Whether a flush is asked and not yet answered by every writer."""
        return self.done < self.asked

    def ask(self, then: Callable[[], None] | None) -> int:
        """A flush was asked of every writer; its ordinal (complete once :attr:`done`
        reaches it). ``then``: called once it is complete."""
        self.asked += 1
        self._then.append(then)
        return self.asked

    def answer(self, writer: int, marks: Mapping[tuple[str, int], PartitionMark]) -> None:
        """Writer ``writer`` answered its oldest unanswered flush with ``marks``."""
        self._answers[writer].append(marks)
        while self.done < self.asked and all(self._answers):
            for answers in self._answers:
                self.marks.update(answers.popleft())
            self.done += 1
            then = self._then.popleft()
            if then is not None:
                then()
