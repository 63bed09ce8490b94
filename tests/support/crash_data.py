"""Input and a pipeline for the crash tests that exercise what the spam workload does not:
bad records among the good ones (so the dead-letter topic fills up as the run goes) and
events that write several records to one output partition.

- :func:`build_pipeline` (``RESTREAM_PIPELINE=tests.support.crash_data:build_pipeline``): the
  spam rules plus an ``echo`` emit into the same ``scores`` stream, keyed by the sender like
  the score, so every message writes two records with its ``seq`` to one partition.
- :func:`write_with_bad_records`: the social data set with a bad record after every
  ``every``-th message of each partition (a null value, bytes that are no Avro ``Message``,
  or a key that is not decimal, in turn); the last record of each partition in a batch of
  its own, as :func:`tooling.generate.write_social` does for brokers whose watermark is the
  first offset of the last batch + 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from confluent_kafka import Producer

from connector.kafka.producer import TopicSpec, create_topics
from connector.serde.avro import encode_columns, load_schema
from engine.examples.social.data import SocialData
from engine.examples.social.spam import build_spam_pipeline
from engine.pipeline import Pipeline, Record

#: The settings a job needs for :func:`build_pipeline` (a built-in pipeline has them as defaults).
PIPELINE_ENV = {
    "RESTREAM_PIPELINE": "tests.support.crash_data:build_pipeline",
    "RESTREAM_SCHEMAS": "message=social/Message,friendship=social/Friendship",
    "RESTREAM_OUTPUT_SCHEMAS": "scores=social/SpamScore",
    "RESTREAM_KEY_FORMAT": "decimal",
}
#: Output records per message event.
RECORDS_PER_MESSAGE = 2
_BAD_VALUES: tuple[tuple[bytes | None, bytes | None], ...] = (
    (None, b"17"),  # null value
    (b"\x02", b"17"),  # a long's varint that ends too early
    (None, b"not-decimal"),  # wrong key type (and a null value: either reason is bad)
)


def _echo(e: Any, _view: Any) -> list[Record]:
    return [
        Record(
            e.sender,
            {
                "message_id": e.message_id,
                "ts": e.ts,
                "sender": e.sender,
                "recipient": e.recipient,
                "rules": -1,
                "score": -1,
                "spam": False,
                "sender_flagged": -1,
            },
        )
    ]


def _echo_batch(c: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    n = len(c["sender"])
    return {
        "message_id": c["message_id"],
        "ts": c["ts"],
        "sender": c["sender"],
        "recipient": c["recipient"],
        "rules": np.full(n, -1, dtype=np.int32),
        "score": np.full(n, -1, dtype=np.int32),
        "spam": np.zeros(n, dtype=bool),
        "sender_flagged": np.full(n, -1, dtype=np.int64),
    }


def build_pipeline() -> Pipeline:
    """The spam rules, plus a second record per message to the same partition."""
    p = build_spam_pipeline()
    p.emit("echo", on="message", output=p.outputs["scores"], fn=_echo, batch_fn=_echo_batch)
    return p


def write_with_bad_records(
    data: SocialData,
    *,
    bootstrap: str,
    topics: tuple[str, str],
    partitions: int,
    every: int,
) -> int:
    """Write messages (with bad records) and friendships to new topics ``topics``; returns
    how many bad records went in."""
    create_topics(bootstrap, [TopicSpec(t, partitions) for t in topics])
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 2_000_000,
        }
    )

    def produce(topic: str, value: bytes | None, key: bytes, p: int, ts: int) -> None:
        while True:
            try:
                producer.produce(topic, value, key, partition=p, timestamp=ts)
                return
            except BufferError:
                producer.poll(0.01)

    m, f = data.messages, data.friendships
    tables = (
        (
            topics[0],
            "social/Message",
            m,
            ("message_id", "ts", "sender", "recipient", "content"),
            m.sender,
            every,
        ),
        (topics[1], "social/Friendship", f, ("ts", "user_a", "user_b"), f.user_a, 0),
    )
    bad = 0
    lasts: list[tuple[str, bytes, bytes, int, int]] = []
    for topic, schema_name, table, fields, key_column, step in tables:
        schema = load_schema(schema_name)
        columns = {name: np.asarray(getattr(table, name)) for name in fields}
        values = encode_columns(schema, columns).values()
        keys = np.asarray(key_column, dtype=np.int64).astype("S20").tolist()
        part = np.asarray(table.partition)
        ts = np.asarray(table.ts).tolist()
        for p in range(partitions):
            rows = np.flatnonzero(part == p).tolist()  # in offset order
            for n, row in enumerate(rows[:-1], start=1):
                produce(topic, values[row], keys[row], p, ts[row])
                if step and n % step == 0:
                    value, key = _BAD_VALUES[bad % len(_BAD_VALUES)]
                    produce(topic, value, key, p, ts[row])
                    bad += 1
            if rows:
                row = rows[-1]
                lasts.append((topic, values[row], keys[row], p, ts[row]))
    producer.flush(60)
    for topic, value, key, p, t in lasts:
        produce(topic, value, key, p, t)
    remaining = producer.flush(60)
    assert remaining == 0, f"{remaining} records undelivered"
    return bad
