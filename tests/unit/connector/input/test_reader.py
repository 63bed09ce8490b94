"""The bounded reader's bookkeeping: runs, end offsets, gaps and end-of-partition events;
what it counts as a bad record besides the decoder's problems."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import KafkaError
from hypothesis import given
from hypothesis import strategies as st

from connector.config import BadRecordLimit
from connector.errors import BrokerError, ConfigError
from connector.input.dead_letters import BadRecords
from connector.input.reader import KafkaSource, TopicInput, _Messages, _Pending, fetch_settings
from connector.serde.avro import encode_value, load_schema, load_schema_file
from connector.serde.event_time import EVENT_TIME_RANGE
from connector.serde.values import value_decoder


@dataclass
class _Msg:
    t: str
    p: int
    o: int
    err: KafkaError | None = None

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def error(self) -> KafkaError | None:
        return self.err


def _sort(
    messages: list[_Msg], ends: dict[tuple[str, int], int]
) -> dict[tuple[str, int], _Pending]:
    source = KafkaSource.__new__(KafkaSource)
    pending = {k: _Pending() for k in ends}
    live = set(ends)
    source._sort_in(messages, pending, ends, live)  # type: ignore[arg-type]
    for k, state in pending.items():
        assert state.done == (k not in live)
    return pending


def _eof(t: str, p: int, offset: int) -> _Msg:
    return _Msg(t, p, offset, KafkaError(KafkaError._PARTITION_EOF))


def test_records_at_or_past_the_end_finish_the_partition_and_are_dropped() -> None:
    msgs = [_Msg("a", 0, o) for o in range(5)] + [_Msg("a", 1, o) for o in (0, 1)]
    pending = _sort(msgs, {("a", 0): 3, ("a", 1): 10})
    assert [m.o for m in pending[("a", 0)].messages] == [0, 1, 2]
    assert pending[("a", 0)].done and pending[("a", 0)].next_offset == 3
    assert not pending[("a", 1)].done and pending[("a", 1)].next_offset == 2


def test_gaps_and_an_end_of_partition_at_the_end_finish_it() -> None:
    # Offsets 3 and 4 are a transaction marker and a compacted record: never delivered.
    msgs = [_Msg("a", 0, 0), _Msg("a", 0, 2), _eof("a", 0, 5)]
    pending = _sort(msgs, {("a", 0): 5})
    assert [m.o for m in pending[("a", 0)].messages] == [0, 2]
    assert pending[("a", 0)].done


def test_an_early_end_of_partition_does_not_finish_it() -> None:
    pending = _sort([_Msg("a", 0, 0), _eof("a", 0, 1)], {("a", 0): 4})
    assert not pending[("a", 0)].done


def test_fatal_errors_stop_the_read() -> None:
    fatal = _Msg("a", 0, 0, KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, fatal=True))
    with pytest.raises(BrokerError, match="a/0"):
        _sort([fatal], {("a", 0): 4})


@given(
    st.lists(st.tuples(st.integers(0, 2), st.integers(1, 5)), max_size=30),
    st.lists(st.integers(1, 40), min_size=3, max_size=3),  # empty ranges never go live
)
def test_runs_match_record_by_record(runs: list[tuple[int, int]], ends_list: list[int]) -> None:
    """Whatever the interleaving of runs, exactly the offsets below each end are kept."""
    next_offset = [0, 0, 0]
    msgs = []
    for p, n in runs:
        for _ in range(n):
            msgs.append(_Msg("t", p, next_offset[p]))
            next_offset[p] += 1
    ends = {("t", p): ends_list[p] for p in range(3)}
    pending = _sort(msgs, ends)
    for p in range(3):
        want = list(range(min(next_offset[p], ends_list[p])))
        assert [m.o for m in pending[("t", p)].messages] == want
        assert pending[("t", p)].done == (next_offset[p] >= ends_list[p])


@dataclass
class _Record:
    """A consumed record as the decoding step reads it."""

    o: int
    ts: int
    value_: bytes | None
    key_: bytes | None = b"5"

    def topic(self) -> str:
        return "in"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self.o

    def value(self) -> bytes | None:
        return self.value_

    def key(self) -> bytes | None:
        return self.key_

    def timestamp(self) -> tuple[int, int]:
        return (1, self.ts)

    def headers(self) -> None:
        return None


def test_event_times_outside_1970_to_2200_are_bad_records() -> None:
    schema = load_schema("social/Message")

    def message(i: int) -> bytes:
        return encode_value(
            schema, {"message_id": i, "ts": 0, "sender": 5, "recipient": 1, "content": "hi"}
        )

    source = KafkaSource.__new__(KafkaSource)
    source._inputs = {
        "in": TopicInput("in", "message", value_decoder("avro", schema, key_format="decimal"))
    }
    bad = BadRecords("fail", job="j", topic=None, producer=None, limit=BadRecordLimit(count=9))
    handled: list[tuple[int, str, str]] = []  # what the policy was handed, in order
    bad.handle = lambda m, p: handled.append((m.offset(), p.reason, p.detail))  # type: ignore[method-assign]
    source._bad = bad
    lo, hi = EVENT_TIME_RANGE
    stamps = [lo, -1_000, hi - 1, hi, 253_402_300_799_000, 1_700_000_000_000, 0]
    records = [_Record(i, ts, message(i)) for i, ts in enumerate(stamps)]
    batch = source._decode(("in", 0), _Messages(records), final=True)  # type: ignore[arg-type]
    assert lo == 1  # 0 is "now" to a Kafka producer: output records could not carry it
    assert batch.offsets.tolist() == [0, 2, 5]
    assert batch.ts.tolist() == [lo, hi - 1, 1_700_000_000_000]
    assert batch.columns["message_id"].tolist() == [0, 2, 5]  # type: ignore[union-attr]
    assert [(o, r) for o, r, _ in handled] == [
        (1, "bad-timestamp"),
        (3, "bad-timestamp"),
        (4, "bad-timestamp"),
        (6, "bad-timestamp"),
    ]
    assert "before 1970-01-01" in handled[0][2] and "2200-01-01" in handled[1][2]
    assert "Kafka writes 0 as the time of writing" in handled[3][2]
    assert bad.records_read == 7


class _Bad:
    def __init__(self) -> None:
        self.seen: list[tuple[int, str, str]] = []

    def handle(self, message: _Record, problem: object) -> None:
        self.seen.append((message.o, problem.reason, problem.detail))  # type: ignore[attr-defined]

    def read(self, records: int) -> None:
        """Counted by the real policy (for its limit); nothing to count here."""


@pytest.mark.parametrize("field", ["at", "ts"])
def test_event_time_from_a_field_bad_times_are_bad_records(field: str, tmp_path: Path) -> None:
    fields = [{"name": "card", "type": "string"}, {"name": field, "type": "string"}]
    path = tmp_path / "Payment.avsc"
    path.write_text(json.dumps({"type": "record", "name": "Payment", "fields": fields}))
    schema = load_schema_file(path)
    exclude = () if field == "ts" else ("ts",)
    spec = TopicInput("t", "payment", value_decoder("json", schema, exclude=exclude), field)
    source = KafkaSource.__new__(KafkaSource)
    source._inputs = {"t": spec}
    source._bad = _Bad()  # type: ignore[assignment]
    rows = [
        {"card": "a", field: "2026-10-01T12:00:00Z"},
        {"card": "b", field: "yesterday"},
        {"card": "c"},
        {"card": "d", field: "1700000000000"},
    ]
    messages = [_Record(i, 99, json.dumps(r).encode(), b"k") for i, r in enumerate(rows)]
    batch = source._decode(("t", 0), _Messages(messages), final=True)  # type: ignore[arg-type]
    assert batch.offsets.tolist() == [0, 3]
    assert batch.ts.tolist() == [1_790_856_000_000, 1_700_000_000_000]  # not the record's 99
    assert sorted(batch.columns) == (["card"] if field == "ts" else ["at", "card"])
    assert source._bad.seen == [  # type: ignore[attr-defined]
        (
            1,
            "undecodable",
            f"event-time field {field!r}: 'yesterday' is neither epoch "
            "milliseconds nor an ISO-8601 date-time",
        ),
        (2, "undecodable", f"field {field!r} is missing"),
    ]


def test_the_native_reader_takes_the_consumers_fetch_settings() -> None:
    assert fetch_settings({"bootstrap.servers": "b:9092"}) == {"read_committed": True}
    assert fetch_settings(
        {
            "isolation.level": "read_uncommitted",
            "fetch.max.bytes": "1000000",
            "max.partition.fetch.bytes": 4096,
            "fetch.wait.max.ms": 0,
        }
    ) == {
        "read_committed": False,
        "max_bytes": 1_000_000,
        "partition_max_bytes": 4096,
        "max_wait_ms": 0,
    }
    with pytest.raises(ConfigError, match=r"kafka: fetch.max.bytes='lots' is not a number"):
        fetch_settings({"fetch.max.bytes": "lots"})
    with pytest.raises(ConfigError, match=r"kafka: max.partition.fetch.bytes=0 is out of range"):
        fetch_settings({"max.partition.fetch.bytes": 0})
