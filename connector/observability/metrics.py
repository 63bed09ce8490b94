"""Prometheus metrics of a replay job (DESIGN.md section 5), served while it runs and pushed.

Each job owns a private registry (no global state, so tests and several jobs in one process
don't collide). Labels stay bounded: topics and partitions of the job's own ranges, phases of
its plan, the five bad-record reasons. :data:`METRICS` lists every exported name with its help
text; the README's metrics table and the Grafana dashboard use exactly these names.

The headline gauge is ``restream_replay_speedup``: event time processed (last minus first
event timestamp seen, among those from 1970 to 2200: :func:`event_time_bounds`) divided by
wall time since the replay started.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.exposition import push_to_gateway

from connector.config import setting
from connector.errors import ConfigError, ConnectorError
from connector.serde.event_time import EVENT_TIME_RANGE
from engine.executors.base import OPERATOR_PREFIX

__all__ = [
    "METRICS",
    "SANE_EVENT_TIME_MS",
    "STAGE_PREFIX",
    "JobMetrics",
    "MetricsServer",
    "PartitionKey",
    "Snapshot",
    "event_time_bounds",
]

logger = logging.getLogger(__name__)

PartitionKey = tuple[str, int]

#: Every metric the job exports: name (as scraped, without _total/_bucket suffixes for the
#: counter/histogram families) -> help text.
METRICS: Mapping[str, str] = {
    "restream_job_info": "Constant 1, labelled with the job id, pipeline and executor.",
    "restream_range_start_offset": "First offset to read, per input partition.",
    "restream_range_end_offset": "Offset to stop before, per input partition.",
    "restream_range_records": "Records in the resolved input ranges (upper bound with gaps).",
    "restream_events_read": "Input records read from Kafka, per topic.",
    "restream_events_processed": "Events that went through the pipeline.",
    "restream_output_records": "Records written to output topics, per topic.",
    "restream_bad_records": "Input records that could not be used, per reason.",
    "restream_dead_letter_records": "Bad input records written to the dead-letter topic.",
    "restream_partition_lag_records": "Records still to read before the end offset, per partition.",
    "restream_watermark_timestamp_seconds": "Latest event time processed (Unix seconds).",
    "restream_event_time_processed_seconds": "Event-time span processed so far.",
    "restream_replay_speedup": "Event-time span processed divided by wall time.",
    "restream_events_per_second": "Events processed per wall-clock second since start.",
    "restream_progress_ratio": "Share of the input ranges processed, 0 to 1.",
    "restream_eta_seconds": "Estimated seconds until the job is done.",
    "restream_elapsed_seconds": "Wall time since the replay started.",
    "restream_epochs": "Epochs finished.",
    "restream_epoch_duration_seconds": "Wall time between consecutive finished epochs.",
    "restream_phase_seconds": "Seconds spent per activity (read, phases, data movement, sink).",
    "restream_job_success": "1 once the job finished successfully, 0 when it failed.",
    "restream_checkpoints": "Checkpoints written by this run.",
    "restream_checkpoint_duration_seconds": "Time spent writing a checkpoint.",
    "restream_checkpoint_bytes": "Size of the last checkpoint written.",
    "restream_checkpoints_damaged": "Damaged checkpoints skipped when resuming.",
    "restream_resumes": "1 when this run resumed from a checkpoint (a restarted job).",
    "restream_resumed_from_seq": "The seq this run resumed at (0 for a fresh start).",
    "restream_output_skipped_records": "Output records not written again: already in the topic.",
    "restream_broker_errors": "Broker connection errors and timeouts seen (the client retries).",
    "restream_stalls": "Processes that made no progress for stall_timeout (worker, sink, reader).",
}

#: Run times (``RunStats.seconds``) whose key starts with this are a breakdown of another
#: activity (``stage consume`` of ``read``, ``stage write produce`` of ``write``): the bench
#: prints them; as labels of ``restream_phase_seconds`` they would count twice.
STAGE_PREFIX = "stage "

#: Event times (ms) that count towards the replay speed (the reader dead-letters the others;
#: other sources of epochs may not).
SANE_EVENT_TIME_MS = EVENT_TIME_RANGE


def event_time_bounds(ts: npt.NDArray[np.int64]) -> tuple[int | None, int | None]:
    """The least and greatest of ``ts`` within :data:`SANE_EVENT_TIME_MS` (None if none)."""
    lo, hi = SANE_EVENT_TIME_MS
    sane = ts[(ts >= lo) & (ts < hi)] if len(ts) else ts
    if not len(sane):
        return None, None
    return int(sane.min()), int(sane.max())


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The job's headline figures at one moment."""

    events: int
    elapsed_s: float
    events_per_second: float
    event_time_span_s: float
    replay_speedup: float
    done_ratio: float
    eta_s: float


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """A running HTTP metrics endpoint; :meth:`close` stops it."""

    server: Any
    thread: threading.Thread
    port: int

    def close(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5.0)


class JobMetrics:
    """The metrics of one job run, updated by the reader, the sink and the run loop."""

    def __init__(self, *, job: str, pipeline: str, executor: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        p = ("topic", "partition")

        def gauge(name: str, *labels: str) -> Gauge:
            return Gauge(name, METRICS[name], labels, registry=r)

        def counter(name: str, *labels: str) -> Counter:
            return Counter(name, METRICS[name], labels, registry=r)

        def histogram(name: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, METRICS[name], buckets=buckets, registry=r)

        self.info = gauge("restream_job_info", "job", "pipeline", "executor")
        self.info.labels(job, pipeline, executor).set(1)
        self.range_start = gauge("restream_range_start_offset", *p)
        self.range_end = gauge("restream_range_end_offset", *p)
        self.range_records = gauge("restream_range_records")
        self.read = counter("restream_events_read", "topic")
        self.processed = counter("restream_events_processed")
        self.output = counter("restream_output_records", "topic")
        self.bad = counter("restream_bad_records", "reason")
        self.dead_letters = counter("restream_dead_letter_records", "reason")
        self.lag = gauge("restream_partition_lag_records", *p)
        self.watermark = gauge("restream_watermark_timestamp_seconds")
        self.span = gauge("restream_event_time_processed_seconds")
        self.speedup = gauge("restream_replay_speedup")
        self.rate = gauge("restream_events_per_second")
        self.progress = gauge("restream_progress_ratio")
        self.eta = gauge("restream_eta_seconds")
        self.elapsed = gauge("restream_elapsed_seconds")
        self.epochs = counter("restream_epochs")
        self.epoch_seconds = histogram(
            "restream_epoch_duration_seconds", (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
        )
        self.phase_seconds = counter("restream_phase_seconds", "phase")
        self.success = gauge("restream_job_success")
        self.checkpoints = counter("restream_checkpoints")
        self.checkpoint_seconds = histogram(
            "restream_checkpoint_duration_seconds",
            (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.checkpoint_bytes = gauge("restream_checkpoint_bytes")
        self.damaged = counter("restream_checkpoints_damaged")
        self.resumes = counter("restream_resumes")
        self.resumed_from = gauge("restream_resumed_from_seq")
        self.skipped = counter("restream_output_skipped_records", "topic")
        self.broker_errors = counter("restream_broker_errors", "client")
        self.stalls = counter("restream_stalls", "process")
        self._started = time.monotonic()
        self._last_epoch = self._started
        self._total = 0
        self._read_total = 0
        self._processed = 0
        self._first_ts: int | None = None
        self._last_ts: int | None = None
        self._phase_seen: dict[str, float] = {}
        self._ends: dict[PartitionKey, int] = {}
        self._snapshot = Snapshot(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        self._processed_before = 0

    # -- set-up ---------------------------------------------------------------------------
    def set_ranges(self, ranges: Iterable[tuple[str, int, int, int]]) -> None:
        """Publish the resolved input ranges ``(topic, partition, start, end)`` before work."""
        total = 0
        for topic, partition, start, end in ranges:
            key = (topic, str(partition))
            self.range_start.labels(*key).set(start)
            self.range_end.labels(*key).set(end)
            self.lag.labels(*key).set(end - start)
            self._ends[(topic, partition)] = end
            total += end - start
        self._total = total
        self.range_records.set(total)
        self.progress.set(1.0 if total == 0 else 0.0)

    def start_clock(self) -> None:
        """Start the wall clock that speed and ETA are measured against."""
        self._started = self._last_epoch = time.monotonic()

    # -- updates ----------------------------------------------------------------------------
    def records_read(self, topic: str, partition: int, count: int, next_offset: int) -> None:
        """``count`` records of a partition were read; the next one to read is ``next_offset``."""
        self.read.labels(topic).inc(count)
        self._read_total += count
        end = self._ends.get((topic, partition))
        if end is not None:
            self.lag.labels(topic, str(partition)).set(max(end - next_offset, 0))

    def partition_done(self, topic: str, partition: int) -> None:
        """A partition reached its end offset (gaps may leave fewer records than the range)."""
        self.lag.labels(topic, str(partition)).set(0)

    def bad_record(self, reason: str, *, dead_lettered: bool) -> None:
        """Count a bad input record (and, when it went there, its dead letter)."""
        self.bad.labels(reason).inc()
        if dead_lettered:
            self.dead_letters.labels(reason).inc()

    def checkpoint_saved(self, seconds: float, size: int) -> None:
        """A checkpoint of ``size`` bytes was written in ``seconds``."""
        self.checkpoints.inc()
        self.checkpoint_seconds.observe(seconds)
        self.checkpoint_bytes.set(size)

    def checkpoint_damaged(self) -> None:
        """A damaged checkpoint was skipped."""
        self.damaged.inc()

    def resumed(self, seq: int, skipped_records: int) -> None:
        """This run resumed at ``seq``; ``skipped_records`` input records were done before."""
        self.resumes.inc()
        self.resumed_from.set(seq)
        self._processed_before = seq
        self._read_total += skipped_records

    def output_skipped(self, topic: str, count: int) -> None:
        """``count`` output records were already in ``topic`` and not written again."""
        self.skipped.labels(topic).inc(count)

    def broker_error(self, client: str) -> None:
        """A Kafka client reported a (retried) connection error or timeout."""
        self.broker_errors.labels(client).inc()

    def stalled(self, process: str) -> None:
        """A process of the run (``worker``, ``sink`` or ``reader``) made no progress."""
        self.stalls.labels(process).inc()

    def records_written(self, topic: str, count: int) -> None:
        """``count`` records were handed to the producer for ``topic``."""
        self.output.labels(topic).inc(count)

    def epoch_done(
        self, events: int, first_ts: int | None, last_ts: int | None, seconds: Mapping[str, float]
    ) -> None:
        """An epoch finished. ``seconds`` are the run's cumulative times per activity."""
        now = time.monotonic()
        self.epochs.inc()
        self.epoch_seconds.observe(now - self._last_epoch)
        self._last_epoch = now
        self._processed += events
        self.processed.inc(events)
        lo, hi = SANE_EVENT_TIME_MS
        if first_ts is not None and lo <= first_ts < hi:
            self._first_ts = first_ts if self._first_ts is None else min(self._first_ts, first_ts)
        if last_ts is not None and lo <= last_ts < hi:
            self._last_ts = last_ts if self._last_ts is None else max(self._last_ts, last_ts)
        self._add_phase_seconds(seconds)
        self._refresh(now)

    def _refresh(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-9)
        self.elapsed.set(elapsed)
        self.rate.set(self._processed / elapsed)
        span_s = 0.0
        if self._first_ts is not None and self._last_ts is not None:
            span_s = (self._last_ts - self._first_ts) / 1000
            self.watermark.set(self._last_ts / 1000)
            self.span.set(span_s)
            self.speedup.set(span_s / elapsed)
        done = self.done_ratio
        self.progress.set(done)
        # From this run's own rate: a resumed run did not process what came before it.
        rate = self._processed / elapsed
        remaining = max(self._total - self._processed - self._processed_before, 0)
        eta = remaining / rate if rate > 0 else 0.0
        self.eta.set(eta)
        self._snapshot = Snapshot(
            self._processed, elapsed, self._processed / elapsed, span_s, span_s / elapsed, done, eta
        )

    def snapshot(self) -> Snapshot:
        """The figures as of the last finished epoch (or :meth:`finish`)."""
        return self._snapshot

    @property
    def done_ratio(self) -> float:
        """Share of the input ranges processed (0..1), counting what a resumed run skipped."""
        if self._total == 0:
            return 1.0
        return min((self._processed + self._processed_before) / self._total, 1.0)

    def _add_phase_seconds(self, seconds: Mapping[str, float]) -> None:
        """Advance the per-activity counters to the run's totals. Per-operator times are a
        breakdown of the phases (the bench prints them); as labels they would count twice."""
        for what, total in seconds.items():
            if what.startswith((OPERATOR_PREFIX, STAGE_PREFIX)):
                continue
            delta = total - self._phase_seen.get(what, 0.0)
            if delta > 0:
                self.phase_seconds.labels(what).inc(delta)
                self._phase_seen[what] = total

    def finish(self, *, success: bool, seconds: Mapping[str, float] | None = None) -> None:
        """Final values: progress 1 and ETA 0 on success; the success gauge either way."""
        now = time.monotonic()
        self._add_phase_seconds(seconds or {})
        self._refresh(now)
        if success:
            self.progress.set(1.0)
            self.eta.set(0)
            snap = self._snapshot
            self._snapshot = Snapshot(
                snap.events,
                snap.elapsed_s,
                snap.events_per_second,
                snap.event_time_span_s,
                snap.replay_speedup,
                1.0,
                0.0,
            )
        self.success.set(1 if success else 0)

    # -- exposure -----------------------------------------------------------------------------
    def serve(self, port: int, host: str) -> MetricsServer:
        """Serve ``/metrics`` over HTTP on ``host:port`` (port 0: any free port)."""
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                setting("metrics_port").label,
                f"cannot serve metrics on {host}:{port}: {exc}; choose a free port or 0 for off",
            ) from exc
        bound = int(server.server_address[1])
        logger.info("serving metrics on http://%s:%s/metrics", host, bound)
        return MetricsServer(server, thread, bound)

    def push(self, gateway: str, *, job: str) -> None:
        """Push every metric to a Pushgateway, grouped by ``job``; failures are errors."""
        try:
            push_to_gateway(
                gateway, job="restream", registry=self.registry, grouping_key={"job_id": job}
            )
        except OSError as exc:
            raise ConnectorError(
                f"cannot push metrics to the Pushgateway at {gateway}: {exc}"
            ) from exc
        logger.info("pushed metrics to %s", gateway)
