"""Dead letters: poison pills cut to fit the topic, the bad-record limit, bad event times."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from connector.config import BadRecordLimit
from connector.input.dead_letters import (
    BadRecordLimitError,
    BadRecords,
    fit_dead_letter,
)
from connector.serde.event_time import EVENT_TIME_RANGE
from connector.serde.values import RecordProblem

LIMIT = 1_000_000
POISON = b"\xff" * 5_000_000  # 5 MB that no decoder reads


@dataclass
class _Msg:
    """Just what BadRecords reads of a consumed record."""

    value_: bytes | None
    key_: bytes | None = b"7"
    offset_: int = 3
    ts: tuple[int, int] = (1, 1_700_000_000_000)
    headers_: list[tuple[str, bytes | None]] = field(default_factory=list)

    def topic(self) -> str:
        return "in"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self.offset_

    def value(self) -> bytes | None:
        return self.value_

    def key(self) -> bytes | None:
        return self.key_

    def timestamp(self) -> tuple[int, int]:
        return self.ts

    def headers(self) -> list[tuple[str, bytes | None]]:
        return self.headers_


@dataclass
class _Producer:
    flushed: int = 0
    records: list[
        tuple[str, bytes | None, bytes | None, list[tuple[str, bytes | None]], int | None]
    ] = field(default_factory=list)

    def produce_record(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
        timestamp: int | None = None,
    ) -> None:
        self.records.append((topic, value, key, list(headers or []), timestamp))

    def flush(self, timeout_s: float = 120.0) -> None:
        self.flushed += 1


def _size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]) -> int:
    return len(key or b"") + len(value or b"") + sum(len(k) + len(v or b"") for k, v in headers)


def _bad(producer: _Producer, limit: str = "100%", max_bytes: int = LIMIT) -> BadRecords:
    return BadRecords(
        "dead-letter",
        job="j",
        topic="j.dead-letter",
        producer=lambda: producer,
        limit=BadRecordLimit.parse(limit),
        max_bytes=max_bytes,
    )


UNDECODABLE = RecordProblem(0, "undecodable", "not Avro")


def test_a_record_that_fits_is_written_as_it_was() -> None:
    ours: list[tuple[str, bytes | None]] = [("restream.reason", b"undecodable")]
    letter = fit_dead_letter(b"k", b"v" * 1000, [("h", b"x")], ours, LIMIT)
    assert (letter.key, letter.value, letter.cut) == (b"k", b"v" * 1000, ())
    assert letter.headers == [("h", b"x"), *ours]


def test_a_poison_pill_is_dead_lettered_cut_with_its_size_and_digest() -> None:
    producer = _Producer()
    bad = _bad(producer)
    bad.handle(_Msg(POISON, headers_=[("trace", b"abc")]), UNDECODABLE)  # type: ignore[arg-type]
    [(topic, value, key, headers, ts)] = producer.records
    assert topic == "j.dead-letter" and key == b"7" and ts == 1_700_000_000_000
    assert value is not None and POISON.startswith(value)
    assert LIMIT - 2048 < _size(key, value, headers) <= LIMIT - 1024  # as much as fits
    h = dict(headers)
    assert h["restream.truncated"] == b"value"
    assert h["restream.value.size"] == b"5000000"
    assert h["restream.value.sha256"] == hashlib.sha256(POISON).hexdigest().encode()
    assert h["restream.reason"] == b"undecodable" and h["restream.source"] == b"in/0@3"
    assert h["trace"] == b"abc"  # the original headers stay
    assert bad.truncated == 1 and bad.counts == {"undecodable": 1}


def test_a_huge_key_is_cut_too_and_huge_headers_are_dropped() -> None:
    key = b"k" * 3_000_000
    many = [(f"h{i}", b"x" * 10_000) for i in range(200)]  # 2 MB of headers
    ours: list[tuple[str, bytes | None]] = [("restream.reason", b"undecodable")]
    letter = fit_dead_letter(key, POISON, many, ours, LIMIT)
    assert letter.cut == ("headers", "key", "value")
    h = dict(letter.headers)
    assert h["restream.key.size"] == b"3000000"
    assert h["restream.key.sha256"] == hashlib.sha256(key).hexdigest().encode()
    assert h["restream.headers.dropped"] == b"200" and "h0" not in h
    assert h["restream.truncated"] == b"headers,key,value"
    assert _size(letter.key, letter.value, letter.headers) <= LIMIT - 1024
    # A null value stays null; only the key is cut.
    letter = fit_dead_letter(key, None, [], ours, LIMIT)
    assert letter.value is None and letter.cut == ("key",)
    assert letter.key is not None and key.startswith(letter.key)


def test_past_a_count_of_bad_records_the_job_stops_naming_count_and_limit() -> None:
    producer = _Producer()
    bad = _bad(producer, limit="2")
    for i in range(2):
        bad.handle(_Msg(b"?", offset_=i), UNDECODABLE)  # type: ignore[arg-type]
    bad.read(10)
    bad.handle(_Msg(None, offset_=5), RecordProblem(0, "null-value", "null"))  # type: ignore[arg-type]
    with pytest.raises(BadRecordLimitError) as info:
        bad.read(10)
    message = str(info.value)
    assert "3 bad records of 20 read" in message
    assert "max_bad_records (--max-bad-records, RESTREAM_MAX_BAD_RECORDS) 2" in message
    assert "1 null-value, 2 undecodable" in message and "j.dead-letter" in message
    assert producer.flushed == 1  # what was dead-lettered is delivered before the job stops


def test_a_job_whose_records_are_all_bad_fails_at_the_end_however_small() -> None:
    bad = _bad(_Producer(), limit="50%")
    for i in range(3):
        bad.handle(_Msg(b"?", offset_=i), UNDECODABLE)  # type: ignore[arg-type]
    bad.read(3)  # too few records to judge a share on the way
    with pytest.raises(BadRecordLimitError, match=r"3 bad records of 3 read \(100\.0%"):
        bad.finish()


def test_a_share_is_judged_on_the_way_once_enough_records_are_read() -> None:
    bad = _bad(_Producer(), limit="10%")
    n = BadRecordLimit.MIN_RECORDS_FOR_SHARE
    for i in range(n // 10):
        bad.handle(_Msg(b"?", offset_=i), UNDECODABLE)  # type: ignore[arg-type]
    bad.read(n)  # exactly 10%: allowed
    bad.handle(_Msg(b"?", offset_=n), UNDECODABLE)  # type: ignore[arg-type]
    with pytest.raises(BadRecordLimitError, match="exceed max_bad_records"):
        bad.read(1)


def test_a_dead_letter_of_a_bad_event_time_is_stamped_when_written() -> None:
    producer = _Producer()
    bad = _bad(producer)
    for ts in (-5, EVENT_TIME_RANGE[1], 253_402_300_799_000):  # before 1970, 2200, year 9999
        problem = RecordProblem(0, "bad-timestamp", "out of range")
        bad.handle(_Msg(b"ok", offset_=ts, ts=(1, ts)), problem)  # type: ignore[arg-type]
    assert [r[4] for r in producer.records] == [None, None, None]
    assert [dict(r[3])["restream.timestamp"] for r in producer.records] == [
        b"-5",
        str(EVENT_TIME_RANGE[1]).encode(),
        b"253402300799000",
    ]
    assert bad.counts == {"bad-timestamp": 3}
