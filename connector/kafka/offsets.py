"""Asking Kafka about offsets, without ever joining or moving a consumer group.

:class:`OffsetsClient` is the seam that :mod:`connector.positions.ranges` resolves positions
through; :class:`KafkaOffsets` implements it with confluent-kafka. Metadata, watermarks,
offsets for a timestamp and a group's committed offsets come from the ``AdminClient``
(``list_topics``, ``list_offsets``, ``list_consumer_group_offsets``: all read only).
Record timestamps come from a ``Consumer`` that only ever ``assign()``\\ s partitions: its
``group.id`` is a fresh ``restream-positions-<uuid>`` that it never joins, subscribes to or
commits to, because librdkafka refuses a consumer without one.

Answers are the broker's, taken as they come: this module does not correct brokers that
report them wrongly (DESIGN.md section 6 lists Tansu's differences).
"""

from __future__ import annotations

import difflib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol, TypeVar

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, not in __all__
    AdminClient,
    OffsetSpec,
)

from connector.errors import BrokerError, ConfigError

__all__ = ["KafkaOffsets", "OffsetsClient", "PartitionKey"]

logger = logging.getLogger(__name__)
_CLIENT_LOGGER = logging.getLogger(f"{__name__}.librdkafka")

PartitionKey = tuple[str, int]
"""``(topic, partition)``."""

T = TypeVar("T")

# Settings of the job's own consumer that must not reach the clients made here: a group to
# join or commit to, or settings that librdkafka rejects or warns about on an admin client.
_CONSUMER_ONLY = frozenset(
    {
        "group.id",
        "group.instance.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "auto.offset.reset",
        "enable.partition.eof",
        "isolation.level",
    }
)
_EARLIEST: OffsetSpec = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
_LATEST: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]
_ISOLATION = {
    "read_committed": IsolationLevel.READ_COMMITTED,
    "read_uncommitted": IsolationLevel.READ_UNCOMMITTED,
}


class OffsetsClient(Protocol):
    """What resolving positions needs to know about the cluster; every call is read only."""

    def partitions(self, topics: Sequence[str]) -> dict[str, list[int]]:
        """Sorted partition ids of each topic; an unknown topic is a ConfigError ("input")."""
        ...

    def watermarks(self, tps: Sequence[PartitionKey]) -> dict[PartitionKey, tuple[int, int]]:
        """``(low, high)`` per partition: the first retained offset and the end offset."""
        ...

    def offsets_for_time(
        self, tps: Sequence[PartitionKey], timestamp_ms: int
    ) -> dict[PartitionKey, int | None]:
        """The first offset whose record timestamp is >= ``timestamp_ms``; None if none is."""
        ...

    def group_offsets(
        self, group: str, tps: Sequence[PartitionKey]
    ) -> dict[PartitionKey, int | None]:
        """The group's committed offsets; None where it has committed none."""
        ...

    def timestamps(self, tp: PartitionKey, offsets: Sequence[int]) -> dict[int, int]:
        """Record timestamps (ms) at these offsets; offsets that hold no record are left out."""
        ...


class KafkaOffsets(OffsetsClient):
    """:class:`OffsetsClient` over confluent-kafka; use it as a context manager.

    ``kafka_config`` is librdkafka configuration (``bootstrap.servers``, security settings);
    it may be the job's consumer configuration: its ``group.id`` is never used. Its
    ``isolation.level`` (librdkafka's default: ``read_committed``) decides the high
    watermark: under ``read_committed`` it is the last stable offset, the end of what such a
    consumer can read. Every request waits at most ``timeout_s``; a broker that does not
    answer in time is a BrokerError.
    """

    def __init__(self, kafka_config: Mapping[str, Any], *, timeout_s: float = 30.0):
        if timeout_s <= 0:
            raise ConfigError("timeout", f"{timeout_s} s; use a positive number of seconds")
        isolation = str(kafka_config.get("isolation.level", "read_committed"))
        if isolation not in _ISOLATION:
            raise ConfigError(
                "isolation.level", f"{isolation!r}; use read_committed or read_uncommitted"
            )
        self._isolation = _ISOLATION[isolation]
        self._config = {k: v for k, v in kafka_config.items() if k not in _CONSUMER_ONLY}
        self._config.setdefault("logger", _CLIENT_LOGGER)
        self._isolation_name = isolation
        self._timeout_s = timeout_s
        try:
            self._admin: AdminClient | None = AdminClient(dict(self._config))
        except KafkaException as exc:
            raise ConfigError("kafka", f"the client rejects this configuration: {exc}") from exc
        self._consumer: Consumer | None = None

    def close(self) -> None:
        """Close the clients; safe to call twice."""
        consumer, self._consumer = self._consumer, None
        self._admin = None
        if consumer is not None:
            consumer.close()

    def __enter__(self) -> KafkaOffsets:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def _live_admin(self) -> AdminClient:
        if self._admin is None:
            raise BrokerError("this KafkaOffsets is closed; make a new one")
        return self._admin

    def partitions(self, topics: Sequence[str]) -> dict[str, list[int]]:
        # All topics, never a named one: a metadata request that names a topic makes
        # brokers with auto.create.topics.enable create it, and this must not write.
        try:
            metadata = self._live_admin.list_topics(timeout=self._timeout_s)
        except KafkaException as exc:
            raise BrokerError(f"cannot list the cluster's topics: {_reason(exc)}") from exc
        found: dict[str, list[int]] = {}
        unknown: list[str] = []
        for topic in topics:
            info = metadata.topics.get(topic)
            if info is None or (
                info.error is not None and info.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            ):
                unknown.append(topic)
            elif info.error is not None:
                raise BrokerError(f"the broker reports topic {topic}: {info.error.str()}")
            else:
                found[topic] = sorted(info.partitions)
        if unknown:
            raise ConfigError("input", _unknown_topics_message(unknown, list(metadata.topics)))
        return found

    def watermarks(self, tps: Sequence[PartitionKey]) -> dict[PartitionKey, tuple[int, int]]:
        lows = self._list_offsets(tps, _EARLIEST, "the low watermark")
        highs = self._list_offsets(tps, _LATEST, "the high watermark")
        return {tp: (lows[tp], highs[tp]) for tp in tps}

    def offsets_for_time(
        self, tps: Sequence[PartitionKey], timestamp_ms: int
    ) -> dict[PartitionKey, int | None]:
        spec = OffsetSpec.for_timestamp(timestamp_ms)
        found = self._list_offsets(tps, spec, f"the offset for timestamp {timestamp_ms}")
        return {tp: (offset if offset >= 0 else None) for tp, offset in found.items()}

    def group_offsets(
        self, group: str, tps: Sequence[PartitionKey]
    ) -> dict[PartitionKey, int | None]:
        if not tps:
            return {}
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in tps])
        # OffsetFetch only: it reads the group's commits and never joins or changes the group.
        futures = self._live_admin.list_consumer_group_offsets(
            [request], require_stable=True, request_timeout=self._timeout_s
        )
        answer: ConsumerGroupTopicPartitions = self._wait(
            futures[group], f"the committed offsets of group {group}"
        )
        committed: dict[PartitionKey, int | None] = {}
        for part in answer.topic_partitions or ():
            if part.error is not None:
                raise BrokerError(
                    f"group {group}, {part.topic}/{part.partition}: {part.error.str()}"
                )
            committed[(part.topic, part.partition)] = part.offset if part.offset >= 0 else None
        missing = [tp for tp in tps if tp not in committed]
        if missing:
            raise BrokerError(f"group {group}: the broker left out {_names(missing)}")
        return {tp: committed[tp] for tp in tps}

    def timestamps(self, tp: PartitionKey, offsets: Sequence[int]) -> dict[int, int]:
        # Offsets outside the retained range hold no record; asking a consumer to fetch them
        # would hand the answer to its offset-reset logic, which brokers handle differently.
        low, high = self.watermarks([tp])[tp]
        found: dict[int, int] = {}
        for run in _runs(sorted({o for o in offsets if low <= o < high})):
            found.update(self._read_run(tp, run))
        return found

    def _read_run(self, tp: PartitionKey, run: list[int]) -> dict[int, int]:
        """Timestamps at the offsets of ``run`` (ascending), read in one forward pass."""
        topic, partition = tp
        first, last, wanted = run[0], run[-1], set(run)
        consumer = self._reader()
        found: dict[int, int] = {}
        consumer.assign([TopicPartition(topic, partition, first)])
        try:
            deadline = time.monotonic() + self._timeout_s
            while (left := deadline - time.monotonic()) > 0:
                for message in consumer.consume(len(run) + 1, timeout=min(left, 0.5)):
                    error = message.error()
                    if error is not None:
                        # Past the end, or the offset is gone (auto.offset.reset=error):
                        # there is no record there to report.
                        if error.code() in (
                            KafkaError._PARTITION_EOF,
                            KafkaError._AUTO_OFFSET_RESET,
                        ):
                            return found
                        raise BrokerError(f"reading {topic}/{partition}: {error.str()}")
                    offset = message.offset()
                    if offset is None or offset < first:
                        continue
                    _kind, timestamp = message.timestamp()
                    if offset in wanted and timestamp >= 0:
                        found[offset] = timestamp
                    if offset >= last:
                        return found
            raise BrokerError(
                f"reading {topic}/{partition} offsets {first}..{last}: no answer within "
                f"{self._timeout_s:.0f} s; check that the broker is reachable"
            )
        finally:
            consumer.unassign()

    def _reader(self) -> Consumer:
        if self._admin is None:
            raise BrokerError("this KafkaOffsets is closed; make a new one")
        if self._consumer is None:
            config = {
                **self._config,
                "group.id": f"restream-positions-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "error",
                "isolation.level": self._isolation_name,
                # Each read is a few records, then the partition is reassigned elsewhere; a
                # fetch the broker holds open at the end of a partition would delay the next.
                "fetch.wait.max.ms": 10,
            }
            self._consumer = Consumer(config)
        return self._consumer

    def _list_offsets(
        self, tps: Sequence[PartitionKey], spec: OffsetSpec, what: str
    ) -> dict[PartitionKey, int]:
        if not tps:
            return {}
        # A broker that is briefly away (a restart, a cut connection) answers "no leaders
        # found" at once: ask again until the client's timeout, as a consumer would wait.
        deadline = time.monotonic() + self._timeout_s
        pause = 0.1
        while True:
            futures = self._live_admin.list_offsets(
                {TopicPartition(t, p): spec for t, p in tps},
                isolation_level=self._isolation,
                request_timeout=self._timeout_s,
            )
            try:
                return {
                    (request.topic, request.partition): int(
                        self._wait(future, f"{what} of {request.topic}/{request.partition}").offset
                    )
                    for request, future in futures.items()
                }
            except _TransientError as exc:
                if time.monotonic() + pause > deadline:
                    raise
                logger.warning("%s (asking again in %.1f s)", exc, pause)
                time.sleep(pause)
                pause = min(2 * pause, 2.0)

    def _wait(self, future: Future[T], what: str) -> T:
        try:
            return future.result(timeout=self._timeout_s)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and (
                error.retriable() or error.code() in _TRANSIENT_CODES
            ):
                raise _TransientError(f"cannot get {what}: {_reason(exc)}") from exc
            raise BrokerError(f"cannot get {what}: {_reason(exc)}") from exc
        except FutureTimeout as exc:
            raise BrokerError(
                f"cannot get {what}: no answer within {self._timeout_s:.0f} s; check "
                "bootstrap.servers and that the broker is reachable"
            ) from exc


def _runs(offsets: list[int]) -> list[list[int]]:
    """Split ascending offsets into runs of consecutive ones, each read in one pass."""
    runs: list[list[int]] = []
    for offset in offsets:
        if runs and offset == runs[-1][-1] + 1:
            runs[-1].append(offset)
        else:
            runs.append([offset])
    return runs


class _TransientError(BrokerError):
    """A broker error that asking again may cure (list offsets asks again; elsewhere it is
    the BrokerError it always was)."""


#: Codes of errors a broker that is briefly away gives; _NOENT is librdkafka's "no leaders
#: found" for partitions whose topic exists (callers check topics exist first).
_TRANSIENT_CODES = frozenset(
    {
        KafkaError._NOENT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.REQUEST_TIMED_OUT,
    }
)


def _reason(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)


def _names(tps: Sequence[PartitionKey]) -> str:
    return ", ".join(f"{t}/{p}" for t, p in tps)


def _unknown_topics_message(unknown: Sequence[str], known: Sequence[str]) -> str:
    parts = []
    for topic in unknown:
        close = difflib.get_close_matches(topic, known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        parts.append(f"{topic}{hint}")
    return (
        f"unknown topic {'; '.join(parts)}: the cluster has no such topic, or these "
        "credentials may not describe it; check the input topic names"
    )
