"""A plain-Python reader and writer of Kafka record batches (message format v2), written from
the protocol's description: the reader checks what :mod:`connector.kafka.batches` builds,
the writer builds what a broker may hand :mod:`connector.kafka.records` (any offsets,
compression, transactions, control batches, log-append time)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import cramjam

from connector.kafka.batches import crc32c

__all__ = [
    "DecodedRecord",
    "SentRecord",
    "build_batch",
    "control_record",
    "crc32c_reference",
    "read_batches",
    "zigzag",
]


@dataclass(frozen=True)
class DecodedRecord:
    """One record as a consumer sees it (offset within its batch sequence)."""

    offset_delta: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[bytes, bytes | None]]


def crc32c_reference(data: bytes) -> int:
    """CRC-32C bit by bit (slow and obviously right)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def _varint(data: bytes, at: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1), at


def _bytes(data: bytes, at: int) -> tuple[bytes | None, int]:
    size, at = _varint(data, at)
    if size < 0:
        return None, at
    return data[at : at + size], at + size


def read_batches(
    data: bytes, producer: tuple[int, int] = (-1, -1), sequences: list[int] | None = None
) -> list[list[DecodedRecord]]:
    """Every batch in ``data``, checking its length, magic, CRC, record count and producer;
    each batch's base sequence is appended to ``sequences``."""
    batches = []
    at = 0
    while at < len(data):
        base_offset, length, _epoch, magic, crc = struct.unpack_from(">qiibI", data, at)
        assert base_offset == 0
        assert magic == 2
        end = at + 12 + length
        assert end <= len(data), "batch length beyond the data"
        assert crc32c_reference(data[at + 21 : end]) == crc, "CRC mismatch"
        attributes, last_delta, base_ts, max_ts, pid, pepoch, bseq, count = struct.unpack_from(
            ">hiqqqhii", data, at + 21
        )
        assert attributes == 0 and (pid, pepoch) == producer
        assert bseq >= 0 if pid >= 0 else bseq == -1
        if sequences is not None:
            sequences.append(bseq)
        assert last_delta == count - 1
        p = at + 61
        records = []
        for _ in range(count):
            body, p = _varint(data, p)
            stop = p + body
            assert data[p] == 0
            p += 1
            ts_delta, p = _varint(data, p)
            offset_delta, p = _varint(data, p)
            key, p = _bytes(data, p)
            value, p = _bytes(data, p)
            n_headers, p = _varint(data, p)
            headers = []
            for _ in range(n_headers):
                name, p = _bytes(data, p)
                assert name is not None
                header_value, p = _bytes(data, p)
                headers.append((name, header_value))
            assert p == stop, "record length does not match its fields"
            records.append(DecodedRecord(offset_delta, base_ts + ts_delta, key, value, headers))
        assert p == end
        assert max_ts == max(r.timestamp for r in records)
        assert [r.offset_delta for r in records] == list(range(count))
        batches.append(records)
        at = end
    return batches


@dataclass(frozen=True)
class SentRecord:
    """A record to put in a batch: its offset and timestamp deltas, key, value, headers."""

    offset_delta: int
    timestamp_delta: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[bytes, bytes | None]] = field(default_factory=list)


def zigzag(value: int) -> bytes:
    """``value`` as a zigzag varint, from the protocol's description."""
    z = (value << 1) ^ (value >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _field(data: bytes | None) -> bytes:
    return zigzag(-1) if data is None else zigzag(len(data)) + data


def _compress(codec: str, data: bytes) -> bytes:
    if codec == "gzip":
        z = zlib.compressobj(wbits=31)
        return z.compress(data) + z.flush()
    if codec == "snappy":
        return bytes(cramjam.snappy.compress_raw(data))
    if codec == "snappy-java":
        # Kafka's Java clients: the xerial header, then (length, raw snappy) blocks.
        out = b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
        for at in range(0, len(data), 100):
            block = bytes(cramjam.snappy.compress_raw(data[at : at + 100]))
            out += struct.pack(">i", len(block)) + block
        return out
    if codec == "lz4":
        return bytes(cramjam.lz4.compress(data))
    if codec == "zstd":
        return bytes(cramjam.zstd.compress(data))
    assert codec == "none", codec
    return data


_CODEC_BITS = {"none": 0, "gzip": 1, "snappy": 2, "snappy-java": 2, "lz4": 3, "zstd": 4}


def build_batch(
    base_offset: int,
    records: list[SentRecord],
    *,
    base_timestamp: int = 1_700_000_000_000,
    codec: str = "none",
    log_append_time: int | None = None,
    producer_id: int = -1,
    transactional: bool = False,
    control: bool = False,
    magic: int = 2,
) -> bytes:
    """One record batch as a broker stores it (``log_append_time``: the broker's time, set as
    the batch's max timestamp with the attribute)."""
    body = b""
    for r in records:
        inner = (
            b"\x00"
            + zigzag(r.timestamp_delta)
            + zigzag(r.offset_delta)
            + _field(r.key)
            + _field(r.value)
            + zigzag(len(r.headers))
            + b"".join(_field(k) + _field(v) for k, v in r.headers)
        )
        body += zigzag(len(inner)) + inner
    attributes = _CODEC_BITS[codec]
    attributes |= 0x08 if log_append_time is not None else 0
    attributes |= 0x10 if transactional else 0
    attributes |= 0x20 if control else 0
    last_delta = max((r.offset_delta for r in records), default=0)
    max_ts = (
        log_append_time
        if log_append_time is not None
        else base_timestamp + max((r.timestamp_delta for r in records), default=0)
    )
    after_crc = struct.pack(
        ">hiqqqhii",
        attributes,
        last_delta,
        base_timestamp,
        max_ts,
        producer_id,
        0 if producer_id >= 0 else -1,
        0 if producer_id >= 0 else -1,
        len(records),
    ) + _compress(codec, body)
    crc = crc32c(after_crc)
    head = struct.pack(">qiib", base_offset, 9 + len(after_crc), 0, magic)
    return head + struct.pack(">I", crc) + after_crc


def control_record(abort: bool) -> SentRecord:
    """The one record of a transaction marker's control batch."""
    return SentRecord(0, 0, struct.pack(">hh", 0, 0 if abort else 1), struct.pack(">hi", 0, 0))
