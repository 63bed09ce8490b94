"""What happens to an input record that cannot be used: dead-letter it or fail the job.

Policy ``dead-letter`` (the default) writes the record, original key, value, timestamp and
headers untouched, to the dead-letter topic, adding headers::

    restream.reason   undecodable | unknown-schema-id | null-value | wrong-key-type
    restream.detail   what was wrong, for a human
    restream.source   topic/partition@offset of the original record
    restream.job      the job id

Dead letters all go to partition 0, in the order they were read: a dead-letter topic is small,
and one partition keeps it in order and the same on every run.

A restarted job passes the offsets an earlier attempt already dead-lettered, so no dead letter
is written twice.

Policy ``fail`` stops the job (exit 1) with an error naming the record's coordinates. Either
way the record is counted (``restream_bad_records_total``); nothing is dropped silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from confluent_kafka import Message

from connector.config import BadRecordPolicy
from connector.errors import ConnectorError
from connector.observability.metrics import JobMetrics
from connector.serde.values import RecordProblem

__all__ = ["BadRecordError", "BadRecords", "DeadLetterProducer"]

logger = logging.getLogger(__name__)


class BadRecordError(ConnectorError):
    """An input record could not be used and the policy is ``fail``."""


class DeadLetterProducer(Protocol):
    """The producer the dead letters go through (:class:`connector.kafka.producer.BulkProducer`)."""

    def produce_record(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
        timestamp: int | None = None,
    ) -> None:
        """Queue one record."""
        ...


class BadRecords:
    """Applies the bad-record policy; see the module docstring."""

    def __init__(
        self,
        policy: BadRecordPolicy,
        *,
        job: str,
        topic: str | None,
        producer: Callable[[], DeadLetterProducer] | None,
        metrics: JobMetrics | None = None,
        already: Mapping[tuple[str, int], int] | None = None,
    ) -> None:
        if policy == "dead-letter" and (topic is None or producer is None):
            raise ConnectorError("the dead-letter policy needs a dead-letter topic and producer")
        self.policy = policy
        self.topic = topic
        self._job = job
        self._producer = producer
        self._metrics = metrics
        #: Bad records seen, per reason.
        self.counts: dict[str, int] = {}
        # Per input partition, the last offset an earlier attempt of the job dead-lettered.
        self._already = dict(already or {})
        #: Dead letters not written again because an earlier attempt wrote them.
        self.skipped = 0

    def handle(self, message: Message, problem: RecordProblem) -> None:
        """Dead-letter ``message`` or raise :class:`BadRecordError`, after counting it."""
        source = f"{message.topic()}/{message.partition()}@{message.offset()}"
        self.counts[problem.reason] = self.counts.get(problem.reason, 0) + 1
        dead_letter = self.policy == "dead-letter"
        if self._metrics is not None:
            self._metrics.bad_record(problem.reason, dead_lettered=dead_letter)
        if not dead_letter:
            raise BadRecordError(
                f"bad record at {source} ({problem.reason}): {problem.detail}; fix or skip it, "
                "or run with --on-bad-record dead-letter to divert such records"
            )
        assert self._producer is not None and self.topic is not None
        done = self._already.get((message.topic() or "", message.partition() or 0))
        if done is not None and (message.offset() or 0) <= done:
            self.skipped += 1
            return
        raw = message.headers() or []
        original: list[tuple[str, Any]] = list(raw.items() if isinstance(raw, dict) else raw)
        headers: list[tuple[str, bytes | None]] = [
            (str(k), v if isinstance(v, bytes) or v is None else str(v).encode())
            for k, v in original
        ]
        headers += [
            ("restream.reason", problem.reason.encode()),
            ("restream.detail", problem.detail.encode()),
            ("restream.source", source.encode()),
            ("restream.job", self._job.encode()),
        ]
        kind, ts = message.timestamp()
        self._producer().produce_record(
            self.topic, message.value(), message.key(), headers, ts if kind else None
        )
        logger.debug("dead-lettered %s: %s", source, problem.reason)
