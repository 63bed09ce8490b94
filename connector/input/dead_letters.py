"""What happens to an input record that cannot be used: dead-letter it or fail the job.

Policy ``dead-letter`` (the default) writes the record, original key, value, timestamp and
headers untouched, to the dead-letter topic, adding headers::

    restream.reason   undecodable | unknown-schema-id | null-value | wrong-key-type |
                      bad-timestamp
    restream.detail   what was wrong, for a human
    restream.source   topic/partition@offset of the original record
    restream.job      the job id
    restream.timestamp  the original timestamp (ms), when it is out of range
                      (``bad-timestamp``): the dead letter is stamped when written

A bad record too large for the dead-letter topic (a poison pill: megabytes of garbage) is
written truncated to fit, never refused, adding for each part cut (``value``, ``key``)::

    restream.truncated          what was cut or dropped: value, key, headers (comma-separated)
    restream.value.size         the original value's size in bytes (decimal)
    restream.value.sha256       SHA-256 of the whole original value (hex)
    restream.key.size, restream.key.sha256       likewise, if the key was cut
    restream.headers.dropped    how many original headers were left out (if they alone
                                did not fit)

The limit (:func:`dead_letter_limit`) is the smaller of the producer's ``message.max.bytes``
(librdkafka's default, 1,000,000 bytes, unless set with ``--kafka``) and the topic's
``max.message.bytes`` where the broker describes it (Apache Kafka: 1,048,588 by default; the
embedded Tansu broker describes no topic configs and has no limit, so there the producer's
applies), less room for the record's framing.

Dead letters all go to partition 0, in the order they were read: a dead-letter topic is small,
and one partition keeps each input partition's bad records in their offset order. Across input
partitions the order is the reader's, which differs from run to run (a restart from a
checkpoint included): compare dead letters per input partition (``restream.source``).

A restarted job passes the offsets an earlier attempt already dead-lettered, so no dead letter
is written twice.

Policy ``fail`` stops the job (exit 1) with an error naming the record's coordinates. Either
way the record is counted (``restream_bad_records_total``); nothing is dropped silently.

``max_bad_records`` (:class:`~connector.config.BadRecordLimit`) bounds how many may be
dead-lettered: a count, or a share of the records read (judged from 10,000 records on, and
over the whole input at the end, so that a job whose records are all bad never exits 0).
Past it the job stops with exit 1 naming the count and the limit.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, not in __all__
    AdminClient,
    ConfigResource,
)

from connector.config import BadRecordLimit, BadRecordPolicy, setting
from connector.errors import ConnectorError
from connector.observability.metrics import JobMetrics
from connector.serde.event_time import EVENT_TIME_RANGE
from connector.serde.values import RecordProblem

__all__ = [
    "CLIENT_MAX_MESSAGE_BYTES",
    "BadRecordError",
    "BadRecordLimitError",
    "BadRecords",
    "DeadLetter",
    "DeadLetterProducer",
    "RecordLike",
    "dead_letter_limit",
    "fit_dead_letter",
]

logger = logging.getLogger(__name__)

#: librdkafka's ``message.max.bytes`` when the job does not set it: the largest record its
#: producer sends (it refuses a larger one with MSG_SIZE_TOO_LARGE).
CLIENT_MAX_MESSAGE_BYTES = 1_000_000
#: Room left under the limit for what Kafka adds around a record in its batch (the batch
#: header is 61 bytes, a record's lengths and deltas a few dozen) and for our size headers.
_FRAMING_BYTES = 1024
#: Per header, its length fields, as librdkafka counts them.
_HEADER_OVERHEAD = 8


class BadRecordError(ConnectorError):
    """An input record could not be used and the policy is ``fail``."""


class BadRecordLimitError(BadRecordError):
    """More input records were bad than ``max_bad_records`` allows."""


def dead_letter_limit(
    client: Mapping[str, Any], topic: str, producer_settings: Mapping[str, Any]
) -> int:
    """The largest dead letter (key, value and headers) that ``topic`` takes: the smaller of
    the producer's ``message.max.bytes`` and the topic's ``max.message.bytes`` if the broker
    describes it (see the module docstring)."""
    producer_max = int(producer_settings.get("message.max.bytes", CLIENT_MAX_MESSAGE_BYTES))
    admin = AdminClient(dict(client))
    resource = ConfigResource("topic", topic)
    try:
        described = admin.describe_configs([resource])[resource].result(timeout=10)
    except (KafkaException, TimeoutError) as exc:
        logger.warning(
            "could not read max.message.bytes of %s (%s); dead letters are cut to %s bytes",
            topic,
            exc,
            min(producer_max, CLIENT_MAX_MESSAGE_BYTES),
        )
        return min(producer_max, CLIENT_MAX_MESSAGE_BYTES)
    entry = described.get("max.message.bytes")
    if entry is None or entry.value is None:
        return producer_max
    try:
        return min(producer_max, int(entry.value))
    except ValueError:
        return producer_max


def _header_bytes(headers: Sequence[tuple[str, bytes | None]]) -> int:
    return sum(len(k) + len(v or b"") + _HEADER_OVERHEAD for k, v in headers)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead letter as written: ``cut`` names what was truncated (empty: nothing)."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    cut: tuple[str, ...] = ()


def fit_dead_letter(
    key: bytes | None,
    value: bytes | None,
    original: list[tuple[str, bytes | None]],
    ours: list[tuple[str, bytes | None]],
    limit: int,
) -> DeadLetter:
    """The dead letter of a record, in at most ``limit`` bytes: the record as it was if it
    fits, else with its value cut, then its key, then its original headers dropped, and
    notes saying so (see the module docstring). ``ours`` (``restream.*``) are always kept."""
    budget = max(limit - _FRAMING_BYTES, limit // 2)

    def size(k: bytes | None, v: bytes | None, headers: list[tuple[str, bytes | None]]) -> int:
        return len(k or b"") + len(v or b"") + _header_bytes(headers)

    if size(key, value, original + ours) <= budget:
        return DeadLetter(key, value, original + ours)
    # The longest "restream.truncated" header, so that its final text surely fits.
    longest = [("restream.truncated", b"headers,key,value")]
    notes: list[tuple[str, bytes | None]] = []
    cut: list[str] = []
    parts: dict[str, bytes | None] = {"value": value, "key": key}
    kept = original

    def excess() -> int:
        return size(parts["key"], parts["value"], kept + ours + longest + notes) - budget

    for name in ("value", "key"):
        data = parts[name]
        if data is None or excess() <= 0:
            continue
        notes += [
            (f"restream.{name}.size", str(len(data)).encode()),
            (f"restream.{name}.sha256", hashlib.sha256(data).hexdigest().encode()),
        ]
        cut.append(name)
        parts[name] = data[: max(0, len(data) - excess())]
    if excess() > 0 and kept:
        notes.append(("restream.headers.dropped", str(len(kept)).encode()))
        cut.append("headers")
        kept = []
    done = tuple(sorted(cut))
    headers = [*kept, *ours, ("restream.truncated", ",".join(done).encode()), *notes]
    return DeadLetter(parts["key"], parts["value"], headers, done)


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

    def flush(self, timeout_s: float = 120.0) -> None:
        """Wait until every queued record is delivered (ConnectorError if not)."""
        ...


class RecordLike(Protocol):
    """What a bad record must tell: a client's ``Message``, or a reader's copy of one
    (:class:`connector.kafka.records.RecordCopy`)."""

    def topic(self) -> str | None:
        """The record's topic."""
        ...

    def partition(self) -> int | None:
        """The record's partition."""
        ...

    def offset(self) -> int | None:
        """The record's offset."""
        ...

    def key(self) -> bytes | None:
        """The record's key bytes."""
        ...

    def value(self) -> bytes | None:
        """The record's value bytes."""
        ...

    def headers(self) -> Any:
        """The record's headers (a list of pairs, or None)."""
        ...

    def timestamp(self) -> tuple[int, int]:
        """The record's (timestamp type, milliseconds)."""
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
        limit: BadRecordLimit | None = None,
        max_bytes: int = CLIENT_MAX_MESSAGE_BYTES,
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
        self._limit = limit
        self._max_bytes = max_bytes
        #: Input records read (good and bad), as reported by :meth:`read`.
        self.records_read = 0
        #: Dead letters written truncated because they did not fit the topic.
        self.truncated = 0

    @property
    def total(self) -> int:
        """Bad records seen, whatever their reason."""
        return sum(self.counts.values())

    def read(self, records: int) -> None:
        """Count ``records`` more input records read (their bad ones already handled), and
        stop the job if the bad ones are now past ``max_bad_records``."""
        self.records_read += records
        self._check(final=False)

    def finish(self) -> None:
        """The whole input has been read: judge the share of bad records over all of it."""
        self._check(final=True)

    def _check(self, *, final: bool) -> None:
        limit = self._limit
        if limit is None or not limit.exceeded(self.total, self.records_read, final=final):
            return
        share = 100 * self.total / self.records_read if self.records_read else 100.0
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.counts.items()))
        where = ""
        if self.policy == "dead-letter" and self._producer is not None:
            # The job stops here: deliver what was dead-lettered, for the reader to inspect.
            try:
                self._producer().flush(30.0)
                where = f"; they are in {self.topic}"
            except ConnectorError as exc:
                logger.error("dead letters of %s not all delivered: %s", self.topic, exc)
        raise BadRecordLimitError(
            f"{self.total} bad records of {self.records_read} read ({share:.1f}%: {reasons}) "
            f"exceed {setting('max_bad_records').label} {limit}{where}; check the input "
            "topics, formats and schemas, or raise the limit"
        )

    def handle(self, message: RecordLike, problem: RecordProblem) -> None:
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
        ours: list[tuple[str, bytes | None]] = [
            ("restream.reason", problem.reason.encode()),
            ("restream.detail", problem.detail[:1000].encode()),
            ("restream.source", source.encode()),
            ("restream.job", self._job.encode()),
        ]
        letter = fit_dead_letter(message.key(), message.value(), headers, ours, self._max_bytes)
        if letter.cut:
            self.truncated += 1
            logger.warning(
                "dead letter %s (%s, %s bytes) cut to fit the %s-byte limit of %s (%s); "
                "restream.*.size and restream.*.sha256 headers describe the original",
                source,
                problem.reason,
                len(message.value() or b"") + len(message.key() or b""),
                self._max_bytes,
                self.topic,
                ", ".join(letter.cut),
            )
        kind, ts = message.timestamp()
        stamp: int | None = ts if kind else None
        if stamp is not None and not EVENT_TIME_RANGE[0] <= stamp < EVENT_TIME_RANGE[1]:
            # A broker may refuse such a time (Apache Kafka: negative ones, and since 4.0 any
            # more than an hour ahead): the dead letter gets the time of writing instead.
            letter.headers.append(("restream.timestamp", str(stamp).encode()))
            stamp = None
        self._producer().produce_record(self.topic, letter.value, letter.key, letter.headers, stamp)
        logger.debug("dead-lettered %s: %s", source, problem.reason)
