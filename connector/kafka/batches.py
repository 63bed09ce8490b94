"""Kafka record batches (message format v2) built from columns by compiled loops.

A record batch is what a Produce request carries per partition (KIP-98; the layout is
Kafka's ``DefaultRecordBatch``)::

    baseOffset int64 | batchLength int32 | partitionLeaderEpoch int32 | magic int8 (2)
    crc uint32 (CRC-32C of everything after it) | attributes int16 | lastOffsetDelta int32
    baseTimestamp int64 | maxTimestamp int64 | producerId int64 | producerEpoch int16
    baseSequence int32 | records count int32 | records

and each record is ``length varint | attributes int8 | timestampDelta varlong |
offsetDelta varint | keyLength varint | key | valueLength varint | value | headers``, every
varint zigzag-encoded. ``headers`` here is a record's whole header section as it goes on
the wire (a count varint, then each header's key and value with their lengths): the
caller builds it (:mod:`connector.output.headers` does for restream's headers), so the
loop below only copies bytes.

Everything per record runs in one compiled pass over the rows of a partition
(:func:`encode_batches`): no Python object per record. Batches are uncompressed; those of an
idempotent producer carry its id, epoch and sequence numbers (:mod:`connector.kafka.native`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.state.jit import jit, register_warm_up

__all__ = [
    "BATCH_OVERHEAD",
    "ByteRows",
    "EncodedBatches",
    "crc32c",
    "decimal_rows",
    "decimal_size",
    "encode_batches",
    "put_decimal",
    "put_varint",
    "varint_size",
]

#: Bytes of a batch before its first record.
BATCH_OVERHEAD = 61
_CRC_START = 21  # the CRC covers the batch from its attributes on


@dataclass(frozen=True, slots=True, eq=False)
class ByteRows:
    """Byte strings back to back: row ``i`` is ``data[offsets[i]:offsets[i + 1]]``."""

    data: npt.NDArray[np.uint8]
    offsets: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def of(cls, rows: Sequence[bytes]) -> ByteRows:
        """The rows of a list of bytes (one join and one pass over their lengths)."""
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, rows), np.int64, len(rows)), out=offsets[1:])
        return cls(np.frombuffer(b"".join(rows), dtype=np.uint8), offsets)

    @classmethod
    def joined(cls, data: bytes, offsets: npt.NDArray[np.int64]) -> ByteRows:
        """Rows already back to back in ``data`` (an encoder's output)."""
        return cls(np.frombuffer(data, dtype=np.uint8), np.asarray(offsets, dtype=np.int64))

    def rows(self) -> list[bytes]:
        """Each row as a ``bytes`` object (for tests and the librdkafka path)."""
        data = self.data.tobytes()
        bounds = self.offsets.tolist()
        return [data[a:b] for a, b in itertools.pairwise(bounds)]


@dataclass(frozen=True, slots=True, eq=False)
class EncodedBatches:
    """Record batches of one partition, back to back in ``data``; batch ``i`` is
    ``data[bounds[i]:bounds[i + 1]]`` and holds rows ``first[i]`` up to ``first[i + 1]``."""

    data: npt.NDArray[np.uint8]
    bounds: npt.NDArray[np.int64]
    first: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.bounds) - 1


def _crc_tables() -> npt.NDArray[np.uint32]:
    """Slice-by-8 tables of the Castagnoli polynomial (reflected 0x82F63B78)."""
    tables = np.zeros((8, 256), dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        tables[0, i] = c
    for i in range(256):
        c = int(tables[0, i])
        for t in range(1, 8):
            c = int(tables[0, c & 0xFF]) ^ (c >> 8)
            tables[t, i] = c
    return tables


_CRC = _crc_tables()


@jit
def _crc32c(tables: Any, data: Any, start: int, stop: int) -> int:
    crc = np.uint32(0xFFFFFFFF)
    i = start
    while i + 8 <= stop:
        lo = crc ^ (
            np.uint32(data[i])
            | (np.uint32(data[i + 1]) << np.uint32(8))
            | (np.uint32(data[i + 2]) << np.uint32(16))
            | (np.uint32(data[i + 3]) << np.uint32(24))
        )
        crc = (
            tables[7, lo & np.uint32(0xFF)]
            ^ tables[6, (lo >> np.uint32(8)) & np.uint32(0xFF)]
            ^ tables[5, (lo >> np.uint32(16)) & np.uint32(0xFF)]
            ^ tables[4, lo >> np.uint32(24)]
            ^ tables[3, data[i + 4]]
            ^ tables[2, data[i + 5]]
            ^ tables[1, data[i + 6]]
            ^ tables[0, data[i + 7]]
        )
        i += 8
    while i < stop:
        crc = tables[0, (crc ^ np.uint32(data[i])) & np.uint32(0xFF)] ^ (crc >> np.uint32(8))
        i += 1
    return int(crc ^ np.uint32(0xFFFFFFFF))


def crc32c(data: bytes | npt.NDArray[np.uint8]) -> int:
    """CRC-32C (Castagnoli) of ``data``, the checksum of Kafka's record batches."""
    array = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    return int(_crc32c(_CRC, array, 0, len(array)))


@jit
def varint_size(value: int) -> int:
    """Bytes of ``value`` as a zigzag varint; a compiled helper for other kernels."""
    z = (value << 1) ^ (value >> 63)  # zigzag; value fits in int64
    size = 1
    u = np.uint64(z)
    while u >= np.uint64(0x80):
        u >>= np.uint64(7)
        size += 1
    return size


@jit
def put_varint(out: Any, at: int, value: int) -> int:
    """Write ``value`` as a zigzag varint at ``out[at]``; where it ends. A compiled helper."""
    u = np.uint64((value << 1) ^ (value >> 63))
    while u >= np.uint64(0x80):
        out[at] = np.uint8((u & np.uint64(0x7F)) | np.uint64(0x80))
        u >>= np.uint64(7)
        at += 1
    out[at] = np.uint8(u)
    return at + 1


@jit
def _put_int(out: Any, at: int, value: int, width: int) -> int:
    for k in range(width):
        out[at + k] = np.uint8((value >> (8 * (width - 1 - k))) & 0xFF)
    return at + width


@jit
def _body_size(
    row: int,
    ts_delta: int,
    offset_delta: int,
    key_offsets: Any,
    value_offsets: Any,
    header_offsets: Any,
    has_headers: bool,
) -> int:
    key_len: int = key_offsets[row + 1] - key_offsets[row]
    value_len: int = value_offsets[row + 1] - value_offsets[row]
    size: int = 1 + varint_size(ts_delta) + varint_size(offset_delta)
    size += varint_size(key_len) + key_len + varint_size(value_len) + value_len
    if has_headers:
        size += header_offsets[row + 1] - header_offsets[row]
    else:
        size += 1
    return size


@jit
def _encode(
    tables: Any,
    rows: Any,
    timestamps: Any,
    key_data: Any,
    key_offsets: Any,
    value_data: Any,
    value_offsets: Any,
    header_data: Any,
    header_offsets: Any,
    has_headers: bool,
    max_batch_bytes: int,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
) -> tuple[Any, Any, Any]:
    n = len(rows)
    # Sizes first (each record at its offset delta within a batch of at most max bytes)...
    sizes = np.empty(n, dtype=np.int64)  # each record's bytes, its length varint included
    bodies = np.empty(n, dtype=np.int64)  # and without it
    first = [0]
    batch_bytes = 61
    base_ts = timestamps[rows[0]] if n else 0
    start = 0
    i = 0
    while i < n:
        row = rows[i]
        body = _body_size(
            row,
            timestamps[row] - base_ts,
            i - start,
            key_offsets,
            value_offsets,
            header_offsets,
            has_headers,
        )
        total = varint_size(body) + body
        if i > start and batch_bytes + total > max_batch_bytes:
            first.append(i)
            start = i
            base_ts = timestamps[row]
            batch_bytes = 61
            continue  # the record again, as the first of a new batch
        sizes[i] = total
        bodies[i] = body
        batch_bytes += total
        i += 1
    first.append(n)
    batches = len(first) - 1
    total_bytes = 61 * batches + int(sizes.sum()) if n else 0
    out = np.empty(total_bytes, dtype=np.uint8)
    bounds = np.zeros(batches + 1, dtype=np.int64)
    # ...then the bytes, batch by batch.
    at = 0
    for b in range(batches):
        lo, hi = first[b], first[b + 1]
        begin = at
        base_ts = timestamps[rows[lo]]
        max_ts = base_ts
        for i in range(lo, hi):
            max_ts = max(max_ts, timestamps[rows[i]])
        length = 61 + int(sizes[lo:hi].sum())
        at = _put_int(out, at, 0, 8)  # baseOffset: the broker assigns offsets
        at = _put_int(out, at, length - 12, 4)
        at = _put_int(out, at, -1, 4)  # partitionLeaderEpoch
        out[at] = 2  # magic
        at += 1
        crc_at = at
        at += 4
        at = _put_int(out, at, 0, 2)  # attributes: no compression, CreateTime
        at = _put_int(out, at, hi - lo - 1, 4)
        at = _put_int(out, at, base_ts, 8)
        at = _put_int(out, at, max_ts, 8)
        at = _put_int(out, at, producer_id, 8)
        at = _put_int(out, at, producer_epoch, 2)
        # Sequence numbers wrap to 0 after the largest int32, as Kafka's do.
        at = _put_int(out, at, -1 if producer_id < 0 else (base_sequence + lo) % 2147483648, 4)
        at = _put_int(out, at, hi - lo, 4)
        for i in range(lo, hi):
            row = rows[i]
            key_lo, key_hi = key_offsets[row], key_offsets[row + 1]
            value_lo, value_hi = value_offsets[row], value_offsets[row + 1]
            at = put_varint(out, at, bodies[i])
            out[at] = 0  # attributes
            at += 1
            at = put_varint(out, at, timestamps[row] - base_ts)
            at = put_varint(out, at, i - lo)
            at = put_varint(out, at, key_hi - key_lo)
            out[at : at + key_hi - key_lo] = key_data[key_lo:key_hi]
            at += key_hi - key_lo
            at = put_varint(out, at, value_hi - value_lo)
            out[at : at + value_hi - value_lo] = value_data[value_lo:value_hi]
            at += value_hi - value_lo
            if has_headers:
                h_lo, h_hi = header_offsets[row], header_offsets[row + 1]
                out[at : at + h_hi - h_lo] = header_data[h_lo:h_hi]
                at += h_hi - h_lo
            else:
                out[at] = 0  # no headers
                at += 1
        crc = _crc32c(tables, out, begin + 21, at)
        _put_int(out, crc_at, crc, 4)
        bounds[b + 1] = at
    return out, bounds, np.array(first, dtype=np.int64)


def encode_batches(
    rows: npt.NDArray[np.int64],
    timestamps: npt.NDArray[np.int64],
    keys: ByteRows,
    values: ByteRows,
    headers: ByteRows | None,
    *,
    max_batch_bytes: int = 1_000_000,
    producer: tuple[int, int] = (-1, -1),
    base_sequence: int = 0,
) -> EncodedBatches:
    """Record batches of ``rows`` (in that order), each at most ``max_batch_bytes`` long
    unless one record alone is longer; ``headers`` are whole header sections (None: none).

    ``producer`` is an idempotent producer's ``(id, epoch)``: its batches carry sequence
    numbers, the first record's ``base_sequence`` and on, one per record ((-1, -1): none)."""
    empty = np.zeros(2, dtype=np.int64)
    head = headers if headers is not None else ByteRows(np.zeros(0, np.uint8), empty)
    out, bounds, first = _encode(
        _CRC,
        np.ascontiguousarray(rows, dtype=np.int64),
        np.ascontiguousarray(timestamps, dtype=np.int64),
        keys.data,
        keys.offsets,
        values.data,
        values.offsets,
        head.data,
        head.offsets,
        headers is not None,
        max_batch_bytes,
        producer[0],
        producer[1],
        base_sequence,
    )
    return EncodedBatches(out, bounds, first)


@jit
def decimal_size(v: int) -> int:
    """Digits (and sign) of ``v`` in decimal; a compiled helper for other kernels."""
    size = 1 if v >= 0 else 2
    u = abs(v)
    while u >= 10:
        u //= 10
        size += 1
    return size


@jit
def put_decimal(out: Any, at: int, v: int) -> int:
    """Write ``v`` in decimal ASCII at ``out[at]``; where it ends. A compiled helper."""
    end = at + decimal_size(v)
    i = end - 1
    u = abs(v)
    while True:
        out[i] = 48 + u % 10
        u //= 10
        i -= 1
        if u == 0:
            break
    if v < 0:
        out[i] = 45  # "-"
    return end


@jit
def _decimal_rows(values: Any) -> tuple[Any, Any]:
    n = len(values)
    offsets = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        offsets[i + 1] = offsets[i] + decimal_size(values[i])
    out = np.empty(offsets[n], dtype=np.uint8)
    for i in range(n):
        put_decimal(out, offsets[i], values[i])
    return out, offsets


def decimal_rows(values: npt.NDArray[np.integer[Any]]) -> ByteRows:
    """Each integer's decimal ASCII text (``b"-12"``) as rows, in one compiled pass.

    Integers down to ``-(2**63 - 1)``; the smallest int64 has no absolute value."""
    data, offsets = _decimal_rows(np.ascontiguousarray(values, dtype=np.int64))
    return ByteRows(data, offsets)


@register_warm_up
def _warm() -> None:
    rows = ByteRows.of([b"k", b"vv"])
    encode_batches(np.arange(2), np.array([1, 2]), rows, rows, rows)
    encode_batches(np.arange(2), np.array([1, 2]), rows, rows, None, producer=(7, 0))
    decimal_rows(np.array([-1, 2]))
    crc32c(b"123456789")
