"""Resolving replay positions to offset ranges, and the table ``restream positions`` prints.

A replay reads, from every partition of every input topic, the offsets ``[start, end)``.
Positions are written as text (full syntax and rules: :mod:`connector.positions.syntax`)::

    start: earliest | ts:TIME | group:NAME | offsets:TOPIC/PARTITION=OFFSET,...
    end:   latest   | ts:TIME |              offsets:TOPIC/PARTITION=OFFSET,...

TIME is ISO-8601 with ``Z`` or an offset (``ts:2026-10-01T00:00:00Z``) or epoch milliseconds.
:func:`resolve` turns a start and an end into a :class:`PartitionRange` per partition:

- ``earliest`` is the low watermark; ``latest`` the high watermark when resolved (under
  ``read_committed``, the last stable offset).
- A time T gives the first offset whose record timestamp is >= T, or the high watermark if
  no record is that late; as an end it is exclusive.
- ``group:NAME`` reads the group's committed offsets and nothing else: the job never joins,
  commits to or alters that group. A partition the group has no committed offset for is an
  error rather than a silent fallback: the backtest would read something the group did not.
- ``offsets:`` must name every partition of every input topic, for the same reason: a
  forgotten partition would be read whole or not at all without anyone noticing.

Unknown topics or partitions, offsets outside the retained range (``low..high``; ``high``
itself is a valid, empty position), and an end before the start raise
:class:`~connector.errors.ConfigError` (field ``input``, ``start`` or ``end``; the CLI exits
with code 2) before anything is read, naming the topic, partition and offsets. The cluster is
asked through an :class:`~connector.kafka.offsets.OffsetsClient`; Kafka's is
:class:`~connector.kafka.offsets.KafkaOffsets`. :func:`connector.positions.table.describe_ranges`
renders resolved ranges as the table that ``restream positions`` prints.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from connector.errors import BrokerError, ConfigError
from connector.kafka.offsets import KafkaOffsets, OffsetsClient, PartitionKey
from connector.positions.syntax import (
    EARLIEST,
    END_KINDS,
    LATEST,
    START_KINDS,
    SYNTAX,
    EndKind,
    Position,
    PositionKind,
    StartKind,
    format_timestamp,
    parse_end,
    parse_start,
)

__all__ = [
    "EARLIEST",
    "EndKind",
    "KafkaOffsets",
    "LATEST",
    "OffsetsClient",
    "PartitionKey",
    "PartitionRange",
    "Position",
    "PositionKind",
    "ResolvedRanges",
    "StartKind",
    "format_timestamp",
    "parse_end",
    "parse_start",
    "resolve",
]

logger = logging.getLogger(__name__)

_LISTED = 10  # partitions named in one error message; the rest are counted


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """The offsets ``[start, end)`` to read from one partition, and its retained range.

    ``low`` and ``high`` are the watermarks when the range was resolved: the first retained
    offset and the end of the partition.
    """

    topic: str
    partition: int
    start: int
    end: int
    low: int
    high: int

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.start <= self.end <= self.high:
            raise ConfigError(
                "range",
                f"{self.topic}/{self.partition}: need low <= start <= end <= high, got "
                f"{self.low}, {self.start}, {self.end}, {self.high}",
            )

    @property
    def tp(self) -> PartitionKey:
        """``(topic, partition)``."""
        return (self.topic, self.partition)

    @property
    def records(self) -> int:
        """``end - start``: the offsets in the range.

        An upper bound of the records read: compaction and transaction markers leave offsets
        that hold no record.
        """
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class ResolvedRanges:
    """One :class:`PartitionRange` per input partition, sorted by topic and partition."""

    ranges: tuple[PartitionRange, ...]

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.ranges, key=lambda r: r.tp))
        keys = [r.tp for r in ordered]
        if len(set(keys)) != len(keys):
            raise ConfigError("range", "a partition appears twice in the resolved ranges")
        object.__setattr__(self, "ranges", ordered)

    @property
    def records(self) -> int:
        """Offsets to read over all partitions (an upper bound; see PartitionRange.records)."""
        return sum(r.records for r in self.ranges)

    @property
    def topics(self) -> tuple[str, ...]:
        """The topics, sorted."""
        return tuple(sorted({r.topic for r in self.ranges}))

    def by_topic(self) -> dict[str, tuple[PartitionRange, ...]]:
        """The ranges of each topic, topics and partitions sorted."""
        return {t: tuple(r for r in self.ranges if r.topic == t) for t in self.topics}

    def empty(self) -> bool:
        """True if no partition has an offset to read."""
        return self.records == 0

    def start_offsets(self) -> dict[PartitionKey, int]:
        """The first offset to read of each partition."""
        return {r.tp: r.start for r in self.ranges}

    def end_offsets(self) -> dict[PartitionKey, int]:
        """The offset after the last one to read, of each partition."""
        return {r.tp: r.end for r in self.ranges}

    def start_position(self) -> Position:
        """The resolved start as explicit offsets: its text re-creates this exact range."""
        return Position("offsets", offsets=self.start_offsets())

    def end_position(self) -> Position:
        """The resolved end as explicit offsets."""
        return Position("offsets", offsets=self.end_offsets())


def resolve(
    topics: Sequence[str], start: Position, end: Position, client: OffsetsClient
) -> ResolvedRanges:
    """The offset range of every partition of ``topics`` between ``start`` and ``end``.

    Raises ConfigError before anything is read if a topic or partition is unknown, an offset
    is outside the retained range, a group lacks a committed offset, or an end is before its
    start. ``client`` is only asked questions: nothing is written, no group is touched.
    """
    names = list(topics)
    if not names or len(set(names)) != len(names):
        raise ConfigError("input", f"name each input topic once; got {names}")
    if start.kind not in START_KINDS:
        raise ConfigError("start", f"{start} cannot be a start; use {SYNTAX['start']}")
    if end.kind not in END_KINDS:
        raise ConfigError("end", f"{end} cannot be an end; use {SYNTAX['end']}")
    if (
        start.timestamp_ms is not None
        and end.timestamp_ms is not None
        and end.timestamp_ms < start.timestamp_ms
    ):
        raise ConfigError("end", f"the end {end} is before the start {start}")
    partitions = client.partitions(names)
    missing_topics = [t for t in names if t not in partitions]
    if missing_topics:
        raise ConfigError("input", f"unknown topic {', '.join(missing_topics)}")
    tps = [(t, p) for t in names for p in sorted(partitions[t])]
    explicit = [(f, p.offsets) for f, p in (("start", start), ("end", end)) if p.offsets]
    for field, offsets in explicit:
        _check_partitions(field, offsets, partitions)
    marks = client.watermarks(tps)
    for field, offsets in explicit:
        _check_coverage(field, offsets, tps, marks)
    starts = _start_offsets(start, tps, marks, client)
    ends = _end_offsets(end, tps, marks, client)
    backwards = [
        f"{t}/{p} (start {starts[(t, p)]}, end {ends[(t, p)]})"
        for t, p in tps
        if ends[(t, p)] < starts[(t, p)]
    ]
    if backwards:
        raise ConfigError(
            "end",
            f"the end ({_brief(end)}) is before the start ({_brief(start)}) for "
            f"{_listed(backwards)}; choose an end at or after the start",
        )
    resolved = ResolvedRanges(
        tuple(PartitionRange(t, p, starts[(t, p)], ends[(t, p)], *marks[(t, p)]) for t, p in tps)
    )
    logger.info(
        "resolved %d partitions of %s from %s to %s: %d offsets",
        len(tps),
        ", ".join(names),
        _brief(start),
        _brief(end),
        resolved.records,
    )
    return resolved


def _check_partitions(
    field: str, offsets: Mapping[PartitionKey, int], partitions: Mapping[str, list[int]]
) -> None:
    unknown = []
    for (topic, partition), offset in offsets.items():
        if topic not in partitions:
            raise ConfigError(
                field, f"offsets name {topic}/{partition}={offset}, but {topic} is not an input"
            )
        if partition not in partitions[topic]:
            have = _span(partitions[topic])
            unknown.append(f"{topic}/{partition}={offset} ({topic} has partitions {have})")
    if unknown:
        raise ConfigError(field, f"unknown partition {_listed(unknown)}")


def _check_coverage(
    field: str,
    offsets: Mapping[PartitionKey, int],
    tps: Sequence[PartitionKey],
    marks: Mapping[PartitionKey, tuple[int, int]],
) -> None:
    missing = [
        f"{t}/{p} (retained {_retained(*marks[(t, p)])})" for t, p in tps if (t, p) not in offsets
    ]
    if missing:
        raise ConfigError(
            field,
            f"offsets must name every partition of every input topic; missing {_listed(missing)}",
        )


def _start_offsets(
    start: Position,
    tps: Sequence[PartitionKey],
    marks: Mapping[PartitionKey, tuple[int, int]],
    client: OffsetsClient,
) -> dict[PartitionKey, int]:
    if start.kind == "earliest":
        return {tp: marks[tp][0] for tp in tps}
    if start.group is None:
        return _explicit_or_timed("start", start, tps, marks, client)
    group = start.group
    committed = client.group_offsets(group, tps)
    offsets = {tp: offset for tp in tps if (offset := committed.get(tp)) is not None}
    absent = [f"{t}/{p}" for t, p in tps if (t, p) not in offsets]
    if absent:
        raise ConfigError(
            "start",
            f"consumer group {group} has no committed offset for {_listed(absent)}; check the "
            "group name, or start from earliest, ts:TIME or offsets:... instead",
        )
    outside = _outside(offsets, marks)
    if outside:
        raise ConfigError(
            "start",
            f"consumer group {group} has committed offsets outside the retained range: "
            f"{_listed(outside)}; the records there are gone, so start from earliest, "
            "ts:TIME or offsets:... instead",
        )
    return offsets


def _end_offsets(
    end: Position,
    tps: Sequence[PartitionKey],
    marks: Mapping[PartitionKey, tuple[int, int]],
    client: OffsetsClient,
) -> dict[PartitionKey, int]:
    if end.kind == "latest":
        return {tp: marks[tp][1] for tp in tps}
    return _explicit_or_timed("end", end, tps, marks, client)


def _explicit_or_timed(
    field: str,
    position: Position,
    tps: Sequence[PartitionKey],
    marks: Mapping[PartitionKey, tuple[int, int]],
    client: OffsetsClient,
) -> dict[PartitionKey, int]:
    if position.offsets is not None:
        return _explicit(field, position.offsets, tps, marks)
    assert position.timestamp_ms is not None  # the kinds left: offsets and timestamp
    return _timed(position, tps, marks, client)


def _explicit(
    field: str,
    given: Mapping[PartitionKey, int],
    tps: Sequence[PartitionKey],
    marks: Mapping[PartitionKey, tuple[int, int]],
) -> dict[PartitionKey, int]:
    offsets = {tp: given[tp] for tp in tps}
    outside = _outside(offsets, marks)
    if outside:
        keyword = "earliest" if field == "start" else "latest"
        raise ConfigError(
            field,
            f"offsets outside the retained range: {_listed(outside)}; choose offsets within "
            f"it, or use {keyword}",
        )
    return offsets


def _timed(
    position: Position,
    tps: Sequence[PartitionKey],
    marks: Mapping[PartitionKey, tuple[int, int]],
    client: OffsetsClient,
) -> dict[PartitionKey, int]:
    assert position.timestamp_ms is not None
    found = client.offsets_for_time(tps, position.timestamp_ms)
    offsets: dict[PartitionKey, int] = {}
    for tp in tps:
        low, high = marks[tp]
        offset = found.get(tp)
        if offset is not None and offset < low:
            raise BrokerError(
                f"the broker answered offset {offset} for {position} on {tp[0]}/{tp[1]}, "
                f"below its low watermark {low}"
            )
        # None: no record is that late. An offset past `high` comes from records appended
        # after the watermarks were read: none up to `high` is that late either.
        offsets[tp] = high if offset is None else min(offset, high)
    return offsets


def _outside(
    offsets: Mapping[PartitionKey, int], marks: Mapping[PartitionKey, tuple[int, int]]
) -> list[str]:
    return [
        f"{t}/{p} offset {offset} (retained {_retained(*marks[(t, p)])})"
        for (t, p), offset in offsets.items()
        if not marks[(t, p)][0] <= offset <= marks[(t, p)][1]
    ]


def _brief(position: Position) -> str:
    return "the given offsets" if position.offsets is not None else str(position)


def _retained(low: int, high: int) -> str:
    if low == high:
        return f"{low}..{high}: no records, only offset {low} is valid"
    return f"{low}..{high}: records {low} to {high - 1}"


def _span(partitions: Sequence[int]) -> str:
    ps = sorted(partitions)
    if ps == list(range(len(ps))):
        return f"0 to {len(ps) - 1}" if len(ps) > 1 else "0"
    return ", ".join(map(str, ps))


def _listed(items: Sequence[str]) -> str:
    shown = "; ".join(items[:_LISTED])
    more = len(items) - _LISTED
    return f"{shown}; and {more} more" if more > 0 else shown
