"""``restream bench e2e``: Kafka -> engine -> Kafka, against the raw ceilings of the same broker.

One run of the benchmark writes the social data set to a broker (embedded Tansu unless
``--bootstrap`` is given), then measures, ``--repeat`` times each:

- **consume ceiling**: a tuned consumer reads the same offset ranges, touching each record
  (topic, partition, offset, timestamp, key, value) as the reader does, decoding nothing;
- **produce ceiling**: a producer writes as many records as the backtest outputs, with values
  and headers of the same sizes, to a fresh topic;
- **e2e**: ``restream run`` with the spam backtest (the parallel executor by default) into a
  fresh output topic, with the time per activity.

It prints medians and the ratio of the end-to-end rate to each ceiling.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from confluent_kafka import Consumer, KafkaError, TopicPartition

from connector.config import ExecutorName, RunConfig
from connector.errors import BrokerError
from connector.input.reader import consumer_config
from connector.job.run import RunReport, run_job
from connector.kafka.producer import BulkProducer
from connector.output.sink import output_producer_settings
from connector.pipeline_loader import SOCIAL_SPAM
from engine.examples.social.data import Skew, generate_social
from engine.executors.base import OPERATOR_PREFIX
from tooling.dataset import broker_for, unique_prefix, write_social_topics

__all__ = ["E2EResult", "run_e2e_bench"]


@dataclass(slots=True)
class E2EResult:
    """Seconds of every repetition, per measurement, and the last e2e run's breakdown."""

    events: int
    outputs: int
    consume_s: list[float] = field(default_factory=list)
    produce_s: list[float] = field(default_factory=list)
    e2e_s: list[float] = field(default_factory=list)
    speedups: list[float] = field(default_factory=list)
    breakdown: dict[str, float] = field(default_factory=dict)

    def rate(self, seconds: Sequence[float], count: int) -> float:
        """Records per second at the median time."""
        return count / statistics.median(seconds)

    def table(self) -> str:
        """The result as a plain-text table."""
        consume = self.rate(self.consume_s, self.events)
        produce = self.rate(self.produce_s, self.outputs)
        e2e = self.rate(self.e2e_s, self.events)
        lines = [
            f"{'measurement':<18}{'median s':>10}{'records/s':>14}{'e2e ratio':>11}",
            f"{'consume ceiling':<18}{statistics.median(self.consume_s):>10.2f}"
            f"{consume:>14,.0f}{e2e / consume:>11.2f}",
            f"{'produce ceiling':<18}{statistics.median(self.produce_s):>10.2f}"
            f"{produce:>14,.0f}{e2e / produce * self.outputs / self.events:>11.2f}",
            f"{'e2e (run)':<18}{statistics.median(self.e2e_s):>10.2f}{e2e:>14,.0f}{1:>11.2f}",
            f"replay speed (median): {statistics.median(self.speedups):,.0f}x real time; "
            f"input events {self.events:,}, output records {self.outputs:,}",
            "time per activity in the last e2e run (s, summed over processes): "
            + ", ".join(
                f"{k} {v:.2f}"
                for k, v in sorted(self.breakdown.items())
                if not k.startswith(OPERATOR_PREFIX)
            ),
        ]
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


def _produce_pass(bootstrap: str, count: int, partitions: int, value_size: int) -> float:
    topic = f"bench-produce-{uuid.uuid4().hex[:8]}"
    from connector.kafka.producer import TopicSpec, create_topics

    create_topics(bootstrap, [TopicSpec(topic, partitions)])
    producer = BulkProducer(bootstrap, output_producer_settings())
    value = b"x" * value_size
    header = [
        ("restream.seq", b"123456"),
        ("restream.source", b"social.messages/1@123456"),
        ("restream.job", b"bench"),
    ]
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
            [header] * n,
        )
    producer.flush()
    return time.perf_counter() - began


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
) -> E2EResult:
    """Measure (see the module docstring) and return the result. ``shape``: the data set's
    skew and backwards jitter (default: the uniform data set)."""
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
        report, topics = written.written, written.topics
        progress(f"wrote {report.records:,} events at {report.rate:,.0f}/s")
        result = E2EResult(events=report.records, outputs=len(data.messages))
        value_size = 40  # a SpamScore value is 30-45 bytes of Avro
        for i in range(repeat):
            result.consume_s.append(
                _consume_pass(broker.bootstrap, topics, partitions, report.records)
            )
            result.produce_s.append(
                _produce_pass(broker.bootstrap, result.outputs, partitions, value_size)
            )
            run = _e2e_pass(broker.bootstrap, written.inputs, workers, executor)
            result.e2e_s.append(run.wall_seconds)
            result.speedups.append(run.replay_speedup)
            result.breakdown = dict(run.stats.seconds)
            progress(
                f"repetition {i + 1}/{repeat}: consume {result.consume_s[-1]:.2f} s, produce "
                f"{result.produce_s[-1]:.2f} s, e2e {run.wall_seconds:.2f} s"
            )
    return result


def _e2e_pass(
    bootstrap: str, inputs: tuple[tuple[str, str], ...], workers: int, executor: ExecutorName
) -> RunReport:
    config = RunConfig(
        job_id=unique_prefix("bench"),
        pipeline=SOCIAL_SPAM,
        bootstrap_servers=bootstrap,
        inputs=inputs,
        workers=workers,
        executor=executor,
        progress="none",
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
    )
    print(result.table(), file=out)
    return 0
