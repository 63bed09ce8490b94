"""Fetched record batches (message format v2) read into columns by compiled loops.

The layout is the one :mod:`connector.kafka.batches` writes (Kafka's ``DefaultRecordBatch``).
A Fetch response gives each partition's batches back to back, the last one possibly cut
short by the size limit (it is left for the next fetch). :func:`read_batches` turns them
into :class:`FetchedRecords`: per record its offset, timestamp and where its key and value
are, all in arrays, with no Python object per record. What a consumer must leave out is
left out:

- records before the fetch offset (a batch is returned whole from its first record);
- control batches (transaction markers), which only advance the position;
- under read_committed, the batches of aborted transactions, found as Kafka's consumer
  finds them: the response lists each aborted transaction's producer id and first offset,
  and a producer's batches are skipped from that offset up to its abort marker.

Compressed batches (gzip, snappy with or without Kafka's Java framing, lz4 frames, zstd)
are decompressed per batch and their records read the same way. Batches in the old
formats (magic 0 and 1, brokers before 0.11) are refused with what to do. CRCs are not
checked (the broker checked them when the records were written; librdkafka's default
``check.crcs=false`` does the same).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from connector.errors import BrokerError
from connector.kafka.wire import read_varint
from connector.serde.rows import RawRows
from engine.state.jit import jit, register_warm_up

__all__ = ["FetchedRecords", "RecordCopy", "read_batches"]

_HEADER = 61  # bytes of a batch before its records
_LOG_APPEND_TIME = 0x08
_TRANSACTIONAL = 0x10
_CONTROL = 0x20
_CODECS = {1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
# confluent_kafka's timestamp types, kept so a bad record's dead letter tells the same.
_CREATE_TIME, _LOG_APPEND = 1, 2
_XERIAL = b"\x82SNAPPY\x00"


@jit
def _u32(buf: Any, at: int) -> int:
    return int(
        (np.int64(buf[at]) << 24)
        | (np.int64(buf[at + 1]) << 16)
        | (np.int64(buf[at + 2]) << 8)
        | np.int64(buf[at + 3])
    )


@jit
def _i64(buf: Any, at: int) -> int:
    value = np.int64(0)
    for k in range(8):
        value = (value << np.int64(8)) | np.int64(buf[at + k])
    return int(value)


@jit
def _i32(buf: Any, at: int) -> int:
    value = _u32(buf, at)
    return value - (np.int64(1) << 32) if value >= (np.int64(1) << 31) else value


@jit
def _scan(buf: Any, out: Any) -> int:
    """Headers of the whole batches in ``buf`` into ``out`` (rows of: position, size, base
    offset, last offset delta, base timestamp, max timestamp, attributes, producer id,
    record count, magic); how many there were, or -1 - (how many fit) when ``out`` is
    too short. A batch cut short ends the scan."""
    n = 0
    at = 0
    size = len(buf)
    while at + 17 <= size:
        length = _i32(buf, at + 8)
        end = at + 12 + length
        if length < 0 or end > size:
            break
        if n == out.shape[0]:
            return -1 - n
        magic = np.int64(buf[at + 16])
        out[n, 0] = at
        out[n, 1] = 12 + length
        out[n, 2] = _i64(buf, at)
        out[n, 9] = magic
        if magic == 2 and length + 12 >= _HEADER:
            out[n, 3] = _i32(buf, at + 23)
            out[n, 4] = _i64(buf, at + 27)
            out[n, 5] = _i64(buf, at + 35)
            out[n, 6] = (np.int64(buf[at + 21]) << 8) | np.int64(buf[at + 22])
            out[n, 7] = _i64(buf, at + 43)
            out[n, 8] = _i32(buf, at + 57)
        n += 1
        at = end
    return n


@jit
def _varint(buf: Any, at: int, end: int) -> tuple[int, int]:
    """A zigzag varint at ``buf[at]`` and where it ends; past ``end`` or over 10 bytes:
    (0, -1)."""
    if at >= end:
        return 0, -1
    byte = np.int64(buf[at])
    if byte < 0x80:  # most lengths and deltas: one byte
        return (byte >> 1) ^ -(byte & 1), at + 1
    u = byte & 0x7F
    shift = 7
    at += 1
    while at < end and shift < 64:
        byte = np.int64(buf[at])
        at += 1
        u |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (u >> 1) ^ -(u & 1) if u >= 0 else ((u >> 1) & 0x7FFFFFFFFFFFFFFF) ^ -(u & 1), at
        shift += 7
    return 0, -1


@jit
def _records(
    buf: Any,
    starts: Any,
    ends: Any,
    counts: Any,
    base_offsets: Any,
    base_times: Any,
    append_times: Any,
    stamps: Any,
    places: Any,
) -> int:
    """Each record of the given batches' record sections (``buf[starts[b]:ends[b]]``) as a
    column of ``stamps`` (rows: offset, timestamp) and of ``places`` (key start, key length
    (-1: null), value start, value length, record start). Records read, or -1 - (the batch)
    for a record that does not fit its batch's bytes."""
    row = 0
    for b in range(len(starts)):
        at = starts[b]
        end = ends[b]
        for _ in range(counts[b]):
            length, body = _varint(buf, at, end)
            if body < 0 or length < 0 or body + length > end:
                return -1 - b
            stop = body + length
            p = body + 1  # the record's attributes byte, unused
            delta_t, p = _varint(buf, p, stop)
            if p < 0:
                return -1 - b
            delta_o, p = _varint(buf, p, stop)
            if p < 0:
                return -1 - b
            key_len, p = _varint(buf, p, stop)
            if p < 0 or p + max(key_len, 0) > stop:
                return -1 - b
            key_at = p
            p += max(key_len, 0)
            value_len, p = _varint(buf, p, stop)
            if p < 0 or p + max(value_len, 0) > stop:
                return -1 - b
            stamps[0, row] = base_offsets[b] + delta_o
            stamps[1, row] = append_times[b] if append_times[b] >= 0 else base_times[b] + delta_t
            places[0, row] = key_at
            places[1, row] = key_len if key_len >= 0 else -1
            places[2, row] = p
            places[3, row] = value_len if value_len >= 0 else -1
            places[4, row] = at
            row += 1
            at = stop
    return row


@dataclass(frozen=True, slots=True)
class RecordCopy:
    """One record's coordinates, bytes, headers and timestamp, as a client's ``Message``
    tells them (picklable, unlike a ``Message``): a fetched bad record, or a reader actor's
    copy of one for the driver's dead letters."""

    topic_: str
    partition_: int
    offset_: int
    key_: bytes | None
    value_: bytes | None
    headers_: list[tuple[str, bytes | None]] | None
    timestamp_: tuple[int, int]

    def topic(self) -> str:
        """The record's topic."""
        return self.topic_

    def partition(self) -> int:
        """The record's partition."""
        return self.partition_

    def offset(self) -> int:
        """The record's offset."""
        return self.offset_

    def key(self) -> bytes | None:
        """The record's key bytes."""
        return self.key_

    def value(self) -> bytes | None:
        """The record's value bytes."""
        return self.value_

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        """The record's headers (None when it has none, as librdkafka says)."""
        return self.headers_

    def timestamp(self) -> tuple[int, int]:
        """The record's (timestamp type, milliseconds)."""
        return self.timestamp_


@dataclass(frozen=True, slots=True, eq=False)
class FetchedRecords:
    """Records of one partition in offset order, as columns over ``data``.

    Row ``i`` is the record at ``offsets[i]``, written at ``timestamps[i]`` (ms; its type in
    ``log_append``), with its key at ``data[key_starts[i]:][:key_lengths[i]]`` (length -1:
    null), its value likewise, and the whole record from ``data[record_starts[i]]`` on.
    Positions are int32 (a fetch is far below 2 GiB), 36 bytes of columns a record.
    ``next_offset`` is where the next fetch starts (past skipped control and aborted batches
    too)."""

    topic: str
    partition: int
    data: bytes
    offsets: npt.NDArray[np.int64]
    timestamps: npt.NDArray[np.int64]
    log_append: npt.NDArray[np.bool_]
    key_starts: npt.NDArray[np.integer[Any]]
    key_lengths: npt.NDArray[np.integer[Any]]
    value_starts: npt.NDArray[np.integer[Any]]
    value_lengths: npt.NDArray[np.integer[Any]]
    record_starts: npt.NDArray[np.integer[Any]]
    next_offset: int

    def __len__(self) -> int:
        return len(self.offsets)

    def values(self) -> list[bytes | None]:
        """Each record's value (None: null)."""
        return _slices(self.data, self.value_starts, self.value_lengths)

    def keys(self) -> list[bytes | None]:
        """Each record's key (None: null)."""
        return _slices(self.data, self.key_starts, self.key_lengths)

    def value_rows(self) -> RawRows:
        """The values where they are in ``data`` (for the decoders, no object per record)."""
        return RawRows(self.data, self.value_starts, self.value_lengths)

    def key_rows(self) -> RawRows:
        """The keys where they are in ``data``."""
        return RawRows(self.data, self.key_starts, self.key_lengths)

    def stamps(self) -> tuple[npt.NDArray[np.int64], dict[int, str]]:
        """Timestamps (ms) and the rows that have none (none: format v2 always has one)."""
        return self.timestamps, {}

    def record(self, row: int) -> RecordCopy:
        """Row ``row`` as a :class:`RecordCopy`, headers parsed (a bad record's)."""
        start = int(self.record_starts[row])
        return RecordCopy(
            self.topic,
            self.partition,
            int(self.offsets[row]),
            _slices(self.data, self.key_starts[row : row + 1], self.key_lengths[row : row + 1])[0],
            _slices(self.data, self.value_starts[row : row + 1], self.value_lengths[row : row + 1])[
                0
            ],
            _headers(self.data, start),
            (_LOG_APPEND if self.log_append[row] else _CREATE_TIME, int(self.timestamps[row])),
        )

    def head(self, rows: int) -> FetchedRecords:
        """The first ``rows`` records (``next_offset`` then the one after them)."""
        if rows >= len(self):
            return self
        return replace(_rows(self, slice(0, rows)), next_offset=int(self.offsets[rows]))

    @classmethod
    def concat(cls, parts: Sequence[FetchedRecords]) -> FetchedRecords:
        """One partition's consecutive fetches as one (their data joined)."""
        if len(parts) == 1:
            return parts[0]
        shifts = np.cumsum([0] + [len(p.data) for p in parts[:-1]])
        last = parts[-1]

        def shifted(name: str) -> npt.NDArray[np.int64]:
            # int64: joined fetches may pass 2 GiB.
            return np.concatenate(
                [
                    getattr(p, name).astype(np.int64) + int(s)
                    for p, s in zip(parts, shifts, strict=True)
                ]
            )

        return cls(
            last.topic,
            last.partition,
            b"".join(p.data for p in parts),
            np.concatenate([p.offsets for p in parts]),
            np.concatenate([p.timestamps for p in parts]),
            np.concatenate([p.log_append for p in parts]),
            shifted("key_starts"),
            np.concatenate([p.key_lengths for p in parts]),
            shifted("value_starts"),
            np.concatenate([p.value_lengths for p in parts]),
            shifted("record_starts"),
            last.next_offset,
        )


_PER_RECORD = (
    "offsets",
    "timestamps",
    "log_append",
    "key_starts",
    "key_lengths",
    "value_starts",
    "value_lengths",
    "record_starts",
)


def _rows(records: FetchedRecords, rows: slice) -> FetchedRecords:
    """The records of ``rows`` (over the same data)."""
    return replace(records, **{name: getattr(records, name)[rows] for name in _PER_RECORD})


def _slices(
    data: bytes, starts: npt.NDArray[np.integer[Any]], lengths: npt.NDArray[np.integer[Any]]
) -> list[bytes | None]:
    ends = starts + lengths
    if len(lengths) and int(lengths.min()) < 0:
        return [
            None if n < 0 else data[a:b]
            for a, b, n in zip(starts.tolist(), ends.tolist(), lengths.tolist(), strict=True)
        ]
    return [data[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]


def _headers(data: bytes, start: int) -> list[tuple[str, bytes | None]] | None:
    """The headers of the record at ``data[start]`` (None when it has none)."""
    length, at = read_varint(data, start)
    stop = at + length
    at += 1  # attributes
    for _ in range(2):  # timestamp and offset deltas
        _, at = read_varint(data, at)
    for _ in range(2):  # key and value
        size, at = read_varint(data, at)
        at += max(size, 0)
    count, at = read_varint(data, at)
    if count <= 0:
        return None
    headers: list[tuple[str, bytes | None]] = []
    for _ in range(count):
        size, at = read_varint(data, at)
        name = data[at : at + size].decode(errors="replace")
        at += size
        size, at = read_varint(data, at)
        headers.append((name, None if size < 0 else data[at : at + size]))
        at += max(size, 0)
    if at > stop:
        raise BrokerError("a fetched record's headers run past the record: a corrupt batch")
    return headers


def _decompress(codec: int, payload: bytes) -> bytes:
    if codec == 1:
        return zlib.decompress(payload, wbits=47)  # gzip or zlib header, as Kafka writes
    import cramjam  # only topics written compressed need it

    if codec == 2:
        if payload.startswith(_XERIAL):
            # Kafka's Java clients frame snappy blocks: a 16-byte header, then blocks of
            # (int32 length, raw snappy).
            out, at = [], 16
            while at < len(payload):
                (size,) = struct.unpack_from(">i", payload, at)
                out.append(bytes(cramjam.snappy.decompress_raw(payload[at + 4 : at + 4 + size])))
                at += 4 + size
            return b"".join(out)
        return bytes(cramjam.snappy.decompress_raw(payload))
    if codec == 3:
        return bytes(cramjam.lz4.decompress(payload))
    if codec == 4:
        return bytes(cramjam.zstd.decompress(payload))
    raise BrokerError(f"a fetched record batch has an unknown compression codec {codec}")


def _scan_all(buf: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    out = np.empty((max(16, len(buf) // 4096), 10), dtype=np.int64)
    while True:
        n = _scan(buf, out)
        if n >= 0:
            return out[:n]
        out = np.empty((2 * out.shape[0], 10), dtype=np.int64)


def _control_is_abort(data: bytes, batch: npt.NDArray[np.int64]) -> bool:
    """Whether a control batch is an abort marker (its record's key: version, type 0)."""
    section = data[int(batch[0]) + _HEADER : int(batch[0] + batch[1])]
    codec = int(batch[6]) & 0x07
    if codec:
        section = _decompress(codec, section)
    _length, at = read_varint(section, 0)
    at += 1
    for _ in range(2):
        _, at = read_varint(section, at)
    size, at = read_varint(section, at)
    if size < 4:
        return False
    (_version, kind) = struct.unpack_from(">hh", section, at)
    return bool(kind == 0)


def _kept(
    data: bytes, batches: npt.NDArray[np.int64], aborted: Sequence[tuple[int, int]]
) -> npt.NDArray[np.bool_]:
    """Which batches a read_committed consumer reads (see the module docstring)."""
    keep: npt.NDArray[np.bool_] = (batches[:, 6] & _CONTROL) == 0
    if not aborted:
        return keep
    pending = sorted(aborted, key=lambda a: a[1])
    skipping: set[int] = set()
    for b, batch in enumerate(batches):
        attributes, pid = int(batch[6]), int(batch[7])
        if pid >= 0:
            last = int(batch[2] + batch[3])
            while pending and pending[0][1] <= last:
                skipping.add(pending.pop(0)[0])
        if attributes & _CONTROL:
            if pid in skipping and _control_is_abort(data, batch):
                skipping.discard(pid)
        elif attributes & _TRANSACTIONAL and pid in skipping:
            keep[b] = False
    return keep


def read_batches(
    topic: str,
    partition: int,
    records: bytes | memoryview,
    fetch_offset: int,
    aborted: Sequence[tuple[int, int]] = (),
) -> FetchedRecords:
    """The records of a Fetch response's batches for one partition, from ``fetch_offset``
    on; ``aborted``: the response's aborted transactions (read_committed), else empty."""
    data = bytes(records)
    buf = np.frombuffer(data, dtype=np.uint8)
    batches = _scan_all(buf)
    where = f"{topic}/{partition}"
    if len(batches) and int(batches[:, 9].min()) != 2:
        at = int(batches[int(np.argmax(batches[:, 9] != 2)), 2])
        raise BrokerError(
            f"{where} holds records in an old message format (magic "
            f"{int(batches[:, 9].min())}, before Kafka 0.11) at offset {at}: read it with "
            "input_reader librdkafka"
        )
    next_offset = fetch_offset
    if len(batches):
        next_offset = max(fetch_offset, int(batches[-1, 2] + batches[-1, 3]) + 1)
    chosen = batches[_kept(data, batches, aborted)] if len(batches) else batches
    codecs = chosen[:, 6] & 0x07
    if len(chosen) and codecs.any():
        pieces, starts, ends, at = [], [], [], 0
        for batch, codec in zip(chosen, codecs.tolist(), strict=True):
            section = data[int(batch[0]) + _HEADER : int(batch[0] + batch[1])]
            if codec:
                try:
                    section = _decompress(codec, section)
                except BrokerError:
                    raise
                except Exception as exc:  # the codecs raise their own types
                    raise BrokerError(
                        f"{where}: the {_CODECS.get(codec, codec)} batch at offset "
                        f"{int(batch[2])} does not decompress: {exc}"
                    ) from exc
            pieces.append(section)
            starts.append(at)
            at += len(section)
            ends.append(at)
        data = b"".join(pieces)
        buf = np.frombuffer(data, dtype=np.uint8)
        section_starts = np.array(starts, dtype=np.int64)
        section_ends = np.array(ends, dtype=np.int64)
    else:
        section_starts = chosen[:, 0] + _HEADER
        section_ends = chosen[:, 0] + chosen[:, 1]
    counts = np.maximum(chosen[:, 8], 0)
    append = np.where((chosen[:, 6] & _LOG_APPEND_TIME) != 0, chosen[:, 5], -1)
    total = int(counts.sum())
    stamps = np.empty((2, total), dtype=np.int64)
    places = np.empty((5, total), dtype=np.int32)
    rows = _records(
        buf,
        section_starts,
        section_ends,
        counts,
        chosen[:, 2],
        chosen[:, 4],
        append,
        stamps,
        places,
    )
    if rows < 0:
        raise BrokerError(
            f"{where}: the record batch at offset {int(chosen[-1 - rows, 2])} is corrupt (a "
            "record runs past its batch)"
        )
    log_append = (append >= 0).any()
    stamped = np.repeat(append >= 0, counts)[:rows] if log_append else np.zeros(rows, np.bool_)
    # Batches start at or before the fetch offset: only the first can hold earlier records.
    skip = int(np.searchsorted(stamps[0, :rows], fetch_offset))
    stamps, places, stamped = stamps[:, skip:rows], places[:, skip:rows], stamped[skip:]
    return FetchedRecords(
        topic,
        partition,
        data,
        stamps[0],
        stamps[1],
        stamped,
        places[0],
        places[1],
        places[2],
        places[3],
        places[4],
        next_offset,
    )


@register_warm_up
def _warm() -> None:
    from connector.kafka.batches import ByteRows, encode_batches

    rows = ByteRows.of([b"k", b"vv"])
    encoded = encode_batches(np.arange(2), np.array([1, 2]), rows, rows, None)
    read_batches("t", 0, encoded.data.tobytes(), 0)
