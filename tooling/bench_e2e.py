"""``restream bench e2e``: Kafka -> engine -> Kafka, against the raw ceilings of the same broker.

One run of the benchmark writes the social data set to a broker (embedded Tansu unless
``--bootstrap`` is given), then measures, ``--repeat`` times each:

- **consume ceiling**: a tuned consumer reads the same offset ranges, touching each record
  (topic, partition, offset, timestamp, key, value) as the reader does, decoding nothing;
  and the native reader (:mod:`connector.kafka.fetcher`) reads them into columns;
- **produce ceiling**: a producer writes as many records as the backtest outputs, with values
  and headers (those of the e2e run's ``output_headers`` mode) of the same sizes, to a fresh
  topic: librdkafka's, and the native producer's (:mod:`connector.kafka.native`) from
  columns;
- **e2e**: ``restream run`` with the spam backtest (the parallel executor by default) into a
  fresh output topic, with the time per activity.

Each measurement's output topics are deleted once it is measured, so that every pass sees a
broker holding the input only (the embedded broker keeps records in memory and slows down
as it grows: ~10% on a 10M-event run once it held 40M more records).

It prints medians and the ratio of the end-to-end rate to each ceiling, then where the last
e2e run's time went, stage by stage and process by process, in µs per record (per input event
for the coordinator's and the workers' stages, per output record for the sink process's):
:meth:`E2EResult.stages`. ``--json FILE`` writes the same figures to a file
(:meth:`E2EResult.to_json`).
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt
from confluent_kafka import Consumer, KafkaError, TopicPartition

from connector.config import (
    ExecutorName,
    InputReaderChoice,
    OutputHeaders,
    OutputWriter,
    RunConfig,
)
from connector.errors import BrokerError
from connector.input.reader import consumer_config
from connector.job.run import RunReport, run_job
from connector.kafka.batches import ByteRows, decimal_rows, encode_batches
from connector.kafka.fetcher import NativeFetcher
from connector.kafka.native import NativeProducer, topic_leaders
from connector.kafka.offsets import KafkaOffsets
from connector.kafka.producer import BulkProducer
from connector.observability.metrics import STAGE_PREFIX
from connector.output.headers import COMPACT, header_sections
from connector.output.sink import output_producer_settings
from connector.pipeline_loader import SOCIAL_SPAM
from connector.runtime.cpus import usable_cpus_here
from engine.examples.social.data import Skew, generate_social
from engine.executors.base import OPERATOR_PREFIX
from tooling.dataset import broker_for, drop_topics, unique_prefix, write_social_topics

__all__ = ["COORDINATOR_CPU", "E2EResult", "Stage", "run_e2e_bench", "stages_of"]

#: The breakdown's entry for the coordinator process's CPU seconds (all its threads).
COORDINATOR_CPU = "coordinator process cpu"


@dataclass(frozen=True, slots=True)
class Stage:
    """Where part of a run's time went: a stage of one process (or kind of process)."""

    process: str
    stage: str
    seconds: float
    #: What the µs are per: "event" (input) or "record" (output).
    per: str
    us_per_record: float


def stages_of(seconds: Mapping[str, float], events: int, outputs: int) -> list[Stage]:
    """The stages of a run from its ``RunStats.seconds``: the coordinator's (consume, decode,
    the log's merge with the rest of reading, hand-off to the workers, the merge of their
    output, hand-off to the sink), the workers' (compute: the phases, summed over workers),
    on ray with reader actors the readers' (consume, decode, cutting pieces; summed) and the
    driver's CPU for the key merge and routing (``route``), and the sink process's (load,
    keys and partitioning, resume skip, encode, headers, produce calls, flush). Stages a run
    did not time are left out."""

    def row(process: str, stage: str, spent: float, per: str) -> Stage:
        count = events if per == "event" else outputs
        return Stage(process, stage, spent, per, spent * 1e6 / count if count else 0.0)

    rows: list[Stage] = []
    if COORDINATOR_CPU in seconds:
        # What one process (the parallel coordinator, the Ray driver) spends: the figure
        # that says how many workers or nodes it can feed.
        rows.append(
            row("coordinator", "process CPU, all threads", seconds[COORDINATOR_CPU], "event")
        )
    consume = seconds.get(f"{STAGE_PREFIX}consume")
    decode = seconds.get(f"{STAGE_PREFIX}decode")
    read = seconds.get("read", 0.0)
    if "route" in seconds:
        # Ray with reader actors: the driver reads nothing; its read is waiting for keys.
        rows.append(row("coordinator", "waiting for the readers' keys", read, "event"))
    elif consume is not None and decode is not None:
        rows.append(row("coordinator", "consume", consume, "event"))
        rows.append(row("coordinator", "decode", decode, "event"))
        rows.append(
            row("coordinator", "merge (log) and rest of read", read - consume - decode, "event")
        )
    else:
        rows.append(row("coordinator", "read", read, "event"))
    if "route" in seconds:
        # Ray with reader actors: the driver's thread CPU for the key merge and hand-off calls.
        rows.append(row("coordinator", "key merge and routing (CPU)", seconds["route"], "event"))
    for key, stage in (
        (f"{STAGE_PREFIX}reader consume", "consume"),
        (f"{STAGE_PREFIX}reader decode", "decode"),
        ("reader piece", "cut pieces of epochs"),
    ):
        if key in seconds:
            rows.append(row("readers (summed)", stage, seconds[key], "event"))
    for key, stage in (
        ("move", "hand-off to workers (move, all processes)"),
        ("merge", "merge of the workers' output"),
        ("sink", "hand-off to the sink (waits included)"),
    ):
        if key in seconds:
            rows.append(row("coordinator", stage, seconds[key], "event"))
    phases = sum(v for k, v in seconds.items() if k.startswith("phase "))
    rows.append(row("workers (summed)", "compute (phases)", phases, "event"))
    if "assemble" in seconds:
        rows.append(
            row("workers (summed)", "assemble epochs from pieces", seconds["assemble"], "event")
        )
    if "exchange" in seconds:
        rows.append(
            row("workers (summed)", "exchange (within phases)", seconds["exchange"], "event")
        )
    for stage, label in (
        ("load", "load (from /dev/shm)"),
        ("keys", "keys and partitioning"),
        ("skip", "resume skip"),
        ("encode", "encode values"),
        ("headers", "headers"),
        ("produce", "produce calls"),
        ("flush", "flush"),
    ):
        spent = seconds.get(f"{STAGE_PREFIX}write {stage}")
        if spent is not None:
            rows.append(row("sink", label, spent, "record"))
    if "write" in seconds:
        rows.append(row("sink", "write (all but flush)", seconds["write"], "record"))
    cpu = seconds.get(f"{STAGE_PREFIX}write cpu")
    if cpu is not None:
        # The rows above are wall times, which on a busy machine count waiting for a core.
        rows.append(row("sink", "CPU (all but flush)", cpu, "record"))
    return rows


@dataclass(slots=True)
class E2EResult:
    """Seconds of every repetition, per measurement, and the last e2e run's breakdown."""

    events: int
    outputs: int
    consume_s: list[float] = field(default_factory=list)
    produce_s: list[float] = field(default_factory=list)
    #: The native producer's pass (the librdkafka one is ``produce_s``).
    native_produce_s: list[float] = field(default_factory=list)
    #: The native reader's pass (the librdkafka one is ``consume_s``).
    native_consume_s: list[float] = field(default_factory=list)
    e2e_s: list[float] = field(default_factory=list)
    speedups: list[float] = field(default_factory=list)
    breakdown: dict[str, float] = field(default_factory=dict)
    #: Output records of the last e2e run (the breakdown's).
    run_outputs: int = 0
    output_headers: OutputHeaders = "full"
    #: What wrote the e2e run's output (``output_writer``).
    output_writer: OutputWriter = "auto"
    #: What read the e2e run's input (``input_reader``).
    input_reader: InputReaderChoice = "auto"
    executor: ExecutorName = "parallel"
    #: Workers of the e2e runs (``--workers``, or one per usable CPU).
    workers: int = 0

    def stages(self) -> list[Stage]:
        """The last e2e run's time per stage (see :func:`stages_of`)."""
        return stages_of(self.breakdown, self.events, self.run_outputs or self.outputs)

    def to_json(self) -> dict[str, Any]:
        """Every figure of :meth:`table`, and each repetition's seconds."""
        consume = self.rate(self.consume_s, self.events)
        produce = self.rate(self.produce_s, self.outputs)
        e2e = self.rate(self.e2e_s, self.events)
        return {
            "events": self.events,
            "outputs": self.outputs,
            "output_headers": self.output_headers,
            "output_writer": self.output_writer,
            "input_reader": self.input_reader,
            "executor": self.executor,
            "workers": self.workers,
            "seconds": {
                "consume": self.consume_s,
                "consume_native": self.native_consume_s,
                "produce": self.produce_s,
                "produce_native": self.native_produce_s,
                "e2e": self.e2e_s,
            },
            "records_per_second": {
                "consume": consume,
                "consume_native": self._native_consume_rate(),
                "produce": produce,
                "produce_native": self._native_rate(),
                "e2e": e2e,
            },
            "ratio_to_consume_ceiling": e2e / consume,
            "ratio_to_produce_ceiling": e2e / produce * self.outputs / self.events,
            "replay_speedup": statistics.median(self.speedups),
            "stages": [
                {
                    "process": st.process,
                    "stage": st.stage,
                    "seconds": st.seconds,
                    "per": st.per,
                    "us_per_record": st.us_per_record,
                }
                for st in self.stages()
            ],
            "breakdown": dict(sorted(self.breakdown.items())),
        }

    def rate(self, seconds: Sequence[float], count: int) -> float:
        """Records per second at the median time."""
        return count / statistics.median(seconds)

    def _native_rate(self) -> float | None:
        return self.rate(self.native_produce_s, self.outputs) if self.native_produce_s else None

    def _native_consume_rate(self) -> float | None:
        return self.rate(self.native_consume_s, self.events) if self.native_consume_s else None

    def table(self) -> str:
        """The result as a plain-text table."""
        consume = self.rate(self.consume_s, self.events)
        produce = self.rate(self.produce_s, self.outputs)
        e2e = self.rate(self.e2e_s, self.events)
        lines = [
            f"{'measurement':<18}{'median s':>10}{'records/s':>14}{'e2e ratio':>11}",
            f"{'consume ceiling':<18}{statistics.median(self.consume_s):>10.2f}"
            f"{consume:>14,.0f}{e2e / consume:>11.2f}",
        ]
        native_consume = self._native_consume_rate()
        if native_consume is not None:
            lines.append(
                f"{'consume (native)':<18}{statistics.median(self.native_consume_s):>10.2f}"
                f"{native_consume:>14,.0f}{e2e / native_consume:>11.2f}"
            )
        lines += [
            f"{'produce ceiling':<18}{statistics.median(self.produce_s):>10.2f}"
            f"{produce:>14,.0f}{e2e / produce * self.outputs / self.events:>11.2f}",
        ]
        native = self._native_rate()
        if native is not None:
            lines.append(
                f"{'produce (native)':<18}{statistics.median(self.native_produce_s):>10.2f}"
                f"{native:>14,.0f}{e2e / native * self.outputs / self.events:>11.2f}"
            )
        lines += [
            f"{'e2e (run)':<18}{statistics.median(self.e2e_s):>10.2f}{e2e:>14,.0f}{1:>11.2f}",
            f"replay speed (median): {statistics.median(self.speedups):,.0f}x real time; "
            f"input events {self.events:,}, output records {self.outputs:,}",
            "time per activity in the last e2e run (s, summed over processes): "
            + ", ".join(
                f"{k} {v:.2f}"
                for k, v in sorted(self.breakdown.items())
                if not k.startswith((OPERATOR_PREFIX, STAGE_PREFIX))
            ),
            f"per stage in the last e2e run (output_headers {self.output_headers}, "
            f"output_writer {self.output_writer}, input_reader {self.input_reader}):",
            f"  {'process':<18}{'stage':<44}{'s':>8}{'µs':>8}  per",
        ]
        for st in self.stages():
            lines.append(
                f"  {st.process:<18}{st.stage:<44}{st.seconds:>8.2f}{st.us_per_record:>8.2f}"
                f"  {st.per}"
            )
        return "\n".join(lines)


def _consume_pass(bootstrap: str, topics: Sequence[str], partitions: int, total: int) -> float:
    consumer = Consumer(consumer_config({"bootstrap.servers": bootstrap}, "bench"))
    began = time.perf_counter()
    seen = 0
    live = {(t, p) for t in topics for p in range(partitions)}
    checksum = 0
    try:
        consumer.assign([TopicPartition(t, p, 0) for t, p in sorted(live)])
        deadline = time.monotonic() + 600
        while live:
            if time.monotonic() > deadline:
                raise BrokerError(f"consume pass stuck with {sorted(live)} unfinished")
            for m in consumer.consume(10_000, timeout=0.1):
                error = m.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        live.discard((m.topic() or "", m.partition() or 0))
                    continue
                # Touch what the reader touches, so the ceiling is comparable.
                m.topic(), m.partition(), m.key()
                checksum += (m.offset() or 0) + m.timestamp()[1] + len(m.value() or b"")
                seen += 1
    finally:
        consumer.close()
    if seen != total:
        raise BrokerError(f"consume pass read {seen:,} records, expected {total:,}")
    return time.perf_counter() - began


def _native_consume_pass(
    bootstrap: str, topics: Sequence[str], partitions: int, total: int
) -> float:
    """The consume pass through the native reader: every record fetched and read into
    columns (offsets, timestamps, where each key and value is)."""
    client = {"bootstrap.servers": bootstrap}
    offsets = KafkaOffsets(client, timeout_s=30.0)
    try:
        marks = offsets.watermarks([(t, p) for t in topics for p in range(partitions)])
    finally:
        offsets.close()
    ranges = {key: (low, high) for key, (low, high) in marks.items()}
    began = time.perf_counter()
    fetcher = NativeFetcher(topic_leaders(client, 30.0, "input"), ranges)
    seen = checksum = 0
    deadline = time.monotonic() + 600
    try:
        fetcher.start()
        while fetcher.live:
            if time.monotonic() > deadline:
                raise BrokerError(f"native consume pass stuck with {sorted(fetcher.live)} unread")
            for got in fetcher.poll(0.1):
                if got.records is not None:
                    seen += len(got.records)
                    checksum += int(got.records.timestamps.sum())
                    checksum += int(got.records.value_lengths.sum())
    finally:
        fetcher.close()
    if seen != total:
        raise BrokerError(f"native consume pass read {seen:,} records, expected {total:,}")
    return time.perf_counter() - began


def _produce_pass(
    bootstrap: str, count: int, partitions: int, value_size: int, mode: OutputHeaders = "full"
) -> float:
    topic = f"bench-produce-{uuid.uuid4().hex[:8]}.out"
    from connector.kafka.producer import TopicSpec, create_topics

    create_topics(bootstrap, [TopicSpec(topic, partitions)])
    producer = BulkProducer(bootstrap, output_producer_settings())
    value = b"x" * value_size
    # The headers of the e2e run's mode, of the same sizes.
    headers_of: dict[str, list[tuple[str, bytes]] | None] = {
        "full": [
            ("restream.seq", b"123456"),
            ("restream.source", b"social.messages/1@123456"),
            ("restream.job", b"bench"),
        ],
        "compact": [(COMPACT, b"\x00" * 5 + b"\x01\xe2\x40bench-0123abcd")],
        "none": None,
    }
    header = headers_of[mode]
    began = time.perf_counter()
    chunk = 50_000
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        producer.produce(
            topic,
            [value] * n,
            [str(i).encode() for i in range(start, start + n)],
            [i % partitions for i in range(start, start + n)],
            [1_700_000_000_000 + i for i in range(start, start + n)],
            None if header is None else [header] * n,
        )
    producer.flush()
    seconds = time.perf_counter() - began
    drop_topics(bootstrap, topic.removesuffix(".out"))
    return seconds


def _native_produce_pass(
    bootstrap: str, count: int, partitions: int, value_size: int, mode: OutputHeaders = "full"
) -> float:
    """The produce pass through the native producer: the same records, as columns."""
    topic = f"bench-native-{uuid.uuid4().hex[:8]}.out"
    from connector.kafka.producer import TopicSpec, create_topics

    create_topics(bootstrap, [TopicSpec(topic, partitions)])
    client = {"bootstrap.servers": bootstrap}
    producer = NativeProducer(topic_leaders(client, 30.0), timeout_s=30.0)

    def columns(rows: npt.NDArray[np.int64]) -> tuple[Any, ...]:
        n = len(rows)
        values = ByteRows(
            np.full(n * value_size, ord("x"), dtype=np.uint8),
            np.arange(n + 1, dtype=np.int64) * value_size,
        )
        # Headers of the e2e run's mode, about the sizes of the e2e run's own.
        sources = (["social.messages"], np.zeros(n, np.int64), rows % partitions, rows)
        keys = decimal_rows(rows)
        headers = header_sections(mode, rows, b"bench", sources)
        return (rows % partitions).astype(np.int32), 1_700_000_000_000 + rows, keys, values, headers

    # Compile (or load) the kernels for these column types before the clock starts.
    encode_batches(np.arange(2), *columns(np.arange(2, dtype=np.int64))[1:])
    began = time.perf_counter()
    chunk = 50_000
    for start in range(0, count, chunk):
        producer.produce(topic, *columns(np.arange(start, min(start + chunk, count))))
    producer.flush()
    seconds = time.perf_counter() - began
    producer.close()
    drop_topics(bootstrap, topic.removesuffix(".out"))
    return seconds


def run_e2e_bench(
    *,
    events: int,
    users: int = 100_000,
    days: int = 30,
    partitions: int = 4,
    repeat: int = 3,
    workers: int = 0,
    executor: ExecutorName = "parallel",
    bootstrap: str | None = None,
    progress: Callable[[str], None] = lambda _msg: None,
    shape: tuple[Skew, int] | None = None,
    output_headers: OutputHeaders = "full",
    ray_readers: int = 0,
    output_writer: OutputWriter = "auto",
    input_reader: InputReaderChoice = "auto",
    ray_sinks: int = 0,
) -> E2EResult:
    """Measure (see the module docstring) and return the result. ``shape``: the data set's
    skew and backwards jitter (default: the uniform data set); ``output_headers``: the
    e2e run's header mode."""
    skew, jitter_ms = shape or (Skew(), 0)
    with broker_for(bootstrap) as broker:
        data = generate_social(
            users=users,
            events=events,
            days=days,
            partitions=partitions,
            jitter_ms=jitter_ms,
            skew=skew,
        )
        written = write_social_topics(
            data, bootstrap=broker.bootstrap, prefix=unique_prefix("bench")
        )
        report, topics, inputs = written.written, written.topics, written.inputs
        outputs = len(data.messages)
        # The run's process should not hold the generated data set: a user's does not.
        del data, written
        progress(f"wrote {report.records:,} events at {report.rate:,.0f}/s")
        result = E2EResult(
            events=report.records,
            outputs=outputs,
            output_headers=output_headers,
            output_writer=output_writer,
            input_reader=input_reader,
            executor=executor,
            workers=workers or usable_cpus_here().count,
        )
        value_size = 40  # a SpamScore value is 30-45 bytes of Avro
        for i in range(repeat):
            result.consume_s.append(
                _consume_pass(broker.bootstrap, topics, partitions, report.records)
            )
            result.native_consume_s.append(
                _native_consume_pass(broker.bootstrap, topics, partitions, report.records)
            )
            result.produce_s.append(
                _produce_pass(
                    broker.bootstrap, result.outputs, partitions, value_size, output_headers
                )
            )
            result.native_produce_s.append(
                _native_produce_pass(
                    broker.bootstrap, result.outputs, partitions, value_size, output_headers
                )
            )
            cpu = _own_cpu()
            run = _e2e_pass(
                broker.bootstrap,
                inputs,
                workers,
                executor,
                output_headers,
                ray_readers,
                output_writer,
                input_reader,
                ray_sinks,
            )
            cpu = _own_cpu() - cpu
            drop_topics(broker.bootstrap, run.job)
            result.e2e_s.append(run.wall_seconds)
            result.speedups.append(run.replay_speedup)
            result.breakdown = {**run.stats.seconds, COORDINATOR_CPU: cpu}
            result.run_outputs = sum(run.outputs.values())
            progress(
                f"repetition {i + 1}/{repeat}: consume {result.consume_s[-1]:.2f} s (native "
                f"{result.native_consume_s[-1]:.2f} s), produce "
                f"{result.produce_s[-1]:.2f} s (native {result.native_produce_s[-1]:.2f} s), "
                f"e2e {run.wall_seconds:.2f} s"
            )
    return result


def _own_cpu() -> float:
    """CPU seconds of this process, every thread (the run's coordinator, or Ray driver, is
    this process; its workers, sink process and Ray's daemons are others)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _e2e_pass(
    bootstrap: str,
    inputs: tuple[tuple[str, str], ...],
    workers: int,
    executor: ExecutorName,
    output_headers: OutputHeaders,
    ray_readers: int = 0,
    output_writer: OutputWriter = "auto",
    input_reader: InputReaderChoice = "auto",
    ray_sinks: int = 0,
) -> RunReport:
    config = RunConfig(
        job_id=unique_prefix("bench"),
        pipeline=SOCIAL_SPAM,
        bootstrap_servers=bootstrap,
        inputs=inputs,
        workers=workers,
        executor=executor,
        progress="none",
        output_headers=output_headers,
        output_writer=output_writer,
        input_reader=input_reader,
        ray_readers=ray_readers,
        ray_sinks=ray_sinks,
    )
    return run_job(config, out=sys.stderr)


def bench_e2e_command(args: Any, out: TextIO, shape: tuple[Skew, int] | None = None) -> int:
    """``restream bench e2e``: run and print the table."""
    result = run_e2e_bench(
        events=args.events,
        users=args.users,
        days=args.days,
        partitions=args.partitions,
        repeat=args.repeat,
        workers=args.workers,
        executor=args.executor,
        bootstrap=args.bootstrap,
        progress=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True),
        shape=shape,
        output_headers=args.output_headers,
        ray_readers=args.ray_readers,
        ray_sinks=args.ray_sinks,
        output_writer=args.output_writer,
        input_reader=args.input_reader,
    )
    print(result.table(), file=out)
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_json(), indent=1) + "\n")
        print(f"wrote {args.json}", file=out)
    return 0
