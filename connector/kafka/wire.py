"""The few Kafka protocol messages the native producer and fetcher speak, over plain TCP.

Requests use header v1 (api key, version, correlation id, client id) and responses header
v0 (correlation id): the versions used here are all before Kafka's "flexible" encodings,
so there are no tagged fields. ``ApiVersions`` v0 finds the versions a broker takes;
``Produce`` v3 to v8 share one request layout (a record batch per partition) and differ
only in what the response adds (log start offset from v5, per-record errors and a message
from v8), all read by :func:`read_produce_response`. ``Fetch`` v4 to v11 (the versions with
an isolation level and aborted transactions, before the flexible v12) are written by
:func:`encode_fetch` and read by :func:`read_fetch_response`, without fetch sessions.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from connector.errors import BrokerError

__all__ = [
    "API_VERSIONS",
    "ERROR_NAMES",
    "FETCH",
    "INIT_PRODUCER_ID",
    "PRODUCE",
    "RETRIABLE",
    "Connection",
    "FetchedPartition",
    "PartitionResult",
    "encode_api_versions",
    "encode_fetch",
    "encode_init_producer_id",
    "encode_produce",
    "read_api_versions",
    "read_fetch_response",
    "read_init_producer_id",
    "read_produce_response",
    "read_varint",
]

PRODUCE = 0
FETCH = 1
API_VERSIONS = 18
INIT_PRODUCER_ID = 22
_CLIENT_ID = b"restream"

#: Names of the error codes a Produce response may carry (Kafka's ``Errors`` enum).
ERROR_NAMES: Mapping[int, str] = {
    -1: "UNKNOWN_SERVER_ERROR",
    1: "OFFSET_OUT_OF_RANGE",
    2: "CORRUPT_MESSAGE",
    3: "UNKNOWN_TOPIC_OR_PARTITION",
    5: "LEADER_NOT_AVAILABLE",
    6: "NOT_LEADER_OR_FOLLOWER",
    7: "REQUEST_TIMED_OUT",
    9: "REPLICA_NOT_AVAILABLE",
    10: "MESSAGE_TOO_LARGE",
    17: "INVALID_TOPIC_EXCEPTION",
    18: "RECORD_LIST_TOO_LARGE",
    19: "NOT_ENOUGH_REPLICAS",
    20: "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    21: "INVALID_REQUIRED_ACKS",
    29: "TOPIC_AUTHORIZATION_FAILED",
    32: "INVALID_TIMESTAMP",
    35: "UNSUPPORTED_VERSION",
    42: "INVALID_REQUEST",
    43: "UNSUPPORTED_FOR_MESSAGE_FORMAT",
    45: "OUT_OF_ORDER_SEQUENCE_NUMBER",
    46: "DUPLICATE_SEQUENCE_NUMBER",
    47: "INVALID_PRODUCER_EPOCH",
    56: "KAFKA_STORAGE_ERROR",
    59: "UNKNOWN_PRODUCER_ID",
    74: "FENCED_LEADER_EPOCH",
    75: "UNKNOWN_LEADER_EPOCH",
    76: "UNSUPPORTED_COMPRESSION_TYPE",
    87: "INVALID_RECORD",
    100: "UNKNOWN_TOPIC_ID",
}

#: Errors after which the same batches may be sent again (Kafka marks them retriable); an
#: idempotent producer's resend of an appended batch is recognised by its sequence number.
RETRIABLE = frozenset({3, 5, 6, 7, 13, 19, 20, 56, 74, 75})


@dataclass(frozen=True, slots=True)
class PartitionResult:
    """What the broker said about one partition of a Produce request."""

    topic: str
    partition: int
    error: int
    base_offset: int
    message: str | None = None

    def describe(self) -> str:
        """``scores[3]: NOT_LEADER_OR_FOLLOWER (6)`` and the broker's message, if any."""
        name = ERROR_NAMES.get(self.error, "error")
        text = f"{self.topic}[{self.partition}]: {name} ({self.error})"
        return f"{text}: {self.message}" if self.message else text


@dataclass(frozen=True, slots=True, eq=False)
class FetchedPartition:
    """What a Fetch response holds for one partition: its error code, high watermark, last
    stable offset, the aborted transactions ``(producer id, first offset)`` among its
    records (read_committed only), and its record batches (a view into the response)."""

    topic: str
    partition: int
    error: int
    high_watermark: int
    last_stable_offset: int
    aborted: tuple[tuple[int, int], ...]
    records: memoryview


def _header(api_key: int, version: int, correlation: int) -> bytes:
    return struct.pack(">hhih", api_key, version, correlation, len(_CLIENT_ID)) + _CLIENT_ID


def _framed(parts: Sequence[bytes | memoryview]) -> list[bytes | memoryview]:
    size = sum(len(p) for p in parts)
    return [struct.pack(">i", size), *parts]


def encode_produce(
    version: int,
    correlation: int,
    acks: int,
    timeout_ms: int,
    batches: Mapping[str, Sequence[tuple[int, bytes | memoryview]]],
) -> list[bytes | memoryview]:
    """A framed Produce request (v3-v8): per topic, ``(partition, record batch)`` pairs.

    The pieces are returned as a list so that the batches are sent from where they are
    (``socket.sendmsg``), not copied into one buffer."""
    parts: list[bytes | memoryview] = [
        _header(PRODUCE, version, correlation),
        struct.pack(">hhii", -1, acks, timeout_ms, len(batches)),
    ]
    for topic, partitions in batches.items():
        name = topic.encode()
        parts.append(struct.pack(">h", len(name)) + name + struct.pack(">i", len(partitions)))
        for partition, data in partitions:
            parts.append(struct.pack(">ii", partition, len(data)))
            parts.append(data)
    return _framed(parts)


def encode_fetch(
    version: int,
    correlation: int,
    *,
    max_wait_ms: int,
    max_bytes: int,
    read_committed: bool,
    partitions: Mapping[str, Sequence[tuple[int, int, int]]],
) -> list[bytes | memoryview]:
    """A framed Fetch request (v4-v11) without a fetch session: per topic, ``(partition,
    fetch offset, partition max bytes)`` triples."""
    parts: list[bytes | memoryview] = [
        _header(FETCH, version, correlation),
        # replica id (a consumer), max wait, min bytes, max bytes, isolation level
        struct.pack(">iiiib", -1, max_wait_ms, 1, max_bytes, 1 if read_committed else 0),
    ]
    if version >= 7:
        parts.append(struct.pack(">ii", 0, -1))  # no fetch session: a full fetch every time
    parts.append(struct.pack(">i", len(partitions)))
    for topic, wanted in partitions.items():
        name = topic.encode()
        parts.append(struct.pack(">h", len(name)) + name + struct.pack(">i", len(wanted)))
        for partition, offset, limit in wanted:
            parts.append(struct.pack(">i", partition))
            if version >= 9:
                parts.append(struct.pack(">i", -1))  # current leader epoch: not checked
            parts.append(struct.pack(">q", offset))
            if version >= 5:
                parts.append(struct.pack(">q", -1))  # log start offset: a consumer's is -1
            parts.append(struct.pack(">i", limit))
    if version >= 7:
        parts.append(struct.pack(">i", 0))  # forgotten topics
    if version >= 11:
        parts.append(struct.pack(">h", 0))  # rack id ""
    return _framed([b"".join(parts)])


def encode_api_versions(correlation: int) -> list[bytes | memoryview]:
    """A framed ApiVersions v0 request."""
    return _framed([_header(API_VERSIONS, 0, correlation)])


def encode_init_producer_id(
    version: int, correlation: int, timeout_ms: int
) -> list[bytes | memoryview]:
    """A framed InitProducerId request (v0-v4) of an idempotent, non-transactional producer.

    From v2 on the request is "flexible": its header and body end in (empty) tagged fields
    and the transactional id is a compact string (null: 0)."""
    if version < 2:
        return _framed(
            [_header(INIT_PRODUCER_ID, version, correlation), struct.pack(">hi", -1, timeout_ms)]
        )
    body = b"\x00" + struct.pack(">i", timeout_ms)
    if version >= 3:
        body += struct.pack(">qh", -1, -1)  # no earlier producer id to bump
    return _framed([_header(INIT_PRODUCER_ID, version, correlation) + b"\x00", body + b"\x00"])


def read_init_producer_id(version: int, body: bytes) -> tuple[int, int]:
    """``(producer id, epoch)`` from an InitProducerId response body (v0-v4)."""
    at = _skip_tagged_fields(body, 0) if version >= 2 else 0
    _throttle, error, producer_id, epoch = struct.unpack_from(">ihqh", body, at)
    if error:
        name = ERROR_NAMES.get(error, "error")
        raise BrokerError(f"the broker gave no producer id: {name} ({error})")
    return producer_id, epoch


def _uvarint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def read_varint(data: bytes, at: int) -> tuple[int, int]:
    """The zigzag varint at ``data[at]`` (a record's fields) and where it ends."""
    u, at = _uvarint(data, at)
    return (u >> 1) ^ -(u & 1), at


def _skip_tagged_fields(data: bytes, at: int) -> int:
    count, at = _uvarint(data, at)
    for _ in range(count):
        _tag, at = _uvarint(data, at)
        size, at = _uvarint(data, at)
        at += size
    return at


@contextlib.contextmanager
def _malformed(api: str) -> Iterator[None]:
    """A response that does not parse is the broker's fault: a BrokerError, not a crash."""
    try:
        yield
    except (struct.error, IndexError, ValueError) as exc:
        raise BrokerError(f"a malformed {api} response from the broker: {exc}") from exc


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.at = 0

    def take(self, fmt: str) -> tuple[int, ...]:
        values = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return values

    def string(self) -> str | None:
        (size,) = self.take(">h")
        if size < 0:
            return None
        text = self.data[self.at : self.at + size].decode(errors="replace")
        self.at += size
        return text


def read_api_versions(body: bytes) -> dict[int, tuple[int, int]]:
    """``{api key: (min version, max version)}`` from an ApiVersions v0 response body."""
    r = _Reader(body)
    (error,) = r.take(">h")
    if error:
        raise BrokerError(f"the broker refused ApiVersions: error {error}")
    (count,) = r.take(">i")
    versions: dict[int, tuple[int, int]] = {}
    for _ in range(count):
        key, low, high = r.take(">hhh")
        versions[key] = (low, high)
    return versions


def read_produce_response(version: int, body: bytes) -> list[PartitionResult]:
    """Every partition's result in a Produce response body (v3-v8)."""
    with _malformed("Produce"):
        return _produce_results(version, body)


def _produce_results(version: int, body: bytes) -> list[PartitionResult]:
    r = _Reader(body)
    results: list[PartitionResult] = []
    (topics,) = r.take(">i")
    for _ in range(topics):
        topic = r.string() or ""
        (partitions,) = r.take(">i")
        for _ in range(partitions):
            partition, error, base_offset, _append_time = r.take(">ihqq")
            if version >= 5:
                r.take(">q")  # log start offset
            message = None
            if version >= 8:
                (record_errors,) = r.take(">i")
                details = []
                for _ in range(max(record_errors, 0)):
                    (index,) = r.take(">i")
                    details.append(f"record {index}: {r.string()}")
                message = r.string()
                if details:
                    message = "; ".join([*([message] if message else []), *details])
            results.append(PartitionResult(topic, partition, error, base_offset, message))
    return results


def read_fetch_response(version: int, body: bytes) -> list[FetchedPartition]:
    """Every partition in a Fetch response body (v4-v11); a top-level error (v7+, a fetch
    session's) is a BrokerError."""
    with _malformed("Fetch"):
        return _fetched_partitions(version, body)


def _fetched_partitions(version: int, body: bytes) -> list[FetchedPartition]:
    r = _Reader(body)
    r.take(">i")  # throttle time
    if version >= 7:
        (error, _session) = r.take(">hi")
        if error:
            name = ERROR_NAMES.get(error, "error")
            raise BrokerError(f"the broker refused a Fetch request: {name} ({error})")
    view = memoryview(body)
    out: list[FetchedPartition] = []
    (topics,) = r.take(">i")
    for _ in range(topics):
        topic = r.string() or ""
        (count,) = r.take(">i")
        for _ in range(count):
            partition, error, high, stable = r.take(">ihqq")
            if version >= 5:
                r.take(">q")  # log start offset
            (n_aborted,) = r.take(">i")
            aborted = tuple(
                (int(pid), int(first))
                for pid, first in (r.take(">qq") for _ in range(max(n_aborted, 0)))
            )
            if version >= 11:
                r.take(">i")  # preferred read replica
            (size,) = r.take(">i")
            size = max(size, 0)
            records = view[r.at : r.at + size]
            r.at += size
            out.append(FetchedPartition(topic, partition, error, high, stable, aborted, records))
    return out


class Connection:
    """One blocking TCP connection to a broker: send a framed request, read its response."""

    def __init__(self, host: str, port: int, timeout_s: float):
        self.address = f"{host}:{port}"
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as exc:
            raise BrokerError(f"cannot connect to the broker at {self.address}: {exc}") from exc
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._correlation = 0

    def api_versions(self) -> dict[int, tuple[int, int]]:
        """Ask the broker which versions of each API it takes (ApiVersions v0); the connection
        is closed if it cannot tell."""
        try:
            correlation = self.next_correlation()
            self.send(encode_api_versions(correlation))
            return read_api_versions(self.receive(correlation))
        except BrokerError:
            self.close()
            raise

    def next_correlation(self) -> int:
        """A new correlation id for the next request."""
        self._correlation = (self._correlation + 1) & 0x7FFFFFFF
        return self._correlation

    def send(self, parts: Sequence[bytes | memoryview]) -> None:
        """Send one framed request (its pieces in order)."""
        try:
            pending = [memoryview(p).cast("B") for p in parts if len(p)]
            while pending:
                sent = self._sock.sendmsg(pending[:512])  # within IOV_MAX
                while pending and sent >= len(pending[0]):
                    sent -= len(pending[0])
                    pending.pop(0)
                if sent:
                    pending[0] = pending[0][sent:]
        except OSError as exc:
            raise BrokerError(f"sending to the broker at {self.address} failed: {exc}") from exc

    def receive(self, correlation: int) -> bytes:
        """The body of the response to the request with ``correlation`` (after its id)."""
        try:
            (size,) = struct.unpack(">i", self._read(4))
            data = self._read(size)
        except (OSError, TimeoutError) as exc:
            raise BrokerError(
                f"no response from the broker at {self.address}: {exc or 'timed out'}"
            ) from exc
        (got,) = struct.unpack_from(">i", data)
        if got != correlation:
            raise BrokerError(
                f"the broker at {self.address} answered request {got}, expected {correlation}"
            )
        return data[4:]

    def _read(self, size: int) -> bytes:
        buffer = bytearray(size)
        view = memoryview(buffer)
        at = 0
        while at < size:
            got = self._sock.recv_into(view[at:])
            if not got:
                raise OSError("the connection was closed")
            at += got
        return bytes(buffer)

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()
