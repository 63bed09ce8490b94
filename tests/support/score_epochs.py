"""Builders for integration tests of the Kafka sinks (sink processes, sink actors): input
epochs of messages, the spam scores they produce as output chunks, and the scores' target and
sink settings for a topic of the session broker."""

from __future__ import annotations

from typing import Any

import numpy as np

from connector.kafka.producer import BulkProducer
from connector.output.sink import OutputTarget, ResumePoint, output_producer_settings
from connector.output.writer import SinkSettings
from connector.serde.avro import load_schema
from connector.serde.values import value_encoder
from engine.examples.social.spam import SCORE_FIELDS
from engine.log import Epoch, Events
from engine.output import OutputChunk
from tooling.broker import LocalBroker

__all__ = ["CountingProducer", "score_chunk", "score_epoch", "score_settings", "score_target"]


def score_epoch(index: int, n: int) -> Epoch:
    """Epoch ``index`` of ``n`` messages read from three partitions of topic ``messages``."""
    seq_start = index * n
    seq = np.arange(seq_start, seq_start + n, dtype=np.int64)
    events = Events(
        kind="message",
        seq=seq,
        ts=1_700_000_000_000 + seq * 7,
        topic=np.zeros(n, dtype=np.int16),
        partition=(seq % 3).astype(np.int32),
        offset=seq // 3,
        columns={},
    )
    return Epoch(
        index=index,
        seq_start=seq_start,
        seq_end=seq_start + n,
        ts=events.ts,
        kind=np.zeros(n, dtype=np.int8),
        kinds=("message",),
        topics=("messages",),
        events={"message": events},
    )


def score_chunk(epoch: Epoch, rows: int, fields: tuple[str, ...] = SCORE_FIELDS) -> OutputChunk:
    """``rows`` records from the first events of ``epoch`` (every third event skipped)."""
    seq = np.arange(epoch.seq_start, epoch.seq_end, dtype=np.int64)
    seq = seq[seq % 3 != 2][:rows]
    sender = (seq * 7919) % 97
    columns = {
        "message_id": seq * 10,
        "ts": 1_700_000_000_000 + seq * 7,
        "sender": sender,
        "recipient": (seq * 31) % 89,
        "rules": (seq % 32).astype(np.int32),
        "score": (seq % 50).astype(np.int32),
        "spam": seq % 5 == 0,
        "sender_flagged": seq % 11,
    }
    return OutputChunk("scores", seq, sender, {f: columns[f] for f in fields})


def score_target(topic: str) -> OutputTarget:
    """The ``scores`` stream to ``topic`` (3 partitions), Avro."""
    encoder = value_encoder("avro", load_schema("social/SpamScore"))
    return OutputTarget("scores", topic, 3, SCORE_FIELDS, encoder)


def score_settings(
    broker: LocalBroker, topic: str, resume: dict[tuple[str, int], ResumePoint] | None = None
) -> SinkSettings:
    """Sink settings of job ``job-1`` writing the scores to ``topic`` on ``broker``."""
    return SinkSettings(
        broker.bootstrap,
        output_producer_settings(),
        {"scores": score_target(topic)},
        "job-1",
        resume or {},
    )


class CountingProducer(BulkProducer):
    """A BulkProducer that remembers the partition of every record it queued."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(bootstrap, output_producer_settings())
        self.partitions: list[int] = []

    def produce(self, topic: str, values: Any, keys: Any, partitions: Any, *rest: Any) -> None:
        self.partitions.extend(partitions)
        super().produce(topic, values, keys, partitions, *rest)
