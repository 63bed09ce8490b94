"""The native reader's Fetch loop (connector.kafka.fetcher) against a fake broker in a thread:
every partition read from its start to its end in offset order; lost connections, moved
leaders and retriable errors recovered from; gone offsets, refusals and old brokers fail
with what to do; batches over the partition limit fetched with more room."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

import pytest

from connector.errors import BrokerError, ConfigError
from connector.job.run import input_reader
from connector.kafka.fetcher import NativeFetcher
from tests.support.fake_broker import FakeBroker
from tests.support.record_batches import SentRecord, build_batch, control_record

Key = tuple[str, int]


@pytest.fixture
def broker() -> Iterator[FakeBroker]:
    fake = FakeBroker()
    yield fake
    fake.close()


def _store(broker: FakeBroker, key: Key, counts: list[int], start: int = 0) -> list[bytes]:
    """Batches of ``counts`` records from offset ``start``; the values, in order."""
    offset, values = start, []
    for count in counts:
        records = [
            SentRecord(i, i, b"k", b"%s-%d" % (key[0].encode(), offset + i)) for i in range(count)
        ]
        broker.batches.setdefault(key, []).append(build_batch(offset, records))
        values += [r.value for r in records if r.value is not None]
        offset += count
    return values


def _fetcher(
    broker: FakeBroker,
    ranges: Mapping[Key, tuple[int, int]],
    leaders: Callable[[str], Mapping[int, tuple[str, int]]] | None = None,
    **options: object,
) -> NativeFetcher:
    return NativeFetcher(
        leaders or broker.leaders(4),
        ranges,
        timeout_s=5.0,
        max_wait_ms=10,
        **options,  # type: ignore[arg-type]
    )


def _read_all(
    fetcher: NativeFetcher, ranges: Mapping[Key, tuple[int, int]]
) -> dict[Key, list[bytes | None]]:
    """Poll until every range is read (as the reader does); the values per partition."""
    got: dict[Key, list[bytes | None]] = {k: [] for k in ranges}
    positions = {k: start for k, (start, _end) in ranges.items()}
    finished: set[Key] = set()
    deadline = time.monotonic() + 20
    fetcher.start()
    try:
        while fetcher.live:
            assert time.monotonic() < deadline, f"still reading {fetcher.live}"
            for event in fetcher.poll(0.1):
                key = (event.topic, event.partition)
                records = event.records
                if records is not None:
                    offsets = records.offsets.tolist()
                    assert offsets == sorted(offsets)
                    assert all(positions[key] <= o < ranges[key][1] for o in offsets)
                    got[key] += records.values()
                    positions[key] = records.next_offset
                if event.done:
                    assert key not in fetcher.live and key not in finished
                    finished.add(key)
    finally:
        fetcher.close()
    assert finished == {k for k, (start, end) in ranges.items() if start < end}
    return got


def test_every_partition_is_read_from_its_start_to_its_end(broker: FakeBroker) -> None:
    a = _store(broker, ("a", 0), [3, 5, 1, 4])
    b = _store(broker, ("a", 1), [10])
    c = _store(broker, ("b", 3), [2, 2], start=40)
    ranges = {("a", 0): (2, 11), ("a", 1): (0, 10), ("b", 3): (41, 44), ("a", 2): (0, 0)}
    got = _read_all(_fetcher(broker, ranges), ranges)
    assert got == {("a", 0): a[2:11], ("a", 1): b, ("b", 3): c[1:], ("a", 2): []}
    call = broker.fetch_calls[0]
    assert call.version == 11 and call.read_committed
    assert sorted((t, p, o) for t, p, o, _ in call.partitions) == [
        ("a", 0, 2),
        ("a", 1, 0),
        ("b", 3, 41),
    ]
    # Nothing is fetched for a partition past its end.
    assert all(o < ranges[(t, p)][1] for c in broker.fetch_calls for t, p, o, _ in c.partitions)


def test_a_range_that_ends_in_markers_ends_at_the_brokers_end(broker: FakeBroker) -> None:
    _store(broker, ("a", 0), [2])
    broker.batches[("a", 0)].append(
        build_batch(2, [control_record(abort=False)], producer_id=1, control=True)
    )
    ranges = {("a", 0): (0, 3)}
    assert _read_all(_fetcher(broker, ranges), ranges) == {("a", 0): [b"a-0", b"a-1"]}


def test_a_lost_connection_is_made_again_and_the_fetch_repeated(broker: FakeBroker) -> None:
    values = _store(broker, ("a", 0), [3, 3, 3])
    broker.fetch_hang_up_at = frozenset({1, 2})
    problems: list[str] = []
    ranges = {("a", 0): (0, 9)}
    fetcher = _fetcher(broker, ranges, on_error=problems.append, partition_max_bytes=1)
    assert _read_all(fetcher, ranges) == {("a", 0): values}
    assert len(problems) == 2 and all("fetching from 127.0.0.1:" in p for p in problems)


def test_a_moved_leader_is_looked_up_again(broker: FakeBroker) -> None:
    values = _store(broker, ("a", 1), [4, 4])
    broker.fetch_answer = lambda i, _t, _p: 6 if i == 0 else 0  # NOT_LEADER_OR_FOLLOWER once
    lookups: list[str] = []

    def leaders(topic: str) -> Mapping[int, tuple[str, int]]:
        lookups.append(topic)
        return broker.leaders(2)(topic)

    ranges = {("a", 1): (0, 8)}
    assert _read_all(_fetcher(broker, ranges, leaders), ranges) == {("a", 1): values}
    assert lookups == ["a", "a"]


def test_a_retriable_error_is_fetched_again(broker: FakeBroker) -> None:
    values = _store(broker, ("a", 0), [2])
    broker.fetch_answer = lambda i, _t, _p: 7 if i < 2 else 0  # REQUEST_TIMED_OUT twice
    problems: list[str] = []
    ranges = {("a", 0): (0, 2)}
    assert _read_all(_fetcher(broker, ranges, on_error=problems.append), ranges) == {
        ("a", 0): values
    }
    assert problems == ["reading a/0: REQUEST_TIMED_OUT (7) (retrying)"] * 2


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (
            1,
            "reading a/0: offset 0 is out of range .OFFSET_OUT_OF_RANGE .1..: its records are gone",
        ),
        (29, "reading a/0: the broker at 127.0.0.1:\\d+ answered TOPIC_AUTHORIZATION_FAILED .29."),
    ],
)
def test_gone_offsets_and_refusals_fail(broker: FakeBroker, error: int, says: str) -> None:
    _store(broker, ("a", 0), [2])
    broker.fetch_answer = lambda _i, _t, _p: error
    ranges = {("a", 0): (0, 2)}
    with pytest.raises(BrokerError, match=says):
        _read_all(_fetcher(broker, ranges), ranges)


def test_a_broker_without_fetch_v4_is_refused_with_what_to_do(broker: FakeBroker) -> None:
    _store(broker, ("a", 0), [2])
    broker.fetch_versions = (0, 3)
    ranges = {("a", 0): (0, 2)}
    with pytest.raises(BrokerError, match=r"Fetch versions 0-3.*set input_reader to librdkafka"):
        _read_all(_fetcher(broker, ranges), ranges)


def test_a_batch_over_the_partition_limit_gets_more_room(broker: FakeBroker) -> None:
    values = _store(broker, ("a", 0), [50])
    size = len(broker.batches[("a", 0)][0])
    broker.cut_at_limit = True  # an old broker: the answer is the limit's bytes of the batch
    ranges = {("a", 0): (0, 50)}
    assert _read_all(_fetcher(broker, ranges, partition_max_bytes=size // 3), ranges) == {
        ("a", 0): values
    }
    limits = [c.partitions[0][3] for c in broker.fetch_calls]
    assert limits == [size // 3, 2 * (size // 3), 4 * (size // 3)]


def test_read_uncommitted_keeps_aborted_records(broker: FakeBroker) -> None:
    broker.batches[("a", 0)] = [
        build_batch(0, [SentRecord(0, 0, b"k", b"aborted")], producer_id=5, transactional=True),
        build_batch(1, [control_record(abort=True)], producer_id=5, control=True),
        build_batch(2, [SentRecord(0, 0, b"k", b"plain")]),
    ]
    broker.aborted[("a", 0)] = [(5, 0)]
    ranges = {("a", 0): (0, 3)}
    assert _read_all(_fetcher(broker, ranges), ranges) == {("a", 0): [b"plain"]}
    uncommitted = _fetcher(broker, ranges, read_committed=False)
    assert _read_all(uncommitted, ranges) == {("a", 0): [b"aborted", b"plain"]}
    assert not broker.fetch_calls[-1].read_committed


def test_input_reader_auto_falls_back_and_native_is_refused_where_it_cannot_read() -> None:
    assert input_reader("auto", {"bootstrap.servers": "b:9092"}) == "native"
    # Compression is the writers' business: the native reader decompresses.
    assert input_reader("auto", {"compression.type": "zstd"}) == "native"
    assert input_reader("auto", {"security.protocol": "SASL_SSL"}) == "librdkafka"
    assert input_reader("librdkafka", {}) == "librdkafka"
    with pytest.raises(ConfigError, match=r"input_reader.*security.protocol=ssl"):
        input_reader("native", {"security.protocol": "SSL"})


def test_a_poll_takes_a_bounded_amount_while_the_threads_refill(broker: FakeBroker) -> None:
    # The threads fetch as fast as the queue drains: a poll that drained until empty could
    # collect the whole log in memory before the caller decoded any of it.
    for p in range(4):
        _store(broker, ("a", p), [5] * 200)
    ranges = {("a", p): (0, 1000) for p in range(4)}
    fetcher = _fetcher(broker, ranges, partition_max_bytes=200, queued=2)
    fetcher.start()
    try:
        for _ in range(20):
            assert len(fetcher.poll(1.0)) <= 3
    finally:
        fetcher.close()


def test_a_leader_missing_at_the_start_is_looked_up_again(broker: FakeBroker) -> None:
    values = _store(broker, ("a", 0), [3])
    lookups: list[str] = []
    problems: list[str] = []

    def leaders(topic: str) -> Mapping[int, tuple[str, int]]:
        lookups.append(topic)
        if len(lookups) == 1:
            raise BrokerError("a[0] has no leader now (-1); run again later")
        return broker.leaders(1)(topic)

    ranges = {("a", 0): (0, 3)}
    fetcher = _fetcher(broker, ranges, leaders, on_error=problems.append)
    assert _read_all(fetcher, ranges) == {("a", 0): values}
    assert lookups == ["a", "a"]
    assert problems == [
        "looking up the leaders of a failed: a[0] has no leader now (-1); run again later"
    ]


def test_a_malformed_response_is_a_broker_error() -> None:
    from connector.kafka.wire import read_fetch_response, read_produce_response

    with pytest.raises(BrokerError, match="a malformed Fetch response from the broker"):
        read_fetch_response(11, b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01")
    with pytest.raises(BrokerError, match="a malformed Produce response from the broker"):
        read_produce_response(8, b"\x00\x00\x00\x05")
