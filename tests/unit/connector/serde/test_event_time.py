"""Event time from a value field: epoch ms or ISO-8601 text, anything else a bad record."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from connector.serde.event_time import event_times, parse_event_time
from engine.log import StringColumn


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1700000000123", 1_700_000_000_123),
        ("-5", -5),
        ("1970-01-01T00:00:00.001Z", 1),
        ("2026-10-01T12:00:00.250Z", 1_790_856_000_250),
        ("2026-10-01T14:00:00.250+02:00", 1_790_856_000_250),
        ("2026-10-01T12:00:00.250", 1_790_856_000_250),  # no offset: UTC
        ("2026-10-01 12:00:00.2509", 1_790_856_000_250),  # below a ms: cut
        ("1969-12-31T23:59:59.9995Z", -1),  # cut towards the past
    ],
)
def test_epoch_ms_and_iso_8601_text(text: str, ms: int) -> None:
    assert parse_event_time(text) == ms


def test_iso_agrees_with_datetime_for_many_instants() -> None:
    start = dt.datetime(2020, 2, 28, 23, 59, 59, 999000, tzinfo=dt.timezone.utc)
    for step in range(0, 10**9, 7_654_321):
        when = start + dt.timedelta(milliseconds=step)
        expected = int(when.timestamp() * 1000 + 0.5)
        assert parse_event_time(when.isoformat()) == expected
        assert parse_event_time(when.isoformat().replace("+00:00", "Z")) == expected


@pytest.mark.parametrize(
    "text", ["", "soon", "2026-13-01T00:00:00Z", "1.5", "99999999999999999999"]
)
def test_anything_else_says_why(text: str) -> None:
    problem = parse_event_time(text)
    assert isinstance(problem, str)
    assert repr(text[:60]) in problem


def test_columns_integers_as_they_are_strings_parsed_bad_rows_named() -> None:
    ts, problems = event_times(np.array([5, -1], dtype=np.int64), "at")
    assert ts.tolist() == [5, -1] and problems == {}
    column = StringColumn.encode(["10", "later", "1970-01-01T00:00:01Z", "10"])
    ts, problems = event_times(column, "at")
    assert ts[[0, 2, 3]].tolist() == [10, 1000, 10]
    assert problems == {
        1: "event-time field 'at': 'later' is neither epoch milliseconds nor an ISO-8601 date-time"
    }
