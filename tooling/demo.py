"""``restream demo``: a real backtest on an embedded broker, start to finish.

It starts the broker, generates the reference social data set (1M events over 30 days by
default) and writes it to two topics, then runs the same code path as ``restream run``: it
resolves the offset ranges, replays them through the ``social-spam`` rules with the parallel
executor and writes the verdicts to an output topic. Finally it reads the output topic back,
counts the messages flagged, and prints how to look at the output with kcat.

The run reads from ``earliest`` to ``latest``, like a user's first backtest would. (The
generator ends each partition with a one-record batch, so the embedded Tansu broker, whose high
watermark is the start of the last batch + 1, reports the true end: DESIGN.md section 6.) The
demo checks that every written event was replayed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TextIO

import numpy as np
import numpy.typing as npt
from confluent_kafka import Consumer, KafkaError, TopicPartition

from connector.config import RunConfig
from connector.errors import BrokerError, ConfigError
from connector.job.run import RunReport, run_job
from connector.pipeline_loader import SOCIAL_SPAM
from connector.serde.avro import load_schema
from connector.serde.values import value_decoder
from engine.errors import EngineError
from engine.examples.social.data import generate_social
from tooling.broker import LocalBroker
from tooling.dataset import broker_for, unique_prefix, write_social_topics

__all__ = ["count_flagged", "run_demo"]

_DAY_MS = 86_400_000


def run_demo(
    *,
    users: int = 100_000,
    events: int = 1_000_000,
    days: int = 30,
    seed: int = 0,
    partitions: int = 4,
    workers: int = 0,
    bootstrap: str | None = None,
    out: TextIO,
) -> int:
    """Run the demo, printing to ``out``; returns the exit code."""

    def say(label: str, text: str) -> None:
        print(f"{label:<16}{text}", file=out, flush=True)

    print("restream demo: an embedded broker, the reference data set, a backtest", file=out)
    with broker_for(bootstrap) as broker:
        say("broker", f"{broker.describe()}; ready in {broker.start_seconds or 0:.2f} s")
        began = time.perf_counter()
        try:
            data = generate_social(
                users=users, events=events, days=days, seed=seed, partitions=partitions
            )
        except EngineError as exc:
            raise ConfigError("demo", str(exc)) from exc
        m, f = data.messages, data.friendships
        say(
            "generated",
            f"{len(m):,} messages + {len(f):,} friendships "
            f"({users:,} users, {days} days, seed {seed}) in {time.perf_counter() - began:.2f} s",
        )
        job = unique_prefix("demo")
        written = write_social_topics(data, bootstrap=broker.bootstrap, prefix=job)
        report, topics = written.written, written.topics
        say(
            "wrote",
            f"{report.records:,} events in {report.seconds:.2f} s: {report.rate:,.0f} events/s "
            "(Avro, keyed like the Java client)",
        )
        for topic, ts in ((topics[0], m.ts), (topics[1], f.ts)):
            say("", f"{topic}: {len(ts):,} records, {_span(ts)}")
        config = RunConfig(
            job_id=job,
            pipeline=SOCIAL_SPAM,
            bootstrap_servers=broker.bootstrap,
            inputs=written.inputs,
            start="earliest",
            end="latest",
            workers=workers,
            progress="none",
        )
        run = run_job(config, out=out)
        _report(run, config, say)
        if run.events != report.records:
            raise BrokerError(
                f"replayed {run.events:,} events but wrote {report.records:,}: the broker "
                "reported wrong end offsets"
            )
        flagged, total = count_flagged(broker.bootstrap, f"{job}.scores", partitions)
        say(
            "flagged",
            f"{flagged:,} of {total:,} messages scored spam (score >= 20); the generator's "
            f"{data.spammers.size:,} spammers sent {int(np.isin(m.sender, data.spammers).sum()):,}",
        )
        _how_to_read(broker, job, say)
    return 0


def _report(run: RunReport, config: RunConfig, say: Callable[[str, str], None]) -> None:
    say(
        "replayed",
        f"{run.events:,} events through social-spam ({config.executor} executor) in "
        f"{run.wall_seconds:.2f} s: {run.events_per_second:,.0f} events/s",
    )
    say(
        "replay speed",
        f"{run.replay_speedup:,.0f}x real time ({run.event_time_span_s * 1000 / _DAY_MS:.1f} "
        f"days of event time in {run.wall_seconds:.2f} s)",
    )
    for topic, n in sorted(run.outputs.items()):
        say("output", f"{n:,} records to {topic}")
    if run.bad_records:
        say("bad records", f"{run.bad_records}")


def count_flagged(bootstrap: str, topic: str, partitions: int) -> tuple[int, int]:
    """Read an output topic of SpamScore records; return (spam, total)."""
    decoder = value_decoder("avro", load_schema("social/SpamScore"), exclude=())
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"restream-demo-{uuid.uuid4().hex}",  # never joined: partitions assigned
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.queue.backoff.ms": 1,
        }
    )
    spam = total = 0
    live = set(range(partitions))
    deadline = time.monotonic() + 120
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        while live:
            if time.monotonic() > deadline:
                raise BrokerError(f"{topic}: partitions {sorted(live)} did not reach their end")
            values: list[bytes | None] = []
            for message in consumer.consume(10_000, timeout=0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        live.discard(message.partition() or 0)
                        continue
                    raise BrokerError(f"reading {topic}: {error.str()}")
                values.append(message.value())
            if values:
                decoded = decoder.decode(values, [None] * len(values))
                flags: npt.NDArray[np.bool_] = np.asarray(decoded.columns["spam"], dtype=bool)
                spam += int(flags.sum())
                total += len(values)
    finally:
        consumer.close()
    return spam, total


def _span(ts: npt.NDArray[np.int64]) -> str:
    if not len(ts):
        return "empty"

    def iso(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")

    lo, hi = int(ts.min()), int(ts.max())
    return f"{iso(lo)} .. {iso(hi)} UTC ({(hi - lo) / _DAY_MS:.1f} days)"


def _how_to_read(broker: LocalBroker, job: str, say: Callable[[str, str], None]) -> None:
    say(
        "read it",
        f"kcat -C -b {broker.bootstrap} -t {job}.scores -o beginning -e -c 5 "
        "-f 'key=%k partition=%p offset=%o headers=%h\\n'",
    )
    say(
        "",
        "values are plain Avro (schemas/social/SpamScore.avsc); the embedded broker stops "
        "with the demo: run `restream broker` elsewhere and `restream demo --bootstrap ...` "
        "to keep the topics",
    )
