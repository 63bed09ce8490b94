"""Event time from a value field (``--event-time KIND=FIELD``) instead of the record timestamp.

The field holds epoch milliseconds (an Avro/JSON ``long`` or ``int``) or text: decimal epoch
milliseconds, or an ISO-8601 date-time (``2026-10-01T12:00:00.250Z``; one without an offset
is UTC; below a millisecond is cut towards the past). A value that is none of these is a bad
record with the reason, never a guess.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import numpy.typing as npt

from engine.log import Column, StringColumn

__all__ = ["EVENT_TIME_KINDS", "EVENT_TIME_RANGE", "event_times", "parse_event_time"]

#: Event times accepted, in ms since the epoch: from 1970-01-01T00:00:00.001 up to (not
#: including) 2200-01-01. A record outside is bad (``bad-timestamp``, see
#: :mod:`connector.input.reader`): Kafka clients write a timestamp of 0 or below as the time
#: of writing, so output records would not carry it, and a year-9999 time would stretch the
#: replay's event-time span by centuries.
EVENT_TIME_RANGE = (1, 7_258_118_400_000)

#: Avro types an event-time field may have.
EVENT_TIME_KINDS = ("long", "int", "string")

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MS = dt.timedelta(milliseconds=1)
_I64 = np.iinfo(np.int64)


def parse_event_time(text: str) -> int | str:
    """Epoch ms of ``text``, or why it is not an event time (a str)."""
    stripped = text.strip()
    if stripped.lstrip("-").isdigit():
        value = int(stripped)
        return value if _I64.min <= value <= _I64.max else f"{text!r} is outside the 64-bit range"
    iso = stripped[:-1] + "+00:00" if stripped[-1:] in ("Z", "z") else stripped
    try:
        when = dt.datetime.fromisoformat(iso)
    except ValueError:
        return f"{text[:60]!r} is neither epoch milliseconds nor an ISO-8601 date-time"
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return (when - _EPOCH) // _MS


def event_times(column: Column, field: str) -> tuple[npt.NDArray[np.int64], dict[int, str]]:
    """``(ts, problems)`` of a decoded event-time column: epoch ms per row (0 where there is
    none), and for the rows without one why not (row -> detail)."""
    if not isinstance(column, StringColumn):
        return np.asarray(column, dtype=np.int64), {}
    # Each distinct string once: a batch repeats timestamps (a 1-second clock, say).
    parsed = [parse_event_time(str(v)) for v in column.values.tolist()]
    lookup = np.array([p if isinstance(p, int) else 0 for p in parsed], dtype=np.int64)
    valid = np.array([isinstance(p, int) for p in parsed], dtype=np.bool_)
    problems = {
        row: f"event-time field {field!r}: {parsed[int(column.codes[row])]}"
        for row in np.flatnonzero(~valid[column.codes]).tolist()
    }
    return lookup[column.codes], problems
