"""Output topics before a run: create the missing ones, refuse foreign ones, find resume points.

A backtest must never mix its records with another's. Before writing, every output topic (and
the dead-letter topic) is checked:

- missing: created with the configured partitions and replication factor;
- empty: used as is;
- not empty: the last record of each non-empty partition is read. If its ``restream.job``
  header names this job, the run is a resume of the same job and that partition's
  :class:`~connector.output.sink.ResumePoint` (last ``restream.seq`` and how many records carry it)
  tells the sink what to skip; otherwise the run stops with a configuration error (exit 2)
  before writing anything.

Topics written with ``output_headers`` ``none`` (:class:`Headerless`) carry nothing that says
who wrote a record or at which seq. Such a topic is taken as the job's only when the job
restarts from its own checkpoint manifest (which is written, under the job's lease, only after
:func:`refuse_filled_outputs` found every output partition empty), and a partition's records
must then carry no ``restream`` headers. Where the resumed run starts writing follows from
determinism: the run resumes at its checkpoint's seq, and regenerates the partition's records
from that point in exactly the order the attempts before it wrote them. The checkpoint's mark
(:mod:`connector.output.verify`) gives the offset of the partition's last record before that
point, so the records after it, ``last offset - marked offset`` of them, are the first that
many records the resumed run produces there: a :class:`~connector.output.sink.ResumeCount`.
A partition without a mark held nothing of the checkpoint's (or there is no checkpoint yet and
the run starts from seq 0): all of its records, from its low watermark, are skipped. Offsets
count records here because the job's producer writes no transaction markers and output
topics are not compacted.

Reading a partition's tail starts a little before its high watermark and goes to the end of
the partition, so it finds the true last record even when the broker's watermark lags.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from connector.errors import BrokerError, ConfigError
from connector.kafka.offsets import KafkaOffsets
from connector.kafka.producer import TopicSpec, create_topics
from connector.output.headers import identity
from connector.output.sink import Resume, ResumeCount, ResumePoint
from connector.output.verify import OutputMarks

__all__ = [
    "Headerless",
    "OutputTopic",
    "TailRecord",
    "dead_lettered_offsets",
    "prepare_outputs",
    "read_tail",
    "refuse_filled_outputs",
]

logger = logging.getLogger(__name__)

_TAIL_WINDOW = 64
_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class OutputTopic:
    """A topic the job writes: its name, the partitions to create it with, and its setting."""

    topic: str
    partitions: int
    setting: str


@dataclass(frozen=True, slots=True)
class TailRecord:
    """The ``restream.*`` headers of a record at the end of an output partition."""

    offset: int
    job: str | None
    seq: int | None


@dataclass(frozen=True, slots=True)
class Headerless:
    """The output topics are written without headers (``output_headers`` none)."""

    #: The job restarts from its own checkpoint manifest: non-empty partitions are its own.
    owned: bool
    #: The marks of the checkpoint it resumes from (empty without one).
    marks: OutputMarks
    #: The setting named when a topic is refused.
    setting: str


def _headers(message: Any) -> dict[str, bytes]:
    return {k: v for k, v in (message.headers() or []) if isinstance(v, bytes)}


def read_tail(
    consumer: Consumer, topic: str, partition: int, low: int, high: int, window: int
) -> list[TailRecord]:
    """Records from ``max(low, high - window)`` to the end of the partition, in offset order."""
    start = max(low, high - window)
    consumer.assign([TopicPartition(topic, partition, start)])
    out: list[TailRecord] = []
    deadline = time.monotonic() + _TIMEOUT_S
    try:
        while True:
            # consume() waits for a full batch or the timeout: keep the timeout short.
            messages = consumer.consume(1000, timeout=0.05)
            if not messages and time.monotonic() > deadline:
                raise BrokerError(
                    f"no end of partition reading the tail of {topic}/{partition} from offset "
                    f"{start} within {_TIMEOUT_S:.0f} s"
                )
            for m in messages:
                error = m.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return out
                    raise BrokerError(f"reading the tail of {topic}/{partition}: {error.str()}")
                job, seq, _source = identity(m.headers())
                out.append(TailRecord(m.offset() or 0, job, seq))
    finally:
        consumer.unassign()


def _resume_point(
    consumer: Consumer,
    topic: str,
    partition: int,
    low: int,
    high: int,
    job: str,
    setting: str,
    dead_letter: bool,
) -> ResumePoint | None:
    window = _TAIL_WINDOW
    while True:
        tail = read_tail(consumer, topic, partition, low, high, window)
        if not tail:
            return None
        last = tail[-1]
        if last.job != job or (last.seq is None and not dead_letter):
            owner = f"job {last.job!r}" if last.job else "something other than restream"
            raise ConfigError(
                setting,
                f"output topic {topic} partition {partition} already holds records written by "
                f"{owner} (last offset {last.offset}); a backtest never mixes with other "
                f"output: choose another topic, run with job id {last.job!r} to resume that "
                "job, or delete the topic",
            )
        if last.seq is None:
            return None
        count = 0
        for record in reversed(tail):
            if record.seq != last.seq:
                break
            count += 1
        if count < len(tail) or tail[0].offset <= low:
            return ResumePoint(last.seq, count)
        window *= 4


def _resume_count(
    consumer: Consumer, topic: str, partition: int, low: int, high: int, headerless: Headerless
) -> ResumeCount | None:
    """How many of a headerless partition's records a resumed run skips (see the module
    docstring); ConfigError where the partition cannot be the job's."""
    tail = read_tail(consumer, topic, partition, low, high, 1)
    if not tail:
        return None
    last = tail[-1]
    if not headerless.owned or last.job is not None or last.seq is not None:
        what = (
            "records without restream headers"
            if last.job is None and last.seq is None
            else f"records of job {last.job!r}"
        )
        raise ConfigError(
            headerless.setting,
            f"output topic {topic} partition {partition} already holds {what} (last offset "
            f"{last.offset}); with output_headers none a record does not say which job wrote "
            "it, so a job writes only into empty partitions, or into its own when it resumes "
            "from its checkpoints (checkpoint_dir): choose another topic or delete this one",
        )
    mark = headerless.marks.marks.get((topic, partition))
    first = low if mark is None else mark.offset + 1
    count = last.offset + 1 - first
    return ResumeCount(count) if count > 0 else None


def refuse_filled_outputs(
    client: Mapping[str, Any], topics: Sequence[str], *, setting: str
) -> None:
    """ConfigError (naming ``setting``) if a partition of ``topics`` holds records: what a
    job writing without headers checks before its manifest makes the topics its own."""
    admin = AdminClient(dict(client))
    metadata = admin.list_topics(timeout=_TIMEOUT_S)
    present = [t for t in dict.fromkeys(topics) if t in metadata.topics]
    tps = [(t, p) for t in present for p in sorted(metadata.topics[t].partitions)]
    if not tps:
        return
    with KafkaOffsets(client) as offsets:
        bounds = offsets.watermarks(tps)
    filled = [f"{t}/{p}" for (t, p), (low, high) in sorted(bounds.items()) if high > low]
    if filled:
        raise ConfigError(
            setting,
            f"output partitions {filled} already hold records; with output_headers none a "
            "record does not say which job wrote it, so a new job writes only into empty "
            "topics: choose other topics or delete these",
        )


def prepare_outputs(
    client: Mapping[str, Any],
    topics: Sequence[OutputTopic],
    *,
    dead_letter: OutputTopic | None,
    job: str,
    replication_factor: int = -1,
    headerless: Headerless | None = None,
) -> tuple[dict[tuple[str, int], Resume], dict[str, int]]:
    """Create missing topics and check existing ones (see the module docstring).

    Returns the resume points keyed by ``(topic, partition)`` (empty partitions have none)
    and every topic's partition count as it is now (the dead-letter topic's too). The
    dead-letter topic is created and checked for other jobs' records, but has no resume point.
    With ``headerless`` the output topics (not the dead-letter topic) are written without
    headers, and resume by count (see the module docstring).
    """
    admin = AdminClient(dict(client))
    metadata = admin.list_topics(timeout=_TIMEOUT_S)
    every = [*topics, *([dead_letter] if dead_letter is not None else [])]
    missing = [t for t in every if t.topic not in metadata.topics]
    existing = [t for t in every if t not in missing]
    # Existing topics are checked first: a refusal (another job's records) leaves nothing
    # created behind, not even the dead-letter topic.
    points = (
        _resume_points(client, existing, metadata, dead_letter, job, headerless) if existing else {}
    )
    if missing:
        create_topics(
            client,
            [TopicSpec(t.topic, t.partitions) for t in missing],
            exist_ok=True,  # another attempt of the job may have just created it
            timeout_s=_TIMEOUT_S,
            replication_factor=replication_factor,
        )
        metadata = admin.list_topics(timeout=_TIMEOUT_S)
    counts = {t.topic: len(metadata.topics[t.topic].partitions) for t in every}
    if points:
        logger.info("resuming job %s: %d output partitions already hold records", job, len(points))
    return points, counts


def _resume_points(
    client: Mapping[str, Any],
    existing: Sequence[OutputTopic],
    metadata: Any,
    dead_letter: OutputTopic | None,
    job: str,
    headerless: Headerless | None,
) -> dict[tuple[str, int], Resume]:
    """Resume points of the existing output topics; ConfigError if one holds other records."""
    consumer = Consumer(
        {
            **client,
            "group.id": f"restream-{job}-tail-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_uncommitted",
            # At the end of a partition the broker would hold each fetch this long.
            "fetch.wait.max.ms": 10,
        }
    )
    tps = [(t.topic, p) for t in existing for p in sorted(metadata.topics[t.topic].partitions)]
    with KafkaOffsets(client) as offsets:
        marks = offsets.watermarks(tps)
    points: dict[tuple[str, int], Resume] = {}
    try:
        for t in existing:
            for partition in sorted(metadata.topics[t.topic].partitions):
                low, high = marks[(t.topic, partition)]
                if high <= low:
                    continue
                if headerless is not None and t is not dead_letter:
                    count = _resume_count(consumer, t.topic, partition, low, high, headerless)
                    if count is not None:
                        points[(t.topic, partition)] = count
                    continue
                point = _resume_point(
                    consumer, t.topic, partition, low, high, job, t.setting, t is dead_letter
                )
                if point is not None and t is not dead_letter:
                    points[(t.topic, partition)] = point
    finally:
        consumer.close()
    return points


def dead_lettered_offsets(
    client: Mapping[str, Any], topic: str, job: str
) -> dict[tuple[str, int], int]:
    """Per input partition, the greatest offset that ``job`` dead-lettered into ``topic``.

    Reads the whole dead-letter topic (it is small: bad records only).
    """
    consumer = Consumer(
        {
            **client,
            "group.id": f"restream-{job}-dlq-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
        }
    )
    found: dict[tuple[str, int], int] = {}
    try:
        metadata = consumer.list_topics(timeout=_TIMEOUT_S)
        info = metadata.topics.get(topic)
        if info is None or not info.partitions:
            return found
        live = set(info.partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in sorted(live)])
        deadline = time.monotonic() + _TIMEOUT_S
        while live:
            messages = consumer.consume(1000, timeout=0.05)
            if not messages and time.monotonic() > deadline:
                raise BrokerError(f"no end of partition reading the dead-letter topic {topic}")
            for m in messages:
                error = m.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        live.discard(m.partition() or 0)
                        continue
                    raise BrokerError(f"reading {topic}: {error.str()}")
                h = _headers(m)
                if h.get("restream.job", b"").decode(errors="replace") != job:
                    continue
                source = h.get("restream.source", b"").decode(errors="replace")
                where, _, offset = source.rpartition("@")
                name, _, partition = where.rpartition("/")
                if name and partition.isdigit() and offset.isdigit():
                    key = (name, int(partition))
                    found[key] = max(found.get(key, -1), int(offset))
    finally:
        consumer.close()
    return found
