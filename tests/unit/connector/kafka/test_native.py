"""The native producer against a fake broker in a thread: what it sends, in which order,
and what it does with refusals, hang-ups, old brokers and a closed lease gate."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from connector.errors import BrokerError, ConfigError, RefusedError
from connector.job.run import output_writer
from connector.kafka.batches import ByteRows, decimal_rows
from connector.kafka.native import NativeProducer, native_unsupported
from tests.support.fake_broker import PRODUCER, FakeBroker
from tests.support.record_batches import read_batches


@pytest.fixture
def broker() -> Iterator[FakeBroker]:
    fake = FakeBroker()
    yield fake
    fake.close()


def _columns(
    n: int, partitions: int, start: int = 0
) -> tuple[np.ndarray, np.ndarray, ByteRows, ByteRows]:
    rows = np.arange(start, start + n)
    return (
        (rows * 7 % partitions).astype(np.int32),
        1_700_000_000_000 + (rows * 13 % 101).astype(np.int64),  # now and then backwards
        decimal_rows(rows),
        ByteRows.of([b"value-%d" % i * (i % 5 + 1) for i in rows.tolist()]),
    )


def test_each_partition_gets_its_records_in_order_one_batch_per_request(
    broker: FakeBroker,
) -> None:
    producer = NativeProducer(
        broker.leaders(3), max_batch_bytes=300, max_request_bytes=700, timeout_s=10
    )
    for start in (0, 500):
        partitions, timestamps, keys, values = _columns(500, 3, start)
        producer.produce("out", partitions, timestamps, keys, values)
    producer.flush()
    assert producer.produced == 1000
    assert len(broker.calls) > 10  # the limits split it into many requests
    for call in broker.calls:
        assert call.acks == -1 and call.version == 8
    for p in range(3):
        sequences: list[int] = []
        counts = [
            len(b)
            for data in broker.log[("out", p)]
            for b in read_batches(data, PRODUCER, sequences)
        ]
        assert sequences == [sum(counts[:i]) for i in range(len(counts))]
    for call in broker.calls:
        seen = [(t, p) for t, p, _ in call.batches]
        assert len(seen) == len(set(seen)), "two batches of one partition in a request"
        assert sum(len(data) for _, _, data in call.batches) <= 700 or len(call.batches) == 1
    everything = np.arange(1000)
    for p in range(3):
        rows = everything[everything * 7 % 3 == p]
        got = broker.records("out", p)
        assert [r.key for r in got] == [str(i).encode() for i in rows.tolist()]
        assert [r.value for r in got] == [b"value-%d" % i * (i % 5 + 1) for i in rows.tolist()]
        assert [r.timestamp for r in got] == [
            1_700_000_000_000 + i * 13 % 101 for i in rows.tolist()
        ]
        assert all(r.headers == [] for r in got)
    producer.close()


def test_a_refused_partition_fails_the_flush_and_nothing_after_it_is_sent(
    broker: FakeBroker,
) -> None:
    broker.answer = lambda call, _topic, partition: 87 if (call, partition) == (2, 1) else 0
    producer = NativeProducer(broker.leaders(2), max_batch_bytes=200, timeout_s=10)
    partitions, timestamps, keys, values = _columns(300, 2)
    with pytest.raises(BrokerError, match=r"out\[1\]: INVALID_RECORD \(87\)") as failed:
        producer.produce("out", partitions, timestamps, keys, values)
        producer.flush()
    assert "prefix" in str(failed.value)
    # The failed request was the last one sent: every partition holds a prefix of its rows.
    assert len(broker.calls) == 3
    for p in range(2):
        got = [int(r.key or b"") for r in broker.records("out", p)]
        wanted = [i for i in range(300) if i * 7 % 2 == p]
        assert got == wanted[: len(got)]
    with pytest.raises(BrokerError, match=r"not written"):
        producer.produce("out", partitions, timestamps, keys, values)


def _write_40_exactly_once(broker: FakeBroker) -> list[str]:
    """Write 40 rows over 2 partitions in small batches; check each landed once, in order;
    return why the producer sent something again."""
    retries: list[str] = []
    producer = NativeProducer(
        broker.leaders(2), max_batch_bytes=150, timeout_s=10, on_retry=retries.append
    )
    partitions, timestamps, keys, values = _columns(40, 2)
    producer.produce("out", partitions, timestamps, keys, values)
    producer.flush()
    for p in range(2):
        got = [int(r.key or b"") for r in broker.records("out", p)]
        assert got == [i for i in range(40) if i * 7 % 2 == p]
    return retries


def test_a_lost_answer_is_sent_again_and_the_broker_drops_the_copy(broker: FakeBroker) -> None:
    broker.hang_up_at = frozenset({0, 2})  # appended, then the connection goes
    retries = _write_40_exactly_once(broker)
    assert len(retries) == 2 and "no response from the broker" in retries[0]


def test_a_retriable_refusal_is_sent_again(broker: FakeBroker) -> None:
    broker.answer = lambda call, _t, partition: 6 if (call, partition) in {(1, 0), (2, 0)} else 0
    retries = _write_40_exactly_once(broker)
    assert [r.split(";")[0] for r in retries] == ["out[0]: NOT_LEADER_OR_FOLLOWER (6)"] * 2
    # Only the refused partition's batch went again.
    assert [{p for _, p, _ in c.batches} for c in broker.calls[1:4]] == [{0, 1}, {0}, {0}]


def test_a_broker_that_stays_away_fails_the_flush_after_the_timeout(broker: FakeBroker) -> None:
    broker.hang_up_at = frozenset({1})
    producer = NativeProducer(broker.leaders(1), timeout_s=1.5, on_retry=lambda _: None)
    partitions, timestamps, keys, values = _columns(10, 1)
    producer.produce("out", partitions, timestamps, keys, values)
    producer.flush()
    broker.close()  # no new connections
    producer.produce("out", partitions, timestamps, keys, values)
    with pytest.raises(BrokerError, match=r"gave up after 2 s: .*cannot connect"):
        producer.flush(timeout_s=10)


@pytest.mark.parametrize("init_versions", [(0, 1), (0, 2), (0, 3), (0, 5)])
def test_each_init_producer_id_version_gets_the_producer_id(
    init_versions: tuple[int, int],
) -> None:
    fake = FakeBroker(init_versions=init_versions)
    producer = NativeProducer(fake.leaders(1), timeout_s=10)
    partitions, timestamps, keys, values = _columns(5, 1)
    producer.produce("out", partitions, timestamps, keys, values)
    producer.flush()
    assert len(fake.records("out", 0)) == 5  # read back as batches of producer PRODUCER
    fake.close()


@pytest.mark.parametrize(
    ("versions", "init", "says"),
    [
        ((0, 2), (0, 4), "takes Produce versions 0-2, and"),
        ((0, 9), None, "takes Produce versions 0-9 and no InitProducerId"),
    ],
)
def test_a_broker_without_what_the_producer_needs_is_refused_with_what_to_do(
    versions: tuple[int, int], init: tuple[int, int] | None, says: str
) -> None:
    fake = FakeBroker(produce_versions=versions, init_versions=init)
    producer = NativeProducer(fake.leaders(1), timeout_s=10)
    partitions, timestamps, keys, values = _columns(3, 1)
    with pytest.raises(BrokerError, match=says + ".*set output_writer to librdkafka"):
        producer.produce("out", partitions, timestamps, keys, values)
    fake.close()


def test_a_closed_gate_refuses_before_anything_is_sent(broker: FakeBroker) -> None:
    def gate() -> None:
        raise RefusedError("job j was taken over")

    producer = NativeProducer(broker.leaders(1), gate=gate, timeout_s=10)
    partitions, timestamps, keys, values = _columns(10, 1)
    with pytest.raises(RefusedError, match=r"taken over"):
        producer.produce("out", partitions, timestamps, keys, values)
    producer.flush()
    assert broker.calls == []


def test_a_gate_that_closes_while_requests_wait_stops_the_sender(broker: FakeBroker) -> None:
    calls = []

    def gate() -> None:
        calls.append(1)
        if len(calls) > 3:  # the queueing checks pass; the sender's second check fails
            raise RefusedError("lease lost")

    producer = NativeProducer(broker.leaders(1), gate=gate, max_batch_bytes=100, timeout_s=10)
    partitions, timestamps, keys, values = _columns(30, 1)
    with pytest.raises(RefusedError, match=r"lease lost"):
        producer.produce("out", partitions, timestamps, keys, values)
        producer.flush()
    assert len(broker.calls) < 3


def test_partition_missing_from_the_topic_is_an_error(broker: FakeBroker) -> None:
    producer = NativeProducer(broker.leaders(2), timeout_s=10)
    partitions, timestamps, keys, values = _columns(10, 5)
    with pytest.raises(BrokerError, match=r"out has no partition [234]"):
        producer.produce("out", partitions, timestamps, keys, values)


def test_columns_of_different_lengths_are_refused(broker: FakeBroker) -> None:
    producer = NativeProducer(broker.leaders(1), timeout_s=10)
    partitions, timestamps, keys, values = _columns(10, 1)
    with pytest.raises(ConfigError, match=r"differ in length"):
        producer.produce("out", partitions[:5], timestamps, keys, values)


@pytest.mark.parametrize(
    ("client", "reason"),
    [
        ({}, None),
        ({"security.protocol": "PLAINTEXT"}, None),
        ({"security.protocol": "SASL_SSL"}, "security.protocol=sasl_ssl"),
        ({"compression.type": "zstd"}, "compression.type=zstd"),
        ({"compression.codec": "lz4"}, "compression.type=lz4"),
    ],
)
def test_what_the_native_producer_cannot_do(client: dict[str, str], reason: str | None) -> None:
    found = native_unsupported(client)
    assert found is None if reason is None else found is not None and found.startswith(reason)


def test_output_writer_auto_falls_back_and_native_is_refused_where_it_cannot_write() -> None:
    assert output_writer("auto", {"bootstrap.servers": "b:9092"}) == "native"
    assert output_writer("auto", {"security.protocol": "SSL"}) == "librdkafka"
    assert output_writer("librdkafka", {}) == "librdkafka"
    with pytest.raises(ConfigError, match=r"output_writer.*security.protocol=ssl"):
        output_writer("native", {"security.protocol": "SSL"})
