"""Positions: the text syntax, resolving against a fake cluster, and the positions table."""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.errors import BrokerError, ConfigError
from connector.kafka.offsets import KafkaOffsets, PartitionKey
from connector.positions.ranges import (
    EARLIEST,
    LATEST,
    PartitionRange,
    Position,
    PositionKind,
    ResolvedRanges,
    format_timestamp,
    parse_end,
    parse_start,
    resolve,
)
from connector.positions.table import describe_ranges

T0 = 1_759_276_800_000  # 2025-10-01T00:00:00Z


@dataclass
class FakePartition:
    """Record timestamps from offset ``low`` on; None marks an offset without a record."""

    timestamps: list[int | None]
    low: int = 0

    @property
    def high(self) -> int:
        return self.low + len(self.timestamps)


@dataclass
class FakeOffsets:
    """An in-memory cluster that answers as Apache Kafka does, and logs what it was asked."""

    topics: dict[str, list[FakePartition]]
    groups: dict[str, dict[PartitionKey, int]] = field(default_factory=dict)
    calls: list[tuple[str, object]] = field(default_factory=list)

    def partitions(self, topics: Sequence[str]) -> dict[str, list[int]]:
        self.calls.append(("partitions", tuple(topics)))
        unknown = [t for t in topics if t not in self.topics]
        if unknown:
            raise ConfigError("input", f"unknown topic {', '.join(unknown)}")
        return {t: list(range(len(self.topics[t]))) for t in topics}

    def watermarks(self, tps: Sequence[PartitionKey]) -> dict[PartitionKey, tuple[int, int]]:
        self.calls.append(("watermarks", tuple(tps)))
        return {(t, p): (self._part(t, p).low, self._part(t, p).high) for t, p in tps}

    def offsets_for_time(
        self, tps: Sequence[PartitionKey], timestamp_ms: int
    ) -> dict[PartitionKey, int | None]:
        self.calls.append(("offsets_for_time", timestamp_ms))
        found: dict[PartitionKey, int | None] = {}
        for t, p in tps:
            part = self._part(t, p)
            late = [
                i for i, ts in enumerate(part.timestamps) if ts is not None and ts >= timestamp_ms
            ]
            found[(t, p)] = part.low + late[0] if late else None
        return found

    def group_offsets(
        self, group: str, tps: Sequence[PartitionKey]
    ) -> dict[PartitionKey, int | None]:
        self.calls.append(("group_offsets", group))
        committed = self.groups.get(group, {})
        return {tp: committed.get(tp) for tp in tps}

    def timestamps(self, tp: PartitionKey, offsets: Sequence[int]) -> dict[int, int]:
        self.calls.append(("timestamps", (tp, tuple(offsets))))
        part = self._part(*tp)
        found: dict[int, int] = {}
        for offset in offsets:
            if part.low <= offset < part.high:
                ts = part.timestamps[offset - part.low]
                if ts is not None:
                    found[offset] = ts
        return found

    def _part(self, topic: str, partition: int) -> FakePartition:
        return self.topics[topic][partition]


def spaced(n: int, step: int = 1000, start: int = T0) -> list[int | None]:
    return [start + i * step for i in range(n)]


@pytest.fixture
def cluster() -> FakeOffsets:
    """orders: 3 partitions (10 records, empty, 5 records from offset 100); users: 1 partition."""
    return FakeOffsets(
        {
            "orders": [
                FakePartition(spaced(10)),
                FakePartition([]),
                FakePartition(spaced(5, step=2000), low=100),
            ],
            "users": [FakePartition(spaced(4, step=500, start=T0 + 250))],
        },
        groups={
            "app": {("orders", 0): 3, ("orders", 1): 0, ("orders", 2): 102, ("users", 0): 4},
            "partial": {("orders", 0): 3, ("users", 0): 1},
            "stale": {("orders", 0): 3, ("orders", 1): 0, ("orders", 2): 50, ("users", 0): 1},
        },
    )


TOPICS = ("orders", "users")


def spans(ranges: ResolvedRanges) -> dict[PartitionKey, tuple[int, int]]:
    return {r.tp: (r.start, r.end) for r in ranges.ranges}


def config_error(call: object, *args: object, **kwargs: object) -> ConfigError:
    assert callable(call)
    with pytest.raises(ConfigError) as info:
        call(*args, **kwargs)
    return info.value


# --- syntax -------------------------------------------------------------------------------


def test_keywords_are_case_insensitive_and_trimmed() -> None:
    assert parse_start(" Earliest ", topics=TOPICS) == EARLIEST
    assert parse_end("LATEST\n", topics=TOPICS) == LATEST
    assert parse_start("GROUP: my-app ", topics=TOPICS) == Position("group", group="my-app")
    assert parse_start("TS:1759276800000", topics=TOPICS).timestamp_ms == T0


def test_times_in_every_form_give_the_same_milliseconds() -> None:
    for text in (
        "ts:2025-10-01T00:00:00Z",
        "ts:2025-10-01T02:00:00+02:00",
        "ts:2025-09-30T19:00:00-05:00",
        "ts:2025-10-01T00:00:00.000z",
        "ts:1759276800000",
    ):
        assert parse_start(text, topics=TOPICS) == Position("timestamp", timestamp_ms=T0), text
    assert parse_end("ts:2025-10-01T00:00:00.123Z", topics=TOPICS).timestamp_ms == T0 + 123


def test_time_without_timezone_asks_for_one() -> None:
    error = config_error(parse_start, "ts:2025-10-01T00:00:00", topics=TOPICS)
    assert error.field == "start"
    assert "no timezone" in str(error) and "add Z" in str(error) and "+02:00" in str(error)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("ts:yesterday", "cannot read ts:yesterday as a time"),
        ("ts:", "cannot read ts: as a time"),
        ("ts:2025-10-01T00:00:00.0005Z", "at most 3 decimals"),
        ("ts:1969-12-31T23:59:59Z", "before 1970"),
        ("ts:253402300800000", "past the year 9999"),
    ],
)
def test_bad_times_say_what_is_wrong(text: str, says: str) -> None:
    error = config_error(parse_end, text, topics=TOPICS, field="job.end")
    assert error.field == "job.end"
    assert says in str(error)


def test_small_epoch_values_warn_about_seconds(caplog: pytest.LogCaptureFixture) -> None:
    assert parse_start("ts:1759276800", topics=TOPICS).timestamp_ms == 1_759_276_800
    assert "for seconds add three zeros" in caplog.text


def test_offsets_full_and_short_forms() -> None:
    full = parse_start("offsets:orders/0=100, orders/2=7,users/0=0", topics=TOPICS)
    assert full.offsets == {("orders", 0): 100, ("orders", 2): 7, ("users", 0): 0}
    short = parse_end("offsets:0=100,1=250", topics=["orders"])
    assert short == Position("offsets", offsets={("orders", 0): 100, ("orders", 1): 250})
    assert str(short) == "offsets:orders/0=100,orders/1=250"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("offsets:0=100", "'0=100' in offsets:0=100 does not name its topic"),
        ("offsets:", "has an empty entry"),
        ("offsets:orders/0=1,,users/0=2", "has an empty entry"),
        ("offsets:orders/0", "cannot read 'orders/0'"),
        ("offsets:orders/0=-1", "cannot read 'orders/0=-1'"),
        ("offsets:orders/x=1", "cannot read 'orders/x=1'"),
        ("offsets:ord ers/0=1", "cannot read 'ord ers/0=1'"),
        ("offsets:payments/0=1", "names topic payments, which is not an input topic"),
        ("offsets:orders/0=1,orders/0=2", "gives orders/0 twice"),
    ],
)
def test_bad_offsets_name_the_entry(text: str, says: str) -> None:
    error = config_error(parse_start, text, topics=TOPICS)
    assert error.field == "start"
    assert says in str(error)


def test_start_and_end_refuse_what_would_replay_nothing() -> None:
    assert "replay nothing" in str(config_error(parse_start, "latest", topics=TOPICS))
    assert "replay nothing" in str(config_error(parse_end, "earliest", topics=TOPICS))
    error = config_error(parse_end, "group:app", topics=TOPICS)
    assert error.field == "end" and "can only give the start" in str(error)


@pytest.mark.parametrize("text", ["", "begin", "group:", "group:  ", "offset:0=1", "ts"])
def test_unreadable_positions_list_the_syntax(text: str) -> None:
    error = config_error(parse_start, text, topics=TOPICS)
    assert error.field == "start"
    assert "group:" in str(error)


@pytest.mark.parametrize(
    ("kind", "fields", "says"),
    [
        ("offsets", {}, "offsets positions need offsets"),
        ("earliest", {"timestamp_ms": 1}, "earliest positions take no timestamp_ms"),
        ("group", {"group": " padded"}, "empty or padded"),
        ("offsets", {"offsets": {}}, "name at least one partition"),
        ("offsets", {"offsets": {("t", 0): -1}}, "invalid offset t/0=-1"),
        ("offsets", {"offsets": {("a,b", 0): 1}}, "invalid offset a,b/0=1"),
        ("timestamp", {"timestamp_ms": -5}, "out of range"),
        ("sometime", {}, "unknown kind"),
    ],
)
def test_position_rejects_inconsistent_fields(
    kind: PositionKind, fields: dict[str, Any], says: str
) -> None:
    with pytest.raises(ConfigError, match=says) as info:
        Position(kind, **fields)
    assert info.value.field == "position"


def test_canonical_text() -> None:
    assert str(EARLIEST) == "earliest" and str(LATEST) == "latest"
    assert str(Position("timestamp", timestamp_ms=T0)) == "ts:2025-10-01T00:00:00Z"
    assert str(Position("timestamp", timestamp_ms=T0 + 5)) == "ts:2025-10-01T00:00:00.005Z"
    assert str(Position("group", group="fraud-scorer")) == "group:fraud-scorer"
    unordered = Position("offsets", offsets={("b", 1): 5, ("a", 10): 1, ("a", 2): 0})
    assert str(unordered) == "offsets:a/2=0,a/10=1,b/1=5"
    assert hash(unordered) == hash(
        Position("offsets", offsets={("a", 2): 0, ("a", 10): 1, ("b", 1): 5})
    )
    assert format_timestamp(0) == "1970-01-01T00:00:00Z"


topic_names = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=30)
group_names = st.text(min_size=1, max_size=40).filter(lambda s: s == s.strip() and s != "")
timestamps = st.integers(min_value=0, max_value=253_402_300_799_999)
offset_maps = st.dictionaries(
    st.tuples(topic_names, st.integers(0, 10_000)), st.integers(0, 2**62), min_size=1, max_size=8
)
start_positions = st.one_of(
    st.just(EARLIEST),
    st.builds(lambda ts: Position("timestamp", timestamp_ms=ts), timestamps),
    st.builds(lambda g: Position("group", group=g), group_names),
    st.builds(lambda o: Position("offsets", offsets=o), offset_maps),
)
end_positions = st.one_of(
    st.just(LATEST),
    st.builds(lambda ts: Position("timestamp", timestamp_ms=ts), timestamps),
    st.builds(lambda o: Position("offsets", offsets=o), offset_maps),
)


def _topics_of(position: Position) -> list[str]:
    return sorted({t for t, _ in position.offsets or {}}) or ["t"]


@given(start_positions)
def test_start_text_round_trips(position: Position) -> None:
    parsed = parse_start(str(position), topics=_topics_of(position))
    assert parsed == position
    assert hash(parsed) == hash(position)
    assert str(parsed) == str(position)


@given(end_positions)
def test_end_text_round_trips(position: Position) -> None:
    assert parse_end(str(position), topics=_topics_of(position)) == position


@given(
    st.integers(min_value=0, max_value=253_402_300_799_999 - 15 * 3_600_000),
    st.integers(-14 * 60, 14 * 60),
)
def test_iso_times_with_any_utc_offset_parse_to_the_instant(ts: int, minutes: int) -> None:
    zone = timezone(timedelta(minutes=minutes))
    moment = (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ts)).astimezone(
        zone
    )
    assert parse_start(f"ts:{moment.isoformat(timespec='milliseconds')}", topics=["t"]) == Position(
        "timestamp", timestamp_ms=ts
    )


# --- resolving ----------------------------------------------------------------------------


def test_earliest_to_latest_over_several_topics(cluster: FakeOffsets) -> None:
    ranges = resolve(["users", "orders"], EARLIEST, LATEST, cluster)
    assert spans(ranges) == {
        ("orders", 0): (0, 10),
        ("orders", 1): (0, 0),
        ("orders", 2): (100, 105),
        ("users", 0): (0, 4),
    }
    assert [r.tp for r in ranges.ranges] == sorted(spans(ranges))
    assert ranges.records == 19 and not ranges.empty()
    assert ranges.topics == ("orders", "users")
    assert [r.partition for r in ranges.by_topic()["orders"]] == [0, 1, 2]
    assert ranges.ranges[2] == PartitionRange("orders", 2, 100, 105, low=100, high=105)
    assert {name for name, _ in cluster.calls} == {"partitions", "watermarks"}


def test_explicit_offsets(cluster: FakeOffsets) -> None:
    start = parse_start("offsets:orders/0=2,orders/1=0,orders/2=100,users/0=4", topics=TOPICS)
    end = parse_end("offsets:orders/0=10,orders/1=0,orders/2=103,users/0=4", topics=TOPICS)
    ranges = resolve(TOPICS, start, end, cluster)
    assert spans(ranges) == {
        ("orders", 0): (2, 10),
        ("orders", 1): (0, 0),
        ("orders", 2): (100, 103),
        ("users", 0): (4, 4),
    }
    assert ranges.start_position() == start and ranges.end_position() == end


def test_offsets_must_name_every_partition(cluster: FakeOffsets) -> None:
    start = parse_start("offsets:orders/0=2", topics=TOPICS)
    error = config_error(resolve, TOPICS, start, LATEST, cluster)
    assert error.field == "start"
    message = str(error)
    assert "missing orders/1 (retained 0..0: no records" in message
    assert "orders/2 (retained 100..105: records 100 to 104)" in message
    assert "users/0" in message and "orders/0 " not in message


def test_unknown_partition_names_topic_partition_and_offset(cluster: FakeOffsets) -> None:
    end = parse_end("offsets:orders/0=1,orders/7=40,users/0=1", topics=TOPICS)
    error = config_error(resolve, TOPICS, EARLIEST, end, cluster)
    assert error.field == "end"
    assert "unknown partition orders/7=40 (orders has partitions 0 to 2)" in str(error)
    assert ("watermarks", (("orders", 0),)) not in cluster.calls  # refused before asking


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("offsets:orders/0=11,orders/1=0,orders/2=100,users/0=0", "orders/0 offset 11"),
        ("offsets:orders/0=0,orders/1=1,orders/2=100,users/0=0", "orders/1 offset 1"),
        ("offsets:orders/0=0,orders/1=0,orders/2=99,users/0=0", "orders/2 offset 99"),
    ],
)
def test_offsets_outside_the_retained_range(cluster: FakeOffsets, text: str, says: str) -> None:
    error = config_error(resolve, TOPICS, parse_start(text, topics=TOPICS), LATEST, cluster)
    assert error.field == "start"
    message = str(error)
    assert says in message and "outside the retained range" in message
    retained = {"orders/0": "0..10", "orders/1": "0..0", "orders/2": "100..105"}
    assert retained[says.split(maxsplit=1)[0]] in message
    assert "use earliest" in message


def test_the_high_watermark_is_a_valid_empty_start(cluster: FakeOffsets) -> None:
    start = parse_start("offsets:orders/0=10,orders/1=0,orders/2=105,users/0=4", topics=TOPICS)
    assert resolve(TOPICS, start, LATEST, cluster).empty()


def test_timestamps_give_the_first_offset_at_or_after_them() -> None:
    # Timestamps go backwards inside the partition: the first offset with ts >= T counts.
    cluster = FakeOffsets({"t": [FakePartition([T0, T0 + 5000, T0 + 2000, T0 + 3000, T0 + 9000])]})
    ranges = resolve(["t"], Position("timestamp", timestamp_ms=T0 + 2500), LATEST, cluster)
    assert spans(ranges) == {("t", 0): (1, 5)}
    ranges = resolve(["t"], EARLIEST, Position("timestamp", timestamp_ms=T0 + 3000), cluster)
    assert spans(ranges) == {("t", 0): (0, 1)}  # exclusive: offset 1 (T0+5000) is the first >= T
    start = Position("timestamp", timestamp_ms=T0 + 2000)
    end = Position("timestamp", timestamp_ms=T0 + 9000)
    assert spans(resolve(["t"], start, end, cluster)) == {("t", 0): (1, 4)}
    first = Position("timestamp", timestamp_ms=T0 - 1)
    assert spans(resolve(["t"], first, first, cluster)) == {("t", 0): (0, 0)}


def test_a_time_later_than_every_record_is_the_end(cluster: FakeOffsets) -> None:
    late = Position("timestamp", timestamp_ms=T0 + 3_000)
    ranges = resolve(TOPICS, late, LATEST, cluster)
    assert spans(ranges) == {
        ("orders", 0): (3, 10),
        ("orders", 1): (0, 0),
        ("orders", 2): (102, 105),
        ("users", 0): (4, 4),  # its last record is at T0 + 1750: nothing that late
    }
    assert spans(resolve(TOPICS, EARLIEST, late, cluster))[("users", 0)] == (0, 4)


def test_a_time_answer_past_the_watermark_is_the_watermark() -> None:
    """A record appended between the watermark and the time lookup is not in the range."""

    class Appended(FakeOffsets):
        def watermarks(self, tps: Sequence[PartitionKey]) -> dict[PartitionKey, tuple[int, int]]:
            return {tp: (0, 3) for tp in tps}  # read before offsets 3 and 4 were appended

    cluster = Appended({"t": [FakePartition([T0, T0, T0, T0 + 50, T0 + 60])]})
    ranges = resolve(["t"], Position("timestamp", timestamp_ms=T0 + 10), LATEST, cluster)
    assert spans(ranges) == {("t", 0): (3, 3)}


def test_a_time_answer_below_the_low_watermark_is_a_broker_error() -> None:
    class Broken(FakeOffsets):
        def offsets_for_time(
            self, tps: Sequence[PartitionKey], timestamp_ms: int
        ) -> dict[PartitionKey, int | None]:
            return dict.fromkeys(tps, 1)

    cluster = Broken({"t": [FakePartition([T0, T0], low=5)]})
    with pytest.raises(BrokerError, match=r"offset 1 .* on t/0, below its low watermark 5"):
        resolve(["t"], Position("timestamp", timestamp_ms=T0), LATEST, cluster)


def test_an_end_time_before_the_start_time(cluster: FakeOffsets) -> None:
    start = Position("timestamp", timestamp_ms=T0 + 10)
    end = Position("timestamp", timestamp_ms=T0)
    error = config_error(resolve, TOPICS, start, end, cluster)
    assert error.field == "end"
    assert "ts:2025-10-01T00:00:00Z" in str(error) and "ts:2025-10-01T00:00:00.010Z" in str(error)
    assert cluster.calls == []  # refused before asking the cluster


def test_an_end_before_the_start_names_each_partition(cluster: FakeOffsets) -> None:
    start = parse_start("offsets:orders/0=5,orders/1=0,orders/2=104,users/0=2", topics=TOPICS)
    end = parse_end("offsets:orders/0=4,orders/1=0,orders/2=101,users/0=2", topics=TOPICS)
    error = config_error(resolve, TOPICS, start, end, cluster)
    assert error.field == "end"
    message = str(error)
    assert "orders/0 (start 5, end 4)" in message and "orders/2 (start 104, end 101)" in message
    assert "orders/1" not in message and "users/0" not in message
    # A start from a group that is past a time given as the end.
    end_time = Position("timestamp", timestamp_ms=T0 + 1000)
    error = config_error(resolve, TOPICS, Position("group", group="app"), end_time, cluster)
    assert "orders/0 (start 3, end 1)" in str(error) and "group:app" in str(error)


def test_group_start_uses_its_committed_offsets(cluster: FakeOffsets) -> None:
    ranges = resolve(TOPICS, parse_start("group:app", topics=TOPICS), LATEST, cluster)
    assert spans(ranges) == {
        ("orders", 0): (3, 10),
        ("orders", 1): (0, 0),
        ("orders", 2): (102, 105),
        ("users", 0): (4, 4),
    }
    assert ("group_offsets", "app") in cluster.calls


def test_group_without_committed_offsets_names_the_partitions(cluster: FakeOffsets) -> None:
    error = config_error(resolve, TOPICS, Position("group", group="partial"), LATEST, cluster)
    assert error.field == "start"
    message = str(error)
    assert "consumer group partial has no committed offset for orders/1; orders/2" in message
    assert "users/0" not in message and "earliest" in message
    error = config_error(resolve, TOPICS, Position("group", group="nobody"), LATEST, cluster)
    assert "group nobody" in str(error) and "check the group name" in str(error)


def test_group_offsets_outside_the_retained_range(cluster: FakeOffsets) -> None:
    error = config_error(resolve, TOPICS, Position("group", group="stale"), LATEST, cluster)
    assert error.field == "start"
    message = str(error)
    assert "group stale" in message
    assert "orders/2 offset 50 (retained 100..105: records 100 to 104)" in message


def test_input_errors(cluster: FakeOffsets) -> None:
    error = config_error(resolve, ["orders", "payments"], EARLIEST, LATEST, cluster)
    assert error.field == "input" and "payments" in str(error)
    error = config_error(resolve, ["orders", "orders"], EARLIEST, LATEST, cluster)
    assert error.field == "input"
    assert config_error(resolve, [], EARLIEST, LATEST, cluster).field == "input"

    class Forgetful(FakeOffsets):
        def partitions(self, topics: Sequence[str]) -> dict[str, list[int]]:
            return {}

    forgetful = Forgetful(cluster.topics)
    error = config_error(resolve, ["orders"], EARLIEST, LATEST, forgetful)
    assert error.field == "input" and "unknown topic orders" in str(error)


def test_kinds_in_the_wrong_place_are_refused(cluster: FakeOffsets) -> None:
    assert config_error(resolve, TOPICS, LATEST, LATEST, cluster).field == "start"
    assert config_error(resolve, TOPICS, EARLIEST, EARLIEST, cluster).field == "end"
    group = Position("group", group="app")
    assert config_error(resolve, TOPICS, EARLIEST, group, cluster).field == "end"
    foreign = Position("offsets", offsets={("payments", 0): 1})
    error = config_error(resolve, TOPICS, foreign, LATEST, cluster)
    assert "payments/0=1, but payments is not an input" in str(error)


def test_values_check_their_invariants() -> None:
    with pytest.raises(ConfigError, match="t/0: need low <= start <= end <= high"):
        PartitionRange("t", 0, start=5, end=4, low=0, high=10)
    with pytest.raises(ConfigError, match="twice"):
        ResolvedRanges((PartitionRange("t", 0, 0, 0, 0, 0), PartitionRange("t", 0, 0, 0, 0, 0)))
    ranges = ResolvedRanges(
        (PartitionRange("b", 0, 0, 0, 0, 0), PartitionRange("a", 1, 1, 3, 0, 9))
    )
    assert [r.topic for r in ranges.ranges] == ["a", "b"]
    assert ranges.records == 2 and ranges.start_offsets() == {("a", 1): 1, ("b", 0): 0}
    assert ranges.end_offsets() == {("a", 1): 3, ("b", 0): 0}


# --- the table ----------------------------------------------------------------------------


def test_table_without_record_times(cluster: FakeOffsets) -> None:
    ranges = resolve(TOPICS, EARLIEST, LATEST, cluster)
    assert describe_ranges(ranges, None) == (
        "topic       partition  start  end  records  retained\n"
        "orders              0      0   10       10  0..10\n"
        "orders              1      0    0        0  0..0\n"
        "orders              2    100  105        5  100..105\n"
        "orders          total                   15\n"
        "users               0      0    4        4  0..4\n"
        "users           total                    4\n"
        "all topics      total                   19\n"
        "\n"
        "records: offsets in [start, end); compaction and transaction markers leave fewer "
        "records.\n"
        "retained: the partition's low..high watermarks when resolved.\n"
    )


def test_table_with_record_times(cluster: FakeOffsets) -> None:
    ranges = resolve(TOPICS, EARLIEST, LATEST, cluster)
    lines = describe_ranges(ranges, cluster).splitlines()
    assert lines[0].split() == [
        "topic", "partition", "start", "end", "records", "retained", "first", "record", "last",
        "record", "span",
    ]  # fmt: skip
    cells = {(row.split()[0], row.split()[1]): row.split()[5:] for row in lines[1:8]}
    assert cells[("orders", "0")] == [
        "0..10",
        "2025-10-01T00:00:00.000Z",
        "2025-10-01T00:00:09.000Z",
    ]
    assert cells[("orders", "1")] == ["0..0", "-", "-"]
    assert cells[("orders", "2")] == [
        "100..105",
        "2025-10-01T00:00:00.000Z",
        "2025-10-01T00:00:08.000Z",
    ]
    assert cells[("users", "0")] == ["0..4", "2025-10-01T00:00:00.250Z", "2025-10-01T00:00:01.750Z"]
    total = lines[4].split()
    assert total == [
        "orders",
        "total",
        "15",
        "2025-10-01T00:00:00.000Z",
        "2025-10-01T00:00:09.000Z",
        "00:00:09.000",
    ]
    assert lines[7].split()[3:] == [
        "19",
        "2025-10-01T00:00:00.000Z",
        "2025-10-01T00:00:09.000Z",
        "00:00:09.000",
    ]
    assert not any(line.startswith("?") for line in lines)


def test_table_finds_edge_records_past_gaps_and_only_reads_the_edges() -> None:
    day = 86_400_000
    stamps: list[int | None] = [T0 + i * 1000 for i in range(1000)]
    stamps[:3] = [None, None, None]  # compacted away
    stamps[-2:] = [None, None]  # e.g. transaction markers
    ranges = resolve(["t"], EARLIEST, LATEST, FakeOffsets({"t": [FakePartition(stamps)]}))
    cluster = FakeOffsets({"t": [FakePartition(stamps)], "u": [FakePartition([None] * 200)]})
    lines = describe_ranges(ranges, cluster).splitlines()
    assert lines[1].split()[6:] == ["2025-10-01T00:00:03.000Z", "2025-10-01T00:16:37.000Z"]
    (asked,) = [args for name, args in cluster.calls if name == "timestamps"]
    assert isinstance(asked, tuple)
    assert len(asked[1]) == 128  # 64 offsets at each end, not the whole range

    long_ranges = ResolvedRanges((PartitionRange("t", 0, 0, 2, 0, 2),))
    far = FakeOffsets({"t": [FakePartition([T0, T0 + 3 * day + 3_723_004])]})
    assert describe_ranges(long_ranges, far).splitlines()[2].split()[-2:] == ["3d", "01:02:03.004"]

    gone = ResolvedRanges((PartitionRange("u", 0, 0, 200, 0, 200),))
    text = describe_ranges(gone, cluster)
    assert text.splitlines()[1].split()[6:] == ["?", "?"]
    assert "?: no record within 64 offsets" in text


def test_kafka_offsets_checks_its_settings_before_connecting() -> None:
    with pytest.raises(ConfigError) as info:
        KafkaOffsets({"bootstrap.servers": "localhost:9", "isolation.level": "dirty"})
    assert info.value.field == "isolation.level"
    with pytest.raises(ConfigError) as info:
        KafkaOffsets({"bootstrap.servers": "localhost:9"}, timeout_s=0)
    assert info.value.field == "timeout"
