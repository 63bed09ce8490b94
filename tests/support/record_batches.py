"""A plain-Python reader of Kafka record batches (message format v2), written from the
protocol's description, to check what :mod:`connector.kafka.batches` builds."""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["DecodedRecord", "crc32c_reference", "read_batches"]


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
