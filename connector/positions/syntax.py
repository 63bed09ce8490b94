"""The text form of replay positions: parsing, validation and the canonical form.

Start and end positions come as text from flags, environment variables and YAML::

    earliest                            start only: the first retained offset (low watermark)
    latest                              end only: the end of each partition when the job starts
    ts:2026-10-01T00:00:00Z             a time: ISO-8601 with Z or an offset ...
    ts:2026-10-01T02:00:00+02:00
    ts:1759276800000                    ... or epoch milliseconds
    group:NAME                          start only: consumer group NAME's committed offsets
    offsets:TOPIC/PARTITION=OFFSET,...  explicit offsets: offsets:orders/0=100,orders/1=250
    offsets:0=100,1=250                 the same, when there is a single input topic

Keywords are case-insensitive and spaces around entries are ignored. ``str(position)`` gives
the canonical text, which parses back to an equal position: times print as UTC ISO-8601
(with milliseconds when they are not 0), offsets as ``TOPIC/PARTITION=OFFSET`` sorted.

RefusedError, with a ConfigError that says what to write instead:

- ``latest`` as a start and ``earliest`` as an end: such a replay reads nothing, and the
  likeliest cause is a consumer's ``auto.offset.reset`` habit, not a wish for an empty run.
- ``group:NAME`` as an end: a group's offsets say where it got to, a start for a backtest.
- A time without a timezone (add ``Z`` or an offset), before 1970, or finer than a
  millisecond (Kafka's resolution).
- Offsets naming a topic that is not an input, or a partition twice. Whether they name every
  partition is checked when the range is resolved (:func:`connector.positions.ranges.resolve`),
  since only the broker knows the partitions.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Literal, get_args

from connector.errors import ConfigError
from connector.kafka.offsets import PartitionKey

__all__ = [
    "EARLIEST",
    "END_KINDS",
    "EndKind",
    "LATEST",
    "Position",
    "PositionKind",
    "START_KINDS",
    "SYNTAX",
    "StartKind",
    "format_timestamp",
    "parse_end",
    "parse_start",
]

logger = logging.getLogger(__name__)

StartKind = Literal["earliest", "offsets", "timestamp", "group"]
EndKind = Literal["latest", "offsets", "timestamp"]
PositionKind = Literal["earliest", "latest", "offsets", "timestamp", "group"]
START_KINDS: tuple[str, ...] = get_args(StartKind)
END_KINDS: tuple[str, ...] = get_args(EndKind)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MAX_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last ISO-8601 year
_DIGITS = re.compile(r"[0-9]+")
_TOPIC = re.compile(r"[A-Za-z0-9._-]+")
# What to write, for error messages that say "use ...": keyed by "start" and "end".
SYNTAX: Mapping[str, str] = MappingProxyType(
    {
        "start": "earliest, ts:2026-10-01T00:00:00Z (or epoch ms), group:NAME or "
        "offsets:TOPIC/PARTITION=OFFSET,...",
        "end": "latest, ts:2026-10-01T00:00:00Z (or epoch ms) or "
        "offsets:TOPIC/PARTITION=OFFSET,...",
    }
)


@dataclass(frozen=True, slots=True)
class Position:
    """One parsed start or end position; ``str()`` gives its canonical text.

    ``offsets`` (kind ``offsets``) maps ``(topic, partition)`` to an offset, ``timestamp_ms``
    (kind ``timestamp``) is epoch milliseconds, ``group`` (kind ``group``) a consumer group;
    the other kinds take none of them.
    """

    kind: PositionKind
    offsets: Mapping[PartitionKey, int] | None = None
    timestamp_ms: int | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in get_args(PositionKind):
            raise ConfigError("position", f"unknown kind {self.kind!r}")
        needs = {"offsets": "offsets", "timestamp": "timestamp_ms", "group": "group"}.get(self.kind)
        for name in ("offsets", "timestamp_ms", "group"):
            given = getattr(self, name) is not None
            if given != (name == needs):
                what = "need" if name == needs else "take no"
                raise ConfigError("position", f"{self.kind} positions {what} {name}")
        if self.offsets is not None:
            if not self.offsets:
                raise ConfigError("position", "offsets: name at least one partition")
            for (topic, partition), offset in self.offsets.items():
                if not _TOPIC.fullmatch(topic) or partition < 0 or offset < 0:
                    raise ConfigError("position", f"invalid offset {topic}/{partition}={offset}")
            ordered = dict(sorted(self.offsets.items()))
            object.__setattr__(self, "offsets", MappingProxyType(ordered))
        if self.timestamp_ms is not None and not 0 <= self.timestamp_ms <= _MAX_TIMESTAMP_MS:
            raise ConfigError("position", f"timestamp {self.timestamp_ms} ms is out of range")
        if self.group is not None and (not self.group or self.group != self.group.strip()):
            raise ConfigError("position", f"group name {self.group!r} is empty or padded")

    def __hash__(self) -> int:
        offsets = tuple(self.offsets.items()) if self.offsets is not None else None
        return hash((self.kind, offsets, self.timestamp_ms, self.group))

    def __str__(self) -> str:
        if self.offsets is not None:
            return "offsets:" + ",".join(f"{t}/{p}={o}" for (t, p), o in self.offsets.items())
        if self.timestamp_ms is not None:
            return "ts:" + format_timestamp(self.timestamp_ms)
        if self.group is not None:
            return f"group:{self.group}"
        return self.kind


EARLIEST = Position("earliest")
LATEST = Position("latest")


def format_timestamp(timestamp_ms: int) -> str:
    """UTC ISO-8601 with ``Z``, e.g. ``2026-10-01T00:00:00Z``; milliseconds when not 0."""
    moment = _EPOCH + timedelta(milliseconds=timestamp_ms)
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    millis = timestamp_ms % 1000
    return f"{text}.{millis:03d}Z" if millis else f"{text}Z"


def parse_start(text: str, *, topics: Sequence[str], field: str = "start") -> Position:
    """Parse a start position (see the module docstring); ``topics`` are the input topics."""
    position = _parse(text, topics=topics, field=field, syntax=SYNTAX["start"])
    if position.kind == "latest":
        raise ConfigError(
            field,
            "latest as a start would replay nothing (a replay reads history); use earliest, "
            "ts:TIME, group:NAME or offsets:...",
        )
    return position


def parse_end(text: str, *, topics: Sequence[str], field: str = "end") -> Position:
    """Parse an end position (see the module docstring); ``topics`` are the input topics."""
    position = _parse(text, topics=topics, field=field, syntax=SYNTAX["end"])
    if position.kind == "earliest":
        raise ConfigError(
            field, "earliest as an end would replay nothing; use latest, ts:TIME or offsets:..."
        )
    if position.kind == "group":
        raise ConfigError(
            field,
            "a consumer group's offsets can only give the start; end at latest, ts:TIME "
            "or offsets:...",
        )
    return position


def _parse(text: str, *, topics: Sequence[str], field: str, syntax: str) -> Position:
    stripped = text.strip()
    keyword, colon, value = stripped.partition(":")
    keyword = keyword.strip().lower()
    if not colon and keyword in ("earliest", "latest"):
        return Position(keyword)  # type: ignore[arg-type]  # narrowed by the test above
    if colon and keyword == "ts":
        return Position("timestamp", timestamp_ms=_parse_time(value.strip(), field))
    if colon and keyword == "group":
        name = value.strip()
        if not name:
            raise ConfigError(field, "group: needs a consumer group name, e.g. group:my-app")
        return Position("group", group=name)
    if colon and keyword == "offsets":
        return Position("offsets", offsets=_parse_offsets(value, topics, field))
    raise ConfigError(field, f"cannot read {text!r}; use {syntax}")


def _parse_time(value: str, field: str) -> int:
    examples = "ts:2026-10-01T00:00:00Z, ts:2026-10-01T02:00:00+02:00 or ts:1759276800000"
    if _DIGITS.fullmatch(value):
        timestamp_ms = int(value)
        if timestamp_ms > _MAX_TIMESTAMP_MS:
            raise ConfigError(field, f"ts:{value} is past the year 9999 in epoch milliseconds")
        if timestamp_ms < 10**10:
            logger.warning(
                "%s: ts:%s is read as epoch milliseconds (%s); for seconds add three zeros",
                field,
                value,
                format_timestamp(timestamp_ms),
            )
        return timestamp_ms
    iso = value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise ConfigError(field, f"cannot read ts:{value} as a time; write {examples}") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ConfigError(
            field,
            f"ts:{value} has no timezone; add Z for UTC or an offset such as +02:00 "
            f"(e.g. ts:{value}Z)",
        )
    if moment.microsecond % 1000:
        raise ConfigError(
            field, f"ts:{value}: Kafka timestamps are milliseconds; give at most 3 decimals"
        )
    timestamp_ms = (moment - _EPOCH) // timedelta(milliseconds=1)
    if not 0 <= timestamp_ms <= _MAX_TIMESTAMP_MS:
        raise ConfigError(field, f"ts:{value} is before 1970, where Kafka has no timestamps")
    return timestamp_ms


def _parse_offsets(value: str, topics: Sequence[str], field: str) -> dict[PartitionKey, int]:
    form = "offsets:TOPIC/PARTITION=OFFSET,... (e.g. offsets:orders/0=100,orders/1=250)"
    items = [item.strip() for item in value.split(",")]
    if not value.strip() or not all(items):
        raise ConfigError(field, f"offsets:{value} has an empty entry; write {form}")
    offsets: dict[PartitionKey, int] = {}
    for item in items:
        where, equals, number = (part.strip() for part in item.rpartition("="))
        if not equals or not _DIGITS.fullmatch(number):
            raise ConfigError(field, f"cannot read {item!r} in offsets:{value}; write {form}")
        topic, slash, partition = (part.strip() for part in where.rpartition("/"))
        if not slash:
            if len(topics) != 1:
                raise ConfigError(
                    field,
                    f"{item!r} in offsets:{value} does not name its topic; with several input "
                    f"topics write {form}",
                )
            topic = topics[0]
        if not _DIGITS.fullmatch(partition) or not _TOPIC.fullmatch(topic):
            raise ConfigError(field, f"cannot read {item!r} in offsets:{value}; write {form}")
        if topic not in topics:
            raise ConfigError(
                field,
                f"offsets:{value} names topic {topic}, which is not an input topic "
                f"(inputs: {', '.join(topics) or 'none'})",
            )
        key = (topic, int(partition))
        if key in offsets:
            raise ConfigError(field, f"offsets:{value} gives {topic}/{partition} twice")
        offsets[key] = int(number)
    return offsets
