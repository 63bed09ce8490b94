"""What a checkpoint says the output topics hold, and checking that they still do on resume.

A restarted job skips the output that its checkpoint covers. That is only right while the
output is still there: a topic deleted and recreated, a wiped cluster, retention that ate the
head of a partition, would otherwise leave a gap that nothing reports. So every checkpoint
records, per output and dead-letter partition that holds records, a :class:`PartitionMark`:
the offset of the partition's last record when the checkpoint's output had been delivered,
that record's ``restream.seq`` (dead letters: its ``restream.source``), and the partition's low
watermark when it was first marked. Marks are taken by reading the records back
(:class:`OutputMarker`), after the flush that the checkpoint waits for.

On resume, before anything is skipped or written, :func:`verify_outputs` checks each mark:

- the topic exists with the partition count it had;
- the low watermark has not risen past the marked one (no records lost before the mark);
- the partition still reaches the marked offset, and the record there is this job's, with
  the marked ``seq`` (or source);
- what follows it, the next record and the partition's last, is this job's too.

Any failure is an :class:`OutputLostError` (exit 2) that names every partition concerned and what
to do: start over with a new job id, or ``--restart-from-scratch``
(:func:`delete_job_topics` deletes the job's topics, once they are shown to hold only its
records).

Output topics written with ``output_headers`` ``none`` carry no headers: their marks hold the
offset and low watermark only, and each check expects the record at the mark, and those after
it, to have no ``restream`` headers (``headerless``); that the job wrote them is known from its
checkpoint manifest instead (:func:`connector.output.topics.prepare_outputs`).

Watermarks are read but never trusted for where a partition ends: some brokers (Tansu 0.6,
DESIGN.md section 6) report the first offset of the last record batch + 1 as the high
watermark. Every end is found by reading from ``high - 1`` to the end of the partition.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from connector.config import setting
from connector.errors import BrokerError, ConfigError, SinkError
from connector.kafka.offsets import KafkaOffsets
from connector.output.headers import identity

__all__ = [
    "OutputLostError",
    "OutputMarker",
    "OutputMarks",
    "PartitionMark",
    "ReadRecord",
    "check_marks",
    "delete_job_topics",
    "last_records",
    "read_records",
    "verify_outputs",
]

logger = logging.getLogger(__name__)

TopicPartitionKey = tuple[str, int]
_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class PartitionMark:
    """The last record of an output (or dead-letter) partition that a checkpoint covers."""

    topic: str
    partition: int
    #: The partition's low watermark when the job first marked it.
    low: int
    #: Offset of the last record.
    offset: int
    #: Its ``restream.seq`` (None for dead letters, which carry none).
    seq: int | None
    #: Its ``restream.source``.
    source: str | None


@dataclass(frozen=True, slots=True)
class OutputMarks:
    """A checkpoint's marks: the partition count of each topic, and per partition its mark."""

    topics: Mapping[str, int] = field(default_factory=dict)
    marks: Mapping[TopicPartitionKey, PartitionMark] = field(default_factory=dict)

    def merged(
        self, newer: Mapping[TopicPartitionKey, PartitionMark], topics: Mapping[str, int]
    ) -> OutputMarks:
        """These marks updated with ``newer`` ones; a partition keeps the low watermark of
        its first mark (records lost since then are lost)."""
        marks = dict(self.marks)
        for key, mark in newer.items():
            old = marks.get(key)
            marks[key] = mark if old is None else replace(mark, low=min(old.low, mark.low))
        return OutputMarks({**self.topics, **topics}, marks)

    def to_json(self) -> str:
        """The marks file's text."""
        return json.dumps(
            {
                "topics": dict(sorted(self.topics.items())),
                "marks": [
                    [m.topic, m.partition, m.low, m.offset, m.seq, m.source]
                    for _, m in sorted(self.marks.items())
                ],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> OutputMarks:
        """Parse :meth:`to_json` (ValueError, KeyError or TypeError when malformed)."""
        data = json.loads(text)
        topics = {str(t): int(n) for t, n in data["topics"].items()}
        marks = {}
        for topic, partition, low, offset, seq, source in data["marks"]:
            mark = PartitionMark(
                str(topic),
                int(partition),
                int(low),
                int(offset),
                None if seq is None else int(seq),
                None if source is None else str(source),
            )
            marks[(mark.topic, mark.partition)] = mark
        return cls(topics, marks)


@dataclass(frozen=True, slots=True)
class ReadRecord:
    """The ``restream.*`` headers of one record read back from a partition."""

    offset: int
    job: str | None
    seq: int | None
    source: str | None

    def describe(self) -> str:
        """How a message names the record."""
        if self.job is None and self.seq is None and self.source is None:
            return f"offset {self.offset} (no restream headers)"
        owner = f"job {self.job!r}" if self.job else "no restream job"
        what = f"seq {self.seq}" if self.seq is not None else f"source {self.source}"
        return f"offset {self.offset} ({owner}, {what})"


class OutputLostError(ConfigError):
    """Output that a checkpoint covers is missing or not the job's: resuming would leave a gap."""

    def __init__(self, job: str, seq: int, problems: Sequence[str]) -> None:
        super().__init__(
            setting("restart_from_scratch").label,
            f"job {job} cannot resume from its checkpoint at seq {seq}: output that it covers "
            f"is gone or not the job's ({'; '.join(problems)}). Resuming would leave a gap, so "
            "nothing was written. Start over: run again with --restart-from-scratch (deletes "
            "the job's checkpoints and its output and dead-letter topics, and writes them "
            "from the first record), or use a new job id",
        )

    def __reduce__(self) -> Any:
        return (ConfigError, (self.field, self.message))


def _record(message: Any) -> ReadRecord:
    job, seq, source = identity(message.headers())
    return ReadRecord(message.offset() or 0, job, seq, source)


def read_records(
    consumer: Consumer, starts: Mapping[TopicPartitionKey, int], limit: int | None = None
) -> dict[TopicPartitionKey, list[ReadRecord]]:
    """Per partition, its records from its start offset to its end (or the first ``limit``).

    Every start must be at most the partition's end: past it, some brokers send neither
    records nor an end of partition.
    """
    out: dict[TopicPartitionKey, list[ReadRecord]] = {tp: [] for tp in starts}
    if not starts:
        return out
    live = set(starts)
    consumer.assign([TopicPartition(t, p, o) for (t, p), o in sorted(starts.items())])
    deadline = time.monotonic() + _TIMEOUT_S
    try:
        while live:
            # consume() waits for a full batch or the timeout: keep the timeout short.
            messages = consumer.consume(1000, timeout=0.05)
            if not messages and time.monotonic() > deadline:
                raise BrokerError(
                    f"no end of partition reading back {sorted(live)} within {_TIMEOUT_S:.0f} s"
                )
            for m in messages:
                tp = (m.topic() or "", m.partition() or 0)
                error = m.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        live.discard(tp)
                        continue
                    raise BrokerError(f"reading back {tp[0]}/{tp[1]}: {error.str()}")
                if tp not in live:
                    continue
                out[tp].append(_record(m))
                if limit is not None and len(out[tp]) >= limit:
                    live.discard(tp)
    finally:
        consumer.unassign()
    return out


def _consumer(client: Mapping[str, Any], job: str, what: str) -> Consumer:
    return Consumer(
        {
            **client,
            "group.id": f"restream-{job}-{what}-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_uncommitted",
            # At the end of a partition the broker would hold each fetch this long.
            "fetch.wait.max.ms": 10,
        }
    )


def last_records(
    consumer: Consumer, bounds: Mapping[TopicPartitionKey, tuple[int, int]]
) -> dict[TopicPartitionKey, ReadRecord]:
    """The last record of each non-empty partition, given its ``(low, high)`` watermarks.

    Read from ``high - 1`` to the end: where the broker reports too low a high watermark
    (Tansu) that offset is the first of the last batch, still at or before the true end."""
    starts = {tp: max(low, high - 1) for tp, (low, high) in bounds.items() if high > low}
    return {tp: rs[-1] for tp, rs in read_records(consumer, starts).items() if rs}


class OutputMarker:
    """Takes :class:`PartitionMark` s by reading partitions' last records back.

    Its clients are made on first use (a Kafka client must not exist across a fork) and
    kept for the next checkpoint; :meth:`close` them at the end.
    """

    def __init__(self, client: Mapping[str, Any], job: str, *, headerless: bool = False) -> None:
        """``headerless``: the partitions it marks are written without headers
        (``output_headers`` none), so their last records name no job and no seq."""
        self._client = dict(client)
        self._job = job
        self._owner = None if headerless else job
        self._consumer: Consumer | None = None
        self._offsets: KafkaOffsets | None = None

    def mark(
        self, tps: Iterable[TopicPartitionKey], expected: Mapping[TopicPartitionKey, int]
    ) -> dict[TopicPartitionKey, PartitionMark]:
        """Marks of the non-empty partitions among ``tps``. Each last record must be this
        job's, and where ``expected`` gives a ``seq``, carry it (the last record this run
        wrote there): anything else means another writer, a SinkError."""
        keys = sorted(set(tps))
        if not keys:
            return {}
        if self._offsets is None:
            self._offsets = KafkaOffsets(self._client, timeout_s=_TIMEOUT_S)
        if self._consumer is None:
            self._consumer = _consumer(self._client, self._job, "mark")
        bounds = self._offsets.watermarks(keys)
        marks: dict[TopicPartitionKey, PartitionMark] = {}
        for tp, last in last_records(self._consumer, bounds).items():
            want = expected.get(tp) if self._owner is not None else None
            if last.job != self._owner or (want is not None and last.seq != want):
                ours = f"this run's last record (seq {want})" if want is not None else "its own"
                raise SinkError(
                    f"{tp[0]}/{tp[1]} ends with the record at {last.describe()}, not "
                    f"{ours}: something else writes to job {self._job}'s output (another run "
                    "of the job, or another producer); stop it and run the job again"
                )
            marks[tp] = PartitionMark(
                tp[0], tp[1], bounds[tp][0], last.offset, last.seq, last.source
            )
        return marks

    def close(self) -> None:
        """Close the clients (idempotent)."""
        consumer, self._consumer = self._consumer, None
        offsets, self._offsets = self._offsets, None
        if consumer is not None:
            consumer.close()
        if offsets is not None:
            offsets.close()


def _check_mark(
    mark: PartitionMark,
    bounds: tuple[int, int],
    last: ReadRecord | None,
    at_mark: Sequence[ReadRecord],
    job: str | None,
) -> str | None:
    """What is wrong with one marked partition, or None (``job``: whose records it must
    hold, None for a partition written without headers)."""
    where = f"{mark.topic}/{mark.partition}"
    low, _high = bounds
    if last is None:
        return f"{where} is empty; it held this job's records up to offset {mark.offset}"
    if low > mark.low:
        return (
            f"{where} lost records: it starts at offset {low}, the checkpoint saw it start at "
            f"{mark.low}"
        )
    if last.offset < mark.offset:
        return (
            f"{where} ends at offset {last.offset}, before the checkpoint's last record at "
            f"offset {mark.offset} (deleted and recreated?)"
        )
    if not at_mark or at_mark[0].offset != mark.offset:
        return f"{where} has no record at offset {mark.offset} any more"
    found = at_mark[0]
    if found.job != job or found.seq != mark.seq or found.source != mark.source:
        what = f"seq {mark.seq}" if mark.seq is not None else f"source {mark.source}"
        return (
            f"{where} holds the record at {found.describe()} where the checkpoint saw this "
            f"job's {what} (deleted and rewritten?)"
        )
    for later in (*at_mark[1:], last):
        if later.job != job or (
            later.seq is not None and mark.seq is not None and later.seq < mark.seq
        ):
            return f"{where} holds the record at {later.describe()} after the checkpoint's"
    return None


def check_marks(
    consumer: Consumer,
    marks: OutputMarks,
    partitions: Mapping[str, int | None],
    bounds: Mapping[TopicPartitionKey, tuple[int, int]],
    job: str,
    headerless: Collection[str] = (),
) -> list[str]:
    """Everything wrong with ``marks`` given each topic's partition count now (None: the
    topic is missing) and the marked partitions' watermarks; empty when all hold.
    ``headerless``: topics written without headers."""
    problems: list[str] = []
    by_topic: dict[str, list[PartitionMark]] = {}
    for mark in marks.marks.values():
        by_topic.setdefault(mark.topic, []).append(mark)
    live: list[PartitionMark] = []
    for topic, expected in sorted(marks.topics.items()):
        held = sorted(m.partition for m in by_topic.get(topic, []))
        now = partitions.get(topic)
        if now is None:
            if held:
                problems.append(
                    f"topic {topic} is missing; it held this job's records in partitions {held}"
                )
            continue
        if now != expected:
            problems.append(
                f"topic {topic} has {now} partitions, the checkpoint was taken with {expected}"
            )
            continue
        live.extend(by_topic.get(topic, []))
    keys = {(m.topic, m.partition): bounds[(m.topic, m.partition)] for m in live}
    last = last_records(consumer, keys)
    # Read at a mark only where the partition reaches it: past the end some brokers send
    # nothing at all.
    reachable = {
        (m.topic, m.partition): m.offset
        for m in live
        if (m.topic, m.partition) in last
        and keys[(m.topic, m.partition)][0] <= m.offset <= last[(m.topic, m.partition)].offset
    }
    at_mark = read_records(consumer, reachable, limit=2)
    for m in sorted(live, key=lambda m: (m.topic, m.partition)):
        tp = (m.topic, m.partition)
        owner = None if m.topic in headerless else job
        problem = _check_mark(m, keys[tp], last.get(tp), at_mark.get(tp, []), owner)
        if problem is not None:
            problems.append(problem)
    return problems


def verify_outputs(
    client: Mapping[str, Any],
    marks: OutputMarks,
    *,
    job: str,
    seq: int,
    headerless: Collection[str] = (),
) -> None:
    """Raise :class:`OutputLostError` unless every output and dead-letter partition still holds
    what the checkpoint at ``seq`` marked (see the module docstring; ``headerless``: topics
    written without headers)."""
    if not marks.topics:
        return
    admin = AdminClient(dict(client))
    metadata = admin.list_topics(timeout=_TIMEOUT_S)
    partitions: dict[str, int | None] = {
        t: (len(metadata.topics[t].partitions) if t in metadata.topics else None)
        for t in marks.topics
    }
    tps = sorted(
        (m.topic, m.partition)
        for m in marks.marks.values()
        if partitions.get(m.topic) == marks.topics.get(m.topic)
    )
    with KafkaOffsets(client, timeout_s=_TIMEOUT_S) as offsets:
        bounds = offsets.watermarks(tps) if tps else {}
    consumer = _consumer(client, job, "verify")
    try:
        problems = check_marks(consumer, marks, partitions, bounds, job, headerless)
    finally:
        consumer.close()
    if problems:
        raise OutputLostError(job, seq, problems)
    logger.info(
        "job %s: the output its checkpoint covers is intact (%d partitions checked)",
        job,
        len(marks.marks),
    )


def delete_job_topics(
    client: Mapping[str, Any],
    topics: Sequence[str],
    *,
    job: str,
    headerless: Collection[str] = (),
) -> list[str]:
    """Delete those of ``topics`` that exist, once each is shown to hold only ``job``'s
    records (the last record of every non-empty partition is the job's; anything else is a
    ConfigError and nothing is deleted). Returns the topics deleted, gone from the metadata.

    ``headerless``: topics known from the job's checkpoint manifest to be its own, written
    without headers; their last records must carry no ``restream`` headers at all."""
    admin = AdminClient(dict(client))
    metadata = admin.list_topics(timeout=_TIMEOUT_S)
    present = [t for t in dict.fromkeys(topics) if t in metadata.topics]
    if not present:
        return []
    tps = [(t, p) for t in present for p in sorted(metadata.topics[t].partitions)]
    with KafkaOffsets(client, timeout_s=_TIMEOUT_S) as offsets:
        bounds = offsets.watermarks(tps)
    consumer = _consumer(client, job, "scratch")
    try:
        last = last_records(consumer, bounds)
    finally:
        consumer.close()
    foreign = [
        f"{t}/{p} ends with the record at {r.describe()}"
        for (t, p), r in last.items()
        if r.job != (None if t in headerless else job) or (t in headerless and r.seq is not None)
    ]
    if foreign:
        raise ConfigError(
            setting("restart_from_scratch").label,
            f"will not delete topics holding records of others: {'; '.join(sorted(foreign))}; "
            f"point job {job}'s outputs elsewhere, or delete those topics yourself",
        )
    futures = admin.delete_topics(present, operation_timeout=_TIMEOUT_S)
    for topic, future in futures.items():
        try:
            future.result()
        except Exception as exc:  # confluent_kafka raises KafkaException with the broker's error
            raise BrokerError(f"cannot delete topic {topic}: {exc}") from exc
    deadline = time.monotonic() + _TIMEOUT_S
    while any(t in admin.list_topics(timeout=_TIMEOUT_S).topics for t in present):
        if time.monotonic() > deadline:
            raise BrokerError(f"topics {present} still listed {_TIMEOUT_S:.0f} s after deletion")
        time.sleep(0.1)
    return present
