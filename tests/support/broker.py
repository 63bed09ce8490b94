"""Fixtures for tests against a real broker (resolved as DESIGN.md section 6 says).

Registered for the whole suite by ``pytest_plugins`` in ``tests/conftest.py``; a test that
never asks for them starts no broker.

- ``broker``: the session's :class:`LocalBroker`, started on first use, stopped at the end
  (also when tests fail or the run is interrupted).
- ``new_topic(partitions=N, config=...)``: creates a uuid-named topic and returns its name.
- ``producer``: a tuned ``confluent_kafka.Producer`` (batching, idempotent); flushed after.
- ``read_range(topic, {partition: (start, end)})``: reads exactly those offsets, assigning
  partitions directly (no consumer group), and returns :class:`ReadRecord` rows in
  (partition, offset) order.

Tests marked ``needs_apache_kafka`` are skipped on Tansu with the reason below.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from connector.kafka.producer import TopicSpec, bulk_producer_config, create_topics
from tooling.broker import LocalBroker

# Set by the session broker fixture; read by the terminal summary in tests/conftest.py.
SESSION_BROKER = pytest.StashKey[LocalBroker]()

TANSU_SKIP_REASON = (
    "needs Apache Kafka behaviour that Tansu 0.6.0 lacks (DESIGN.md section 6: watermarks and "
    "offsets_for_times are wrong inside multi-record batches, read_committed sees aborted "
    "records); runs on testcontainers or an external cluster"
)
_READ_TIMEOUT_S = 60.0


class ReadRecord(NamedTuple):
    """One record as the broker returned it (a tuple: cheap for 100k-record reads)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: tuple[tuple[str, str | bytes | None], ...]


def _header_tuple(
    headers: list[tuple[str, str | bytes | None]] | dict[str, str | bytes | None] | None,
) -> tuple[tuple[str, str | bytes | None], ...]:
    if isinstance(headers, dict):
        return tuple(headers.items())
    return tuple(headers or ())


NewTopic = Callable[..., str]
ReadRange = Callable[[str, Mapping[int, tuple[int, int]]], list[ReadRecord]]


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest) -> Iterator[LocalBroker]:
    """The session's broker, started the first time a test needs it."""
    with LocalBroker() as running:
        request.config.stash[SESSION_BROKER] = running
        yield running


@pytest.fixture(autouse=True)
def _skip_without_apache_kafka(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("needs_apache_kafka") is None:
        return
    running: LocalBroker = request.getfixturevalue("broker")
    if not running.supports_apache_kafka_semantics:
        pytest.skip(TANSU_SKIP_REASON)


@pytest.fixture
def new_topic(broker: LocalBroker) -> NewTopic:
    """Factory: ``new_topic(partitions=4, config={"retention.ms": "-1"})`` -> topic name."""

    def make(partitions: int = 1, config: Mapping[str, str] | None = None) -> str:
        name = f"restream-test-{uuid.uuid4().hex[:12]}"
        create_topics(broker.bootstrap, [TopicSpec(name, partitions, dict(config or {}))])
        return name

    return make


@pytest.fixture
def producer(broker: LocalBroker) -> Iterator[Producer]:
    """A tuned producer; what a test left queued is flushed (and must deliver) at teardown."""
    made = Producer(bulk_producer_config(broker.bootstrap, {"delivery.report.only.error": False}))
    yield made
    assert made.flush(30) == 0, "records still queued 30 s after the test"


@pytest.fixture
def read_range(broker: LocalBroker) -> ReadRange:
    """Factory: read ``[start, end)`` of each given partition; fails if any offset is missing."""

    def read(topic: str, ranges: Mapping[int, tuple[int, int]]) -> list[ReadRecord]:
        pending = {p: end for p, (start, end) in ranges.items() if end > start}
        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap,
                "group.id": f"restream-test-{uuid.uuid4().hex}",  # never joined: assign only
                "enable.auto.commit": False,
                "fetch.queue.backoff.ms": 1,
            }
        )
        records: list[ReadRecord] = []
        deadline = time.monotonic() + _READ_TIMEOUT_S
        try:
            consumer.assign([TopicPartition(topic, p, ranges[p][0]) for p in sorted(pending)])
            while pending:
                if time.monotonic() > deadline:
                    pytest.fail(f"{topic}: partitions {sorted(pending)} short of their end offsets")
                for message in consumer.consume(10_000, timeout=0.5):
                    error = message.error()
                    if error is not None:
                        assert error.code() == KafkaError._PARTITION_EOF, error.str()
                        continue
                    partition, offset = message.partition(), message.offset()
                    assert partition is not None and offset is not None
                    end = pending.get(partition)
                    if end is None or offset >= end:
                        continue
                    records.append(
                        ReadRecord(
                            partition=partition,
                            offset=offset,
                            key=message.key(),
                            value=message.value(),
                            timestamp=message.timestamp()[1],
                            headers=_header_tuple(message.headers()),
                        )
                    )
                    if offset == end - 1:
                        del pending[partition]
        finally:
            consumer.close()
        return sorted(records, key=lambda r: (r.partition, r.offset))

    return read
