"""A producer that writes columns as record batches over Kafka's protocol, no client library.

librdkafka takes records one call at a time, and a Python program pays for each: the
arguments, the key, value and header objects, the delivery report. For a replay that writes
millions of records that was most of the sink's time (``connector/output/sink.py`` measured
~2.6 µs a record in the produce calls alone). :class:`NativeProducer` instead takes a whole
chunk as columns (:class:`~connector.kafka.batches.ByteRows` of keys, values and header
sections, arrays of partitions and timestamps), builds each partition's record batches in
one compiled pass (:mod:`connector.kafka.batches`) and sends them in Produce requests
(:mod:`connector.kafka.wire`) from one thread per leader broker.

Semantics, those of librdkafka's idempotent producer with one request in flight: the
producer asks the broker for a producer id (InitProducerId), every batch carries it and the
sequence number of its first record in its partition, and records of a partition are
appended in the order given. A lost connection or a retriable error (Kafka's own list:
``NOT_LEADER_OR_FOLLOWER``, ``REQUEST_TIMED_OUT``, ...) sends the same batches again until
``timeout_s`` after the first attempt; a batch the broker already appended is recognised by
its sequence numbers and not appended twice. Any other error, or the timeout, fails the
write: :meth:`NativeProducer.produce` raises when the failure is already known and
:meth:`NativeProducer.flush` at the latest, and nothing more is sent to that broker, so a
partition always holds a prefix of what was produced to it. A run that fails this way
resumes from its checkpoint (:mod:`connector.output.topics` finds where each partition
stands).

Limits: plaintext connections only, no compression (``output_writer`` ``auto`` picks
librdkafka when the job's Kafka settings ask for TLS, SASL or compression), and the
partition leaders are looked up once per topic: a leader that moves to another broker
fails the run when the old one keeps refusing past the timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from connector.errors import BrokerError, ConfigError, ConnectorError
from connector.kafka.batches import ByteRows, encode_batches
from connector.kafka.wire import (
    INIT_PRODUCER_ID,
    PRODUCE,
    RETRIABLE,
    Connection,
    PartitionResult,
    encode_init_producer_id,
    encode_produce,
    read_init_producer_id,
    read_produce_response,
)

__all__ = ["Leaders", "NativeProducer", "native_unsupported", "topic_leaders"]

logger = logging.getLogger(__name__)

#: ``topic -> {partition: (host, port)}`` of each partition's leader.
Leaders = Callable[[str], Mapping[int, tuple[str, int]]]

_MAX_EXAMPLES = 5
_PRODUCE_VERSIONS = (3, 8)  # one request layout; the responses differ (wire.py)
_FIRST_PAUSE_S = 0.1
_LAST_PAUSE_S = 2.0
#: Answers that mean the batch is in the log: written now, or a copy of one written before.
_WRITTEN = frozenset({0, 46})


def _log_retry(problem: str) -> None:
    logger.warning("producer: %s", problem)


def native_unsupported(client: Mapping[str, Any]) -> str | None:
    """Why the native producer cannot write with these librdkafka settings (None: it can)."""
    protocol = str(client.get("security.protocol", "plaintext")).lower()
    if protocol != "plaintext":
        return f"security.protocol={protocol} (the native producer speaks plaintext only)"
    compression = str(client.get("compression.type", client.get("compression.codec", "none")))
    if compression.lower() != "none":
        return f"compression.type={compression} (the native producer does not compress)"
    return None


def topic_leaders(client: Mapping[str, Any], timeout_s: float, role: str = "output") -> Leaders:
    """A :data:`Leaders` lookup through librdkafka's metadata request (``role``: which
    topics it looks up, for its errors)."""

    def lookup(topic: str) -> Mapping[int, tuple[str, int]]:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(dict(client))
        metadata = admin.list_topics(topic, timeout=timeout_s)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None:
            reason = "not found" if info is None else str(info.error)
            raise BrokerError(f"no metadata for {role} topic {topic}: {reason}")
        leaders: dict[int, tuple[str, int]] = {}
        for partition, meta in info.partitions.items():
            broker = metadata.brokers.get(meta.leader)
            if broker is None:
                raise BrokerError(
                    f"{topic}[{partition}] has no leader now ({meta.leader}); run again later"
                )
            leaders[int(partition)] = (str(broker.host), int(broker.port))
        return leaders

    return lookup


@dataclass(frozen=True, slots=True, eq=False)
class _Request:
    """One Produce request's batches and what it holds, per (topic, partition) a count."""

    batches: dict[str, list[tuple[int, memoryview]]]
    records: dict[tuple[str, int], int]

    def only(self, keys: set[tuple[str, int]]) -> _Request:
        """The same request for some of its partitions (those to send again)."""
        batches = {
            t: [(p, data) for p, data in parts if (t, p) in keys]
            for t, parts in self.batches.items()
        }
        return _Request(
            {t: parts for t, parts in batches.items() if parts},
            {k: n for k, n in self.records.items() if k in keys},
        )


class _Sender:
    """One leader broker: a connection and a thread that sends the requests queued for it,
    one at a time, waiting for each response. A lost connection or a retriable error sends
    the same batches again (their sequence numbers make the broker drop a copy it already
    has) until ``timeout_s`` after the first attempt."""

    def __init__(
        self,
        address: tuple[str, int],
        timeout_s: float,
        depth: int,
        gate: Callable[[], None] | None,
        on_retry: Callable[[str], None],
    ):
        self._host_port = address
        self.address = f"{address[0]}:{address[1]}"
        self._gate = gate
        self._on_retry = on_retry
        self._timeout_s = timeout_s
        self._depth = depth
        self._connection: Connection | None = None
        self.version = self._connect()
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        #: Set once, by the first failure; then queued requests are dropped, not sent.
        self.error: str | None = None
        #: What the gate raised in this thread, to be raised again in the producer's.
        self.refusal: ConnectorError | None = None
        self.examples: list[str] = []
        self.failed = 0  # records not written because of the failure
        self.delivered = 0
        self._thread = threading.Thread(
            target=self._run, name=f"restream-produce-{self.address}", daemon=True
        )

    def start(self) -> None:
        """Start sending (after :meth:`init_producer_id`, when this is the first broker)."""
        self._thread.start()

    def _connect(self) -> int:
        """Connect and find the Produce version to use."""
        connection = Connection(*self._host_port, self._timeout_s)
        versions = connection.api_versions()
        low, high = versions.get(PRODUCE, (0, -1))
        version = min(high, _PRODUCE_VERSIONS[1])
        # The newest InitProducerId we speak: some brokers (Tansu) answer v0-v2 with an error.
        self._init_version = min(versions.get(INIT_PRODUCER_ID, (0, 0))[1], 4)
        if version < max(low, _PRODUCE_VERSIONS[0]) or INIT_PRODUCER_ID not in versions:
            connection.close()
            raise BrokerError(
                f"the broker at {self.address} takes Produce versions {low}-{high}"
                f"{'' if INIT_PRODUCER_ID in versions else ' and no InitProducerId'}, and the "
                f"native producer needs one of {_PRODUCE_VERSIONS[0]}-{_PRODUCE_VERSIONS[1]} "
                "and an idempotent producer id; set output_writer to librdkafka"
            )
        self._connection = connection
        return version

    def init_producer_id(self) -> tuple[int, int]:
        """Ask this broker for an idempotent producer's ``(id, epoch)``."""
        assert self._connection is not None
        correlation = self._connection.next_correlation()
        timeout_ms = int(self._timeout_s * 1000)
        self._connection.send(encode_init_producer_id(self._init_version, correlation, timeout_ms))
        return read_init_producer_id(self._init_version, self._connection.receive(correlation))

    def put(self, request: _Request) -> None:
        """Queue a request (waits while ``depth`` requests are queued)."""
        with self._cond:
            while len(self._queue) >= self._depth and self.error is None:
                self._cond.wait()
            if self.error is not None:
                self.failed += sum(request.records.values())
                return
            self._queue.append(request)
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                request = self._queue.popleft()
                self._busy = True
                self._cond.notify_all()
            if self.error is None:
                problem = self._deliver(request)
            else:
                problem = None
                self.failed += sum(request.records.values())
            with self._cond:
                self._busy = False
                if problem is not None and self.error is None:
                    self.error = problem
                    while self._queue:
                        self.failed += sum(self._queue.popleft().records.values())
                self._cond.notify_all()

    def _deliver(self, request: _Request) -> str | None:
        """Send ``request`` until every partition is written; why not, if it fails."""
        deadline = time.monotonic() + self._timeout_s
        pause = _FIRST_PAUSE_S
        while True:
            try:
                if self._gate is not None:
                    # Before every attempt: a process paused after queueing the request
                    # (SIGSTOP) may have lost its lease meanwhile.
                    self._gate()
            except ConnectorError as exc:
                self.refusal = exc
                self.failed += sum(request.records.values())
                return str(exc)
            problem: str | None
            try:
                results = self._attempt(request)
            except BrokerError as exc:
                if self._connection is not None:
                    self._connection.close()
                    self._connection = None
                problem = str(exc)
                again = set(request.records)
            else:
                again, problem = self._judge(request, results)
                if problem is not None and not again:
                    return problem
                if not again:
                    return None
            if time.monotonic() + pause > deadline:
                self.failed += sum(request.records[k] for k in again)
                self.examples.append(f"gave up after {self._timeout_s:.0f} s: {problem}")
                return f"the broker at {self.address} did not take the records"
            self._on_retry(f"{problem}; sending again in {pause:.1f} s")
            time.sleep(pause)
            pause = min(pause * 2, _LAST_PAUSE_S)
            request = request.only(again)

    def _attempt(self, request: _Request) -> list[PartitionResult]:
        if self._connection is None:
            self._connect()
        assert self._connection is not None
        correlation = self._connection.next_correlation()
        self._connection.send(
            encode_produce(
                self.version, correlation, -1, int(self._timeout_s * 1000), request.batches
            )
        )
        return read_produce_response(self.version, self._connection.receive(correlation))

    def _judge(
        self, request: _Request, results: list[PartitionResult]
    ) -> tuple[set[tuple[str, int]], str | None]:
        """Count what was written; the partitions to send again and why (the set empty and
        a reason when something failed for good: the rest of the request fails with it)."""
        by_key = {(r.topic, r.partition): r for r in results}
        again: set[tuple[str, int]] = set()
        refused: list[str] = []
        problem = None
        for key, count in request.records.items():
            result = by_key.get(key)
            if result is not None and result.error in _WRITTEN:
                self.delivered += count
            elif result is not None and result.error in RETRIABLE:
                again.add(key)
                problem = problem or result.describe()
            else:
                refused.append(result.describe() if result else f"{key[0]}[{key[1]}]: no answer")
                self.failed += count
        if refused:
            self.failed += sum(request.records[k] for k in again)
            self.examples.extend(refused[: _MAX_EXAMPLES - len(self.examples)])
            return set(), f"the broker at {self.address} refused records"
        return again, problem

    def wait(self, deadline: float) -> bool:
        """Wait until every queued request is answered; False at the deadline."""
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def purge(self) -> int:
        """Drop the requests not yet sent; the records dropped."""
        with self._cond:
            dropped = sum(sum(r.records.values()) for r in self._queue)
            self._queue.clear()
            self._cond.notify_all()
        return dropped

    def close(self) -> None:
        """End the thread once the queue is empty, and close the connection."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        if self._connection is not None:
            self._connection.close()


class NativeProducer:
    """Produces columns of records as record batches; see the module docstring."""

    def __init__(
        self,
        leaders: Leaders,
        *,
        gate: Callable[[], None] | None = None,
        timeout_s: float = 120.0,
        on_retry: Callable[[str], None] | None = None,
        max_batch_bytes: int = 1_000_000,
        max_request_bytes: int = 4_000_000,
        queued_requests: int = 4,
    ):
        """``leaders`` finds each topic's partition leaders (:func:`topic_leaders`);
        ``gate`` is called before every request is queued and before every attempt to send
        it, and raises to refuse it (a run that lost its lease); ``timeout_s`` bounds how
        long a request is tried (and each wait for a response); ``on_retry`` hears why a
        request is sent again (default: a warning in the log)."""
        self._leaders = leaders
        self._gate = gate
        self._timeout_s = timeout_s
        self._on_retry = on_retry or _log_retry
        self._producer: tuple[int, int] | None = None
        self._sequences: dict[tuple[str, int], int] = {}
        self._max_batch = max_batch_bytes
        self._max_request = max_request_bytes
        self._depth = queued_requests
        self._topics: dict[str, Mapping[int, tuple[str, int]]] = {}
        self._senders: dict[tuple[str, int], _Sender] = {}
        self.produced = 0

    def _sender(self, address: tuple[str, int]) -> _Sender:
        sender = self._senders.get(address)
        if sender is None:
            sender = _Sender(address, self._timeout_s, self._depth, self._gate, self._on_retry)
            if self._producer is None:
                self._producer = sender.init_producer_id()
            sender.start()
            logger.info(
                "writing to the broker at %s with Produce v%d as idempotent producer %d",
                sender.address,
                sender.version,
                self._producer[0],
            )
            self._senders[address] = sender
        return sender

    def _raise_if_failed(self) -> None:
        failed = [s for s in self._senders.values() if s.error is not None]
        if not failed:
            return
        refusal = next((s.refusal for s in failed if s.refusal is not None), None)
        if refusal is not None:
            raise refusal
        count = sum(s.failed for s in failed)
        examples = [e for s in failed for e in s.examples] or [s.error or "" for s in failed]
        raise BrokerError(
            f"{count} records were not written: " + "; ".join(examples[:_MAX_EXAMPLES]) + " "
            "(nothing after the failure was sent: each partition holds a prefix of its "
            "records, and a resumed run goes on from there)"
        )

    def produce(
        self,
        topic: str,
        partitions: npt.NDArray[np.int32],
        timestamps: npt.NDArray[np.int64],
        keys: ByteRows,
        values: ByteRows,
        headers: ByteRows | None = None,
    ) -> None:
        """Queue one record per row: its partition, timestamp (ms), key, value and header
        section (:mod:`connector.kafka.batches`); a partition's records in row order."""
        n = len(partitions)
        if not (len(timestamps) == len(keys) == len(values) == n) or (
            headers is not None and len(headers) != n
        ):
            raise ConfigError(
                "columns", f"partitions, timestamps, keys, values differ in length for {topic}"
            )
        self._raise_if_failed()
        if not n:
            return
        leaders = self._topics.get(topic)
        if leaders is None:
            leaders = self._topics[topic] = self._leaders(topic)
        order = np.argsort(partitions, kind="stable")
        found, starts = np.unique(partitions[order], return_index=True)
        bounds = [*starts.tolist(), n]
        per_broker: dict[tuple[str, int], list[tuple[int, Any, int]]] = {}
        senders = {a: self._sender(a) for a in {leaders[p] for p in found.tolist() if p in leaders}}
        assert self._producer is not None or not senders
        for i, p in enumerate(found.tolist()):
            address = leaders.get(p)
            if address is None:
                raise BrokerError(
                    f"{topic} has no partition {p} (it has {len(leaders)}); the output topic "
                    "changed while the job ran"
                )
            rows = order[bounds[i] : bounds[i + 1]]
            sequence = self._sequences.get((topic, p), 0)
            encoded = encode_batches(
                rows,
                timestamps,
                keys,
                values,
                headers,
                max_batch_bytes=self._max_batch,
                producer=self._producer or (-1, -1),
                base_sequence=sequence,
            )
            self._sequences[(topic, p)] = (sequence + len(rows)) % 2**31
            data = encoded.data.data
            edges, first = encoded.bounds.tolist(), encoded.first.tolist()
            pieces = per_broker.setdefault(address, [])
            for b in range(len(encoded)):
                pieces.append((p, data[edges[b] : edges[b + 1]], first[b + 1] - first[b]))
        for address, pieces in per_broker.items():
            self._queue_requests(senders[address], topic, pieces)
        self.produced += n

    def _queue_requests(
        self, sender: _Sender, topic: str, pieces: list[tuple[int, Any, int]]
    ) -> None:
        # A request holds at most one batch per partition (Produce v3+ requires it), and a
        # partition's batches go in order over the one connection: its later batches wait
        # for later requests.
        waiting: dict[int, deque[tuple[Any, int]]] = {}
        for p, data, count in pieces:
            waiting.setdefault(p, deque()).append((data, count))
        while waiting:
            batches: list[tuple[int, memoryview]] = []
            records: dict[tuple[str, int], int] = {}
            size = 0
            for p in list(waiting):
                data, count = waiting[p][0]
                if batches and size + len(data) > self._max_request:
                    break
                waiting[p].popleft()
                if not waiting[p]:
                    del waiting[p]
                batches.append((p, data))
                records[(topic, p)] = count
                size += len(data)
            if self._gate is not None:
                self._gate()
            sender.put(_Request({topic: batches}, records))
            self._raise_if_failed()

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every queued record is written; BrokerError if any was not."""
        deadline = time.monotonic() + (self._timeout_s if timeout_s is None else timeout_s)
        for sender in self._senders.values():
            if not sender.wait(deadline):
                raise BrokerError(
                    f"records still unwritten to the broker at {sender.address} after "
                    f"{timeout_s or self._timeout_s:.0f} s"
                )
        self._raise_if_failed()

    def purge(self) -> None:
        """Drop the requests not yet sent (not the one in flight)."""
        dropped = sum(s.purge() for s in self._senders.values())
        if dropped:
            logger.info("dropped %d queued records", dropped)

    def close(self) -> None:
        """Stop the sender threads once their queues are empty, and close the connections."""
        for sender in self._senders.values():
            sender.close()
        self._senders.clear()
