"""BulkProducer's lease gate: asked before every GATE_EVERY records; when it raises, nothing
more is queued (no broker: records only queue in the client, then are purged). And a full
client queue: every record is still queued once, in order."""

from __future__ import annotations

import pytest

from connector.errors import RefusedError
from connector.kafka.producer import GATE_EVERY, BulkProducer

# Nothing listens there: records stay queued in the client, and are purged at the end.
_NOWHERE = "127.0.0.1:9"


class Gate:
    def __init__(self, refuse_after: int | None = None) -> None:
        self.calls = 0
        self.refuse_after = refuse_after

    def __call__(self) -> None:
        if self.refuse_after is not None and self.calls >= self.refuse_after:
            raise RefusedError("another run of job j took over its lease")
        self.calls += 1


def _rows(n: int) -> tuple[list[bytes], list[bytes | None], list[int], list[int]]:
    return [b"v%d" % i for i in range(n)], [b"k"] * n, [0] * n, [1_000 + i for i in range(n)]


def _producer(gate: Gate) -> BulkProducer:
    return BulkProducer(_NOWHERE, {"message.timeout.ms": 60_000}, gate=gate)


def test_the_gate_is_asked_before_every_slice_of_records() -> None:
    gate = Gate()
    producer = _producer(gate)
    try:
        n = 2 * GATE_EVERY + 5
        producer.produce("t", *_rows(n), headers=[[("h", b"x")]] * n)
        assert gate.calls == 3 and producer.produced == n
        producer.produce("t", *_rows(10))
        producer.produce_record("t", b"v", b"k")
        assert gate.calls == 5
    finally:
        producer.purge()


def test_a_refusing_gate_stops_the_write_before_the_next_slice() -> None:
    gate = Gate(refuse_after=1)
    producer = _producer(gate)
    try:
        with pytest.raises(RefusedError, match="took over its lease"):
            producer.produce("t", *_rows(3 * GATE_EVERY))
        with pytest.raises(RefusedError):
            producer.produce_record("t", b"v", b"k")
        # What was queued comes back as purged: only the slice the gate let through.
        producer.purge()
        assert producer._failures.count == GATE_EVERY
        assert "Purged in queue" in producer._failures.examples[0]
    finally:
        producer.purge()


class _FullNow:
    """A client whose queue is full at given calls (BufferError), then has room after a poll."""

    def __init__(self, full_at: set[int]) -> None:
        self.calls = 0
        self.full_at = full_at
        self.queued: list[tuple[object, ...]] = []
        self.polls = 0

    def produce(self, *args: object) -> None:
        self.calls += 1
        if self.calls in self.full_at:
            raise BufferError("Local: Queue full")
        self.queued.append(args)

    def poll(self, timeout: float) -> int:
        self.polls += 1
        return 0


@pytest.mark.parametrize("with_headers", [True, False])
def test_a_full_queue_delays_a_record_but_never_drops_reorders_or_repeats_one(
    with_headers: bool,
) -> None:
    producer = BulkProducer(_NOWHERE)
    client = _FullNow({1, 2, 5, 6, 7, 40})
    producer._producer = client  # type: ignore[assignment]
    n = 50
    values, keys, partitions, timestamps = _rows(n)
    headers = [(("h", b"%d" % i),) for i in range(n)] if with_headers else None
    producer.produce("t", values, keys, partitions, timestamps, headers)
    assert [q[1] for q in client.queued] == values
    assert [q[6] for q in client.queued] == timestamps
    assert client.polls >= 4
    if with_headers:
        # Tuples are handed to the client as lists (what it takes).
        assert [q[7] for q in client.queued] == [[("h", b"%d" % i)] for i in range(n)]
    else:
        assert all(q[7:] in ((), (None,)) for q in client.queued)
    assert producer.produced == n
