"""``restream demo``: an embedded broker, the social data set written to it, and what it holds.

It starts the broker, generates and writes the data set, reads every record back, checks it
against what was generated, prints what the topics hold, then decodes the records it read and
replays them through the spam rules with the parallel executor, printing the replay speed.
Reading from stored offsets into output topics (``restream run``) is the connector issue's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from connector.avro import AvroSchema, decode_value, encode_columns, load_schema
from connector.broker import LocalBroker
from connector.errors import BrokerError, ConfigError
from connector.generate import decimal_keys, write_social
from engine.errors import EngineError
from engine.examples.social.data import SocialData, generate_social
from engine.examples.social.spam import build_spam_pipeline
from engine.examples.social.text import email_flags
from engine.executors.parallel import ParallelExecutor
from engine.log import InMemorySource, TopicTable
from engine.output import collect
from engine.planner import plan

__all__ = ["TopicContents", "read_topic", "run_demo"]

_DAY_MS = 86_400_000
_SAMPLE = 2_000  # records per topic decoded with fastavro as an independent check


@dataclass(frozen=True, slots=True, eq=False)
class TopicContents:
    """Every record of one topic, as columns in (partition, offset) order."""

    topic: str
    partition: npt.NDArray[np.int32]
    offset: npt.NDArray[np.int64]
    timestamp: npt.NDArray[np.int64]
    keys: list[bytes | None]
    values: list[bytes | None]

    def per_partition(self, partitions: int) -> tuple[int, ...]:
        """Record count of each partition."""
        return tuple(int(c) for c in np.bincount(self.partition, minlength=partitions))


def read_topic(
    bootstrap: str, topic: str, ends: Mapping[int, int], timeout_s: float = 120.0
) -> TopicContents:
    """Read offsets ``0 .. ends[p]-1`` of each partition, assigning partitions directly.

    The end offsets are given rather than read from the broker because Tansu's high
    watermark is wrong when a batch holds many records (DESIGN.md section 6).
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"restream-demo-{uuid.uuid4().hex}",  # never joined: partitions assigned
            "enable.auto.commit": False,
            # librdkafka pauses fetching for fetch.queue.backoff.ms (1 s) whenever its local
            # queue is full; a fast reader drains it in milliseconds, so the pause dominated
            # (150k records/s instead of 750k/s on Tansu).
            "fetch.queue.backoff.ms": 1,
        }
    )
    pending = {p: end for p, end in ends.items() if end > 0}
    batches: list[list[Message]] = []
    deadline = time.monotonic() + timeout_s
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in sorted(pending)])
        while pending:
            if time.monotonic() > deadline:
                raise BrokerError(f"{topic}: partitions {sorted(pending)} short of their ends")
            batch = [m for m in consumer.consume(10_000, timeout=0.5) if _is_record(m, topic)]
            batches.append(batch)
            for message in batch:
                partition, offset = message.partition() or 0, message.offset() or 0
                if offset + 1 >= pending.get(partition, 1 << 62):
                    del pending[partition]
    finally:
        consumer.close()
    return _contents(topic, [m for batch in batches for m in batch], ends)


def _contents(topic: str, records: list[Message], ends: Mapping[int, int]) -> TopicContents:
    """The records below their partition's end, in (partition, offset) order."""
    partition = np.fromiter((m.partition() for m in records), np.int32, len(records))
    offset = np.fromiter((m.offset() for m in records), np.int64, len(records))
    end = np.array([ends.get(p, 0) for p in range(max(ends, default=-1) + 1)], dtype=np.int64)
    wanted = np.flatnonzero(offset < end[partition]) if records else np.zeros(0, np.int64)
    order = wanted[np.lexsort((offset[wanted], partition[wanted]))]
    kept = [records[i] for i in order.tolist()]
    return TopicContents(
        topic=topic,
        partition=partition[order],
        offset=offset[order],
        timestamp=np.fromiter((m.timestamp()[1] for m in kept), np.int64, len(kept)),
        keys=[m.key() for m in kept],
        values=[m.value() for m in kept],
    )


def _is_record(message: Message, topic: str) -> bool:
    error = message.error()
    if error is None:
        return True
    if error.code() == KafkaError._PARTITION_EOF:
        return False
    raise BrokerError(f"reading {topic}: {error.str()}")


def _verify(
    contents: TopicContents,
    schema: AvroSchema,
    columns: Mapping[str, npt.NDArray[Any]],
    key: npt.NDArray[np.int64],
) -> list[str]:
    """Differences between the topic and the generated rows (empty: identical).

    Values are compared byte for byte with the bulk encoding of the generated rows (proven
    identical to fastavro's by the unit tests); a spread sample is also decoded with fastavro
    and compared field by field, as an independent check.
    """
    problems = []
    for name, got in (
        ("partition", contents.partition),
        ("offset", contents.offset),
        ("ts", contents.timestamp),
    ):
        if not np.array_equal(got, columns[name]):
            problems.append(f"{contents.topic}: record {name} columns differ")
    if contents.keys != decimal_keys(key):
        problems.append(f"{contents.topic}: keys differ")
    fields = [f["name"] for f in schema.raw["fields"]]
    expected = encode_columns(schema, {name: columns[name] for name in fields}).values()
    if contents.values != expected:
        problems.append(f"{contents.topic}: values differ from the generated rows' encoding")
    step = max(1, len(expected) // _SAMPLE)
    for row in range(0, len(contents.values), step):
        decoded = decode_value(schema, contents.values[row] or b"").record
        generated = {name: columns[name][row] for name in fields}
        if decoded != {
            k: v.item() if isinstance(v, np.generic) else v for k, v in generated.items()
        }:
            problems.append(f"{contents.topic}: the record at row {row} decodes differently")
            break
    return problems


def _ends(partition: npt.NDArray[np.int32], partitions: int) -> dict[int, int]:
    """End offsets per partition of what was written to empty topics: the record counts."""
    return {p: int(c) for p, c in enumerate(np.bincount(partition, minlength=partitions))}


def _span(ts: npt.NDArray[np.int64]) -> str:
    if ts.size == 0:
        return "empty"
    low, high = int(ts.min()), int(ts.max())

    def iso(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")

    return f"{iso(low)} .. {iso(high)} UTC ({(high - low) / _DAY_MS:.1f} days)"


def _per_partition_text(counts: tuple[int, ...]) -> str:
    return "  ".join(f"p{p}: {c:,}" for p, c in enumerate(counts))


def run_demo(
    *,
    users: int = 100_000,
    events: int = 1_000_000,
    days: int = 30,
    seed: int = 0,
    partitions: int = 4,
    bootstrap: str | None = None,
    out: TextIO,
) -> int:
    """Run the demo, printing to ``out``; returns the exit code."""

    def say(label: str, text: str) -> None:
        print(f"{label:<19}{text}", file=out, flush=True)

    print("restream demo: an embedded broker, the reference data set, a replay", file=out)
    with LocalBroker("tansu" if bootstrap is None else "external", bootstrap=bootstrap) as broker:
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
        suffix = "" if bootstrap is None else f".{uuid.uuid4().hex[:8]}"
        topics = (f"social.messages{suffix}", f"social.friendships{suffix}")
        report = write_social(
            data,
            bootstrap=broker.bootstrap,
            messages_topic=topics[0],
            friendships_topic=topics[1],
            partitions=partitions,
        )
        say(
            "wrote",
            f"{report.records:,} events in {report.seconds:.2f} s: {report.rate:,.0f} events/s "
            "(Avro, keyed, to explicit partitions)",
        )
        return _show_contents(data, broker.bootstrap, topics, partitions, say)


def _show_contents(
    data: SocialData,
    bootstrap: str,
    topics: tuple[str, str],
    partitions: int,
    say: Callable[[str, str], None],
) -> int:
    m, f = data.messages, data.friendships
    began = time.perf_counter()
    read_m = read_topic(bootstrap, topics[0], _ends(m.partition, partitions))
    read_f = read_topic(bootstrap, topics[1], _ends(f.partition, partitions))
    seconds = time.perf_counter() - began
    problems = _verify(read_m, load_schema("social/Message"), _table(m), m.sender)
    problems += _verify(read_f, load_schema("social/Friendship"), _table(f), f.user_a)
    count = len(read_m.values) + len(read_f.values)
    say(
        "read back",
        f"{count:,} records by offset range in {seconds:.2f} s ({count / seconds:,.0f}/s)",
    )
    say(
        "checked",
        "MISMATCH: " + "; ".join(problems)
        if problems
        else "every partition, offset, key, timestamp and value byte is what was generated",
    )
    for contents in (read_m, read_f):
        counts = _per_partition_text(contents.per_partition(partitions))
        say(contents.topic, f"{len(contents.values):,} records  {counts}")
        say("", f"time span {_span(contents.timestamp)}")
    people = np.unique(np.concatenate([m.sender, m.recipient, f.user_a, f.user_b]))
    email_share = float(np.mean(email_flags(m.content))) * 100 if len(m.ts) else 0.0
    say(
        "users",
        f"{people.size:,} appear in the topics; {np.unique(m.sender).size:,} sent messages; "
        f"{email_share:.1f}% of messages contain an e-mail address",
    )
    spammers = data.spammers
    spam_sent = int(np.isin(m.sender, spammers).sum())
    say(
        "spammers",
        f"{spammers.size:,} ({spammers.size / max(data.users, 1) * 100:.1f}% of users; the "
        f"generator's ground truth, not labelled in the topics) sent {spam_sent:,} messages",
    )
    if problems:
        return 1
    _replay(read_m, read_f, partitions, say)
    return 0


def _decode(contents: TopicContents, schema: AvroSchema) -> dict[str, Any]:
    """Columns of a topic's values, decoded one record at a time with fastavro."""
    fields = [f["name"] for f in schema.raw["fields"] if f["name"] != "ts"]
    rows = [decode_value(schema, value or b"").record for value in contents.values]
    columns: dict[str, Any] = {
        name: np.array([r[name] for r in rows], dtype=object if name == "content" else np.int64)
        for name in fields
    }
    columns.update(partition=contents.partition, offset=contents.offset, ts=contents.timestamp)
    return columns


def _replay(
    read_m: TopicContents, read_f: TopicContents, partitions: int, say: Callable[[str, str], None]
) -> None:
    """Replay the records read back through the spam rules with the parallel executor."""
    began = time.perf_counter()
    source = InMemorySource.from_tables(
        TopicTable(
            read_m.topic, "message", _decode(read_m, load_schema("social/Message")), partitions
        ),
        TopicTable(
            read_f.topic,
            "friendship",
            _decode(read_f, load_schema("social/Friendship")),
            partitions,
        ),
    )
    say(
        "decoded",
        f"{len(read_m.values) + len(read_f.values):,} values with fastavro in "
        f"{time.perf_counter() - began:.2f} s",
    )
    executor = ParallelExecutor()
    sink = collect()
    stats = executor.run(plan(build_spam_pipeline()), source, sink)
    wall = stats.wall_seconds
    span = 0 if stats.first_ts is None or stats.last_ts is None else stats.last_ts - stats.first_ts
    say(
        "replayed",
        f"{stats.events:,} events through the social-spam rules with {executor.workers} "
        f"workers in {wall:.2f} s: {stats.events / wall:,.0f} events/s",
    )
    say(
        "replay speed",
        f"{span / 1000 / wall:,.0f}x real time ({span / _DAY_MS:.1f} days of "
        f"event time in {wall:.2f} s)",
    )
    spam = np.concatenate([c.columns["spam"].astype(bool) for c in sink.chunks if len(c)])
    senders = np.concatenate([c.columns["sender"].astype(np.int64) for c in sink.chunks if len(c)])
    say(
        "flagged",
        f"{int(spam.sum()):,} of {spam.size:,} messages scored spam (score >= 20), "
        f"sent by {np.unique(senders[spam]).size:,} users",
    )
    say(
        "output",
        "kept in memory: writing output topics from stored offsets (restream run) "
        "comes with the connector issue",
    )


def _table(table: object) -> dict[str, npt.NDArray[Any]]:
    names = ("partition", "offset", "ts", "message_id", "sender", "recipient", "content")
    return {n: getattr(table, n) for n in (*names, "user_a", "user_b") if hasattr(table, n)}
