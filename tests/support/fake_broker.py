"""A Kafka broker of a few messages, in a thread: ApiVersions, InitProducerId and Produce, as
the native producer (connector.kafka.native) speaks them, and Fetch, as the native reader
(connector.kafka.fetcher) does. It keeps every request it is sent, appends batches as Kafka
does for an idempotent producer (a batch whose sequence numbers it has already appended is
acknowledged and dropped; one that skips ahead is refused with OUT_OF_ORDER_SEQUENCE_NUMBER)
and answers each partition with the error a test asks for, so unit tests can check what the
clients send, in which order, and what they do with each answer, without a process.

Fetch serves ``batches``, stored batches per partition (a test builds them with
:func:`tests.support.record_batches.build_batch`): from the batch holding the fetch offset
on, whole batches up to the partition's byte limit (at least one), with the partition's
aborted transactions."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.support.record_batches import DecodedRecord, read_batches

__all__ = ["PRODUCER", "FakeBroker", "FetchCall", "ProduceCall"]


@dataclass
class ProduceCall:
    """One Produce request as the broker read it."""

    version: int
    acks: int
    timeout_ms: int
    #: (topic, partition, the partition's record batch bytes), in request order.
    batches: list[tuple[str, int, bytes]]


@dataclass
class FetchCall:
    """One Fetch request as the broker read it."""

    version: int
    max_wait_ms: int
    max_bytes: int
    read_committed: bool
    #: (topic, partition, fetch offset, partition max bytes), in request order.
    partitions: list[tuple[str, int, int, int]]


@dataclass
class FakeBroker:
    """Listens on 127.0.0.1; ``answer(call_index, topic, partition)`` gives each partition's
    error code (0: written); ``produce_versions`` is what ApiVersions offers."""

    answer: Callable[[int, str, int], int] = lambda _i, _t, _p: 0
    produce_versions: tuple[int, int] = (0, 9)
    #: Close the connection instead of answering the requests with these indexes (after
    #: appending their batches: the answer is what gets lost).
    hang_up_at: frozenset[int] = frozenset()
    #: The InitProducerId versions offered (None: none).
    init_versions: tuple[int, int] | None = (0, 4)
    calls: list[ProduceCall] = field(default_factory=list)
    #: Stored batches per (topic, partition), served by Fetch; the high watermark is the
    #: offset after the last one's last record.
    batches: dict[tuple[str, int], list[bytes]] = field(default_factory=dict)
    #: Aborted transactions per (topic, partition): (producer id, first offset).
    aborted: dict[tuple[str, int], list[tuple[int, int]]] = field(default_factory=dict)
    #: ``fetch_answer(call_index, topic, partition)``: a partition's error code in a Fetch
    #: answer (0: its batches).
    fetch_answer: Callable[[int, str, int], int] = lambda _i, _t, _p: 0
    fetch_versions: tuple[int, int] = (0, 17)
    #: Close the connection instead of answering the Fetch requests with these indexes.
    fetch_hang_up_at: frozenset[int] = frozenset()
    fetch_calls: list[FetchCall] = field(default_factory=list)
    #: Cut a Fetch answer's records at the partition's byte limit, mid-batch (brokers before
    #: Kafka 0.10.1 did), instead of answering at least one whole batch.
    cut_at_limit: bool = False
    #: The batches appended per (topic, partition), in order.
    log: dict[tuple[str, int], list[bytes]] = field(default_factory=dict)
    _next_sequence: dict[tuple[str, int], int] = field(default_factory=dict)
    _server: socket.socket = field(init=False)

    def __post_init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        host, port = self._server.getsockname()[:2]
        self._address = (str(host), int(port))
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` to connect to."""
        return self._address

    def leaders(self, partitions: int) -> Callable[[str], dict[int, tuple[str, int]]]:
        """A leader lookup that puts every partition of every topic on this broker."""
        return lambda _topic: dict.fromkeys(range(partitions), self.address)

    def records(self, topic: str, partition: int) -> list[DecodedRecord]:
        """Every record appended to a partition, in order."""
        return [
            r
            for data in self.log.get((topic, partition), [])
            for batch in read_batches(data, PRODUCER)
            for r in batch
        ]

    def close(self) -> None:
        """Stop listening (a shutdown first: a thread blocked in accept() keeps a merely
        closed socket listening on Linux)."""
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    head = _read(conn, 4)
                except OSError:
                    return
                body = _read(conn, struct.unpack(">i", head)[0])
                key, version, correlation, client_len = struct.unpack_from(">hhih", body)
                at = 10 + client_len
                if key == 18:
                    apis = [(0, *self.produce_versions), (1, *self.fetch_versions), (18, 0, 3)]
                    if self.init_versions is not None:
                        apis.append((22, *self.init_versions))
                    reply = struct.pack(">hi", 0, len(apis))
                    reply += b"".join(struct.pack(">hhh", *api) for api in apis)
                elif key == 22:
                    reply = _init_producer_id_reply(version, body[at:])
                elif key == 0:
                    index = len(self.calls)
                    call = _parse_produce(version, body, at)
                    self.calls.append(call)
                    errors = {
                        (t, p): self._append(t, p, data, self.answer(index, t, p))
                        for t, p, data in call.batches
                    }
                    if index in self.hang_up_at:
                        return
                    reply = _produce_reply(version, call, errors)
                elif key == 1:
                    index = len(self.fetch_calls)
                    fetch = _parse_fetch(version, body, at)
                    self.fetch_calls.append(fetch)
                    if index in self.fetch_hang_up_at:
                        return
                    reply = self._fetch_reply(index, fetch)
                else:
                    return
                data = struct.pack(">i", correlation) + reply
                conn.sendall(struct.pack(">i", len(data)) + data)

    def _fetch_reply(self, index: int, call: FetchCall) -> bytes:
        v = call.version
        out = struct.pack(">i", 0) + (struct.pack(">hi", 0, 0) if v >= 7 else b"")
        topics: dict[str, list[tuple[int, int, int]]] = {}
        for topic, partition, offset, limit in call.partitions:
            topics.setdefault(topic, []).append((partition, offset, limit))
        out += struct.pack(">i", len(topics))
        for topic, wanted in topics.items():
            name = topic.encode()
            out += struct.pack(">h", len(name)) + name + struct.pack(">i", len(wanted))
            for partition, offset, limit in wanted:
                stored = self.batches.get((topic, partition), [])
                high = _end_offset(stored[-1]) if stored else 0
                error = self.fetch_answer(index, topic, partition)
                if not error and not 0 <= offset <= high:
                    error = 1  # OFFSET_OUT_OF_RANGE
                records = b""
                if not error:
                    for data in stored:
                        if _end_offset(data) <= offset:
                            continue
                        if records and len(records) + len(data) > limit:
                            break
                        records += data
                    if self.cut_at_limit:
                        records = records[:limit]
                aborted = self.aborted.get((topic, partition), []) if call.read_committed else []
                out += struct.pack(">ihqq", partition, error, high, high)
                if v >= 5:
                    out += struct.pack(">q", 0)
                out += struct.pack(">i", len(aborted) if call.read_committed else -1)
                out += b"".join(struct.pack(">qq", pid, first) for pid, first in aborted)
                if v >= 11:
                    out += struct.pack(">i", -1)
                out += struct.pack(">i", len(records)) + records
        return out

    def _append(self, topic: str, partition: int, data: bytes, error: int) -> int:
        if error:
            return error
        first: list[int] = []
        count = sum(len(b) for b in read_batches(data, PRODUCER, first))
        expected = self._next_sequence.get((topic, partition), 0)
        if first[0] < expected:
            return 0  # a copy of a batch appended before: acknowledged, not appended
        if first[0] > expected:
            return 45  # OUT_OF_ORDER_SEQUENCE_NUMBER
        self.log.setdefault((topic, partition), []).append(data)
        self._next_sequence[(topic, partition)] = expected + count
        return 0


#: The producer id and epoch the fake broker hands out.
PRODUCER = (4242, 0)


def _init_producer_id_reply(version: int, rest: bytes) -> bytes:
    """Check an InitProducerId request (after the client id) as Kafka reads it; answer."""
    if version < 2:
        assert rest == struct.pack(">hi", -1, len(rest) and struct.unpack_from(">i", rest, 2)[0])
        return struct.pack(">ihqh", 0, 0, *PRODUCER)
    # Flexible: the header's tagged fields, a null compact string, the timeout, from v3 on
    # the producer id and epoch (-1: none), the body's tagged fields.
    tail = struct.pack(">qh", -1, -1) if version >= 3 else b""
    assert rest[:2] == b"\x00\x00" and rest[6:] == tail + b"\x00", rest.hex()
    return b"\x00" + struct.pack(">ihqh", 0, 0, *PRODUCER) + b"\x00"


def _read(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        got = conn.recv(size - len(data))
        if not got:
            raise OSError("closed")
        data += got
    return data


def _parse_produce(version: int, body: bytes, at: int) -> ProduceCall:
    (tx,) = struct.unpack_from(">h", body, at)
    at += 2 + max(tx, 0)
    acks, timeout_ms, topics = struct.unpack_from(">hii", body, at)
    at += 10
    batches = []
    for _ in range(topics):
        (size,) = struct.unpack_from(">h", body, at)
        topic = body[at + 2 : at + 2 + size].decode()
        at += 2 + size
        (partitions,) = struct.unpack_from(">i", body, at)
        at += 4
        for _ in range(partitions):
            partition, length = struct.unpack_from(">ii", body, at)
            at += 8
            batches.append((topic, partition, body[at : at + length]))
            at += length
    assert at == len(body), "bytes after the request's last field"
    return ProduceCall(version, acks, timeout_ms, batches)


def _end_offset(batch: bytes) -> int:
    """The offset after a stored batch's last record."""
    base, _length = struct.unpack_from(">qi", batch)
    (last_delta,) = struct.unpack_from(">i", batch, 23)
    return int(base + last_delta + 1)


def _parse_fetch(version: int, body: bytes, at: int) -> FetchCall:
    replica, max_wait, min_bytes, max_bytes, isolation = struct.unpack_from(">iiiib", body, at)
    assert replica == -1 and min_bytes >= 1 and isolation in (0, 1)
    at += 17
    if version >= 7:
        assert struct.unpack_from(">ii", body, at) == (0, -1)  # no fetch session
        at += 8
    (topics,) = struct.unpack_from(">i", body, at)
    at += 4
    partitions = []
    for _ in range(topics):
        (size,) = struct.unpack_from(">h", body, at)
        topic = body[at + 2 : at + 2 + size].decode()
        at += 2 + size
        (count,) = struct.unpack_from(">i", body, at)
        at += 4
        for _ in range(count):
            (partition,) = struct.unpack_from(">i", body, at)
            at += 4
            if version >= 9:
                at += 4  # current leader epoch
            (offset,) = struct.unpack_from(">q", body, at)
            at += 8
            if version >= 5:
                at += 8  # log start offset
            (limit,) = struct.unpack_from(">i", body, at)
            at += 4
            partitions.append((topic, partition, offset, limit))
    if version >= 7:
        assert struct.unpack_from(">i", body, at) == (0,)  # forgotten topics
        at += 4
    if version >= 11:
        assert struct.unpack_from(">h", body, at) == (0,)  # rack id ""
        at += 2
    assert at == len(body), "bytes after the request's last field"
    return FetchCall(version, max_wait, max_bytes, isolation == 1, partitions)


def _produce_reply(version: int, call: ProduceCall, errors: dict[tuple[str, int], int]) -> bytes:
    topics: dict[str, list[int]] = {}
    for topic, partition, _ in call.batches:
        topics.setdefault(topic, []).append(partition)
    out = struct.pack(">i", len(topics))
    for topic, partitions in topics.items():
        name = topic.encode()
        out += struct.pack(">h", len(name)) + name + struct.pack(">i", len(partitions))
        for p in partitions:
            out += struct.pack(">ihqq", p, errors[(topic, p)], 0, -1)
            if version >= 5:
                out += struct.pack(">q", 0)
            if version >= 8:
                out += struct.pack(">ih", 0, -1)
    return out + struct.pack(">i", 0)
