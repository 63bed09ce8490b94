"""Vectorised Avro encoding of flat records: whole batches from numpy columns.

Avro's binary encoding of a flat record is simple: longs and ints are zigzag varints, booleans
one byte, floats and doubles little-endian IEEE, strings a varint length and UTF-8 bytes.
:func:`encode_fields` computes every record's bytes at once with numpy (no Python per record)
and gives the same bytes as ``fastavro.schemaless_writer`` one record at a time (the unit tests
prove it with hypothesis). Use it through :func:`connector.serde.avro.encode_columns`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from connector.errors import SerdeError

__all__ = ["BULK_KINDS", "BulkKind", "EncodedBatch", "Utf8Column", "encode_fields"]

BulkKind = Literal["long", "int", "boolean", "float", "double", "string"]
BULK_KINDS: tuple[BulkKind, ...] = ("long", "int", "boolean", "float", "double", "string")
_MAX_VARINT_BYTES = 10
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_FIXED_WIDTH_DTYPES: dict[str, np.dtype[Any]] = {
    "float": np.dtype("<f4"),
    "double": np.dtype("<f8"),
}


@dataclass(frozen=True, slots=True, eq=False)
class EncodedBatch:
    """Encoded values back to back in ``data``; value i is ``data[offsets[i]:offsets[i+1]]``."""

    data: bytes
    offsets: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def values(self) -> list[bytes]:
        """The encoded values as one ``bytes`` object each."""
        data = self.data
        return [data[a:b] for a, b in itertools.pairwise(self.offsets.tolist())]


@dataclass(frozen=True, slots=True, eq=False)
class Utf8Column:
    """A column of strings as UTF-8 bytes back to back; row i is ``data[offsets[i]:offsets[i+1]]``.

    It pickles as two buffers (cheap to send to another process) and lets
    :func:`encode_columns` skip encoding the strings again.
    """

    data: bytes
    offsets: npt.NDArray[np.int64]

    @classmethod
    def from_strings(cls, strings: Sequence[str] | npt.NDArray[np.object_]) -> Utf8Column:
        """Encode ``strings`` (str values) as UTF-8."""
        items = strings.tolist() if isinstance(strings, np.ndarray) else list(strings)
        text, lengths = _utf8("strings", items, len(items), per_record=False)
        offsets = np.zeros(len(items) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        assert isinstance(text, bytes)
        return cls(text, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def slice(self, start: int, stop: int) -> Utf8Column:
        """Rows ``start:stop`` as a new column."""
        start, stop, _ = slice(start, stop).indices(len(self))
        stop = max(start, stop)
        low, high = int(self.offsets[start]), int(self.offsets[stop])
        return Utf8Column(self.data[low:high], self.offsets[start : stop + 1] - low)

    def take(self, rows: npt.NDArray[np.integer[Any]]) -> Utf8Column:
        """The given rows, in the given order."""
        index = np.asarray(rows, dtype=np.int64)
        starts, lengths = self.offsets[index], np.diff(self.offsets)[index]
        offsets = np.zeros(index.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(int(offsets[-1]))
        data = np.frombuffer(self.data, dtype=np.uint8)[gather].tobytes()
        return Utf8Column(data, offsets)

    @classmethod
    def from_utf8(cls, values: Sequence[bytes]) -> Utf8Column:
        """A column from values already encoded as UTF-8 (not checked again)."""
        offsets = np.zeros(len(values) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, values), np.int64, count=len(values)), out=offsets[1:])
        return cls(b"".join(values), offsets)

    def values(self) -> list[bytes]:
        """Each row's UTF-8 bytes."""
        data = self.data
        return [data[a:b] for a, b in itertools.pairwise(self.offsets.tolist())]

    def strings(self) -> list[str]:
        """Each row decoded."""
        return [v.decode("utf-8") for v in self.values()]


def _zigzag(name: str, column: Any, kind: BulkKind) -> npt.NDArray[np.uint64]:
    arr = np.asarray(column)
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if arr.dtype.kind not in "iu":
        raise SerdeError(f"field {name!r}: expected integers, got a column of dtype {arr.dtype}")
    if arr.dtype == np.uint64 and int(arr.max()) > np.iinfo(np.int64).max:
        raise SerdeError(f"field {name!r}: value above the Avro long range")
    values = arr.astype(np.int64)
    if kind == "int" and (values.min() < _INT32_MIN or values.max() > _INT32_MAX):
        raise SerdeError(f"field {name!r}: value outside the Avro int (32-bit) range")
    return ((values << 1) ^ (values >> 63)).view(np.uint64)


def _varint_lengths(z: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    lengths = np.ones(z.shape, dtype=np.int64)
    for k in range(1, _MAX_VARINT_BYTES):
        lengths += z >= np.uint64(1 << (7 * k))
    return lengths


def _utf8(
    name: str, column: Any, n: int, *, per_record: bool
) -> tuple[bytes | list[bytes], npt.NDArray[np.int64]]:
    """A string column as UTF-8: joined (ASCII fast path) or one bytes per record, plus lengths."""
    items: Sequence[Any] = column.tolist() if isinstance(column, np.ndarray) else list(column)
    try:
        if not per_record:
            joined = "".join(items)
            if joined.isascii():
                return joined.encode("ascii"), np.fromiter(map(len, items), np.int64, count=n)
        encoded = [s.encode("utf-8") for s in items]
    except (TypeError, AttributeError) as exc:
        raise SerdeError(f"field {name!r}: expected str values ({exc})") from exc
    except UnicodeEncodeError as exc:
        raise SerdeError(f"field {name!r}: string is not valid UTF-8 ({exc})") from exc
    lengths = np.fromiter(map(len, encoded), np.int64, count=n)
    return (encoded if per_record else b"".join(encoded)), lengths


def encode_fields(
    fields: Sequence[tuple[str, BulkKind]],
    columns: Mapping[str, Any],
    *,
    prefix: bytes = b"",
    record: str = "record",
) -> EncodedBatch:
    """Encode flat records whose fields (name, Avro type) are given, from equal-length columns.

    Each value is ``prefix`` followed by the Avro binary encoding of the record. A string
    column may be a sequence of ``str`` or a :class:`Utf8Column`.
    """
    missing = [name for name, _ in fields if name not in columns]
    if missing:
        raise SerdeError(f"{record}: no column for field(s) {', '.join(missing)}")
    n = len(columns[fields[0][0]]) if fields else 0
    for name, _ in fields:
        if len(columns[name]) != n:
            raise SerdeError(f"{record}: column {name!r} has {len(columns[name])} rows, not {n}")

    if n == 0:
        return EncodedBatch(data=b"", offsets=np.zeros(1, dtype=np.int64))
    # A record is the prefix then each field's pieces (a string is a varint length, then its
    # text). Non-text bytes are computed column-wise into a (width, n) matrix, one row per
    # byte position, then the batch is assembled with masked copies: no per-record Python.
    pieces: list[_Varint | _Fixed | _Text] = []
    if prefix:
        row = np.frombuffer(prefix, dtype=np.uint8)[:, None]
        pieces.append(_Fixed(np.broadcast_to(row, (len(prefix), n))))
    texts: list[bytes | list[bytes]] = []
    several_strings = sum(kind == "string" for _, kind in fields) > 1
    for name, kind in fields:
        if kind == "string":
            column = columns[name]
            if isinstance(column, Utf8Column):
                byte_lengths = np.diff(column.offsets)
                text = column.values() if several_strings else column.data
            else:
                text, byte_lengths = _utf8(name, column, n, per_record=several_strings)
            pieces.append(_Varint.of((byte_lengths << 1).view(np.uint64)))
            pieces.append(_Text(byte_lengths))
            texts.append(text)
        else:
            pieces.append(_scalar_piece(name, kind, columns[name], n))

    rows, valid = _byte_rows(pieces, n)
    positional_bytes = rows.T[valid.T] if valid is not None else rows.T.ravel()
    segment_lengths = _segment_lengths(pieces, n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(segment_lengths.sum(axis=1), out=offsets[1:])
    if not texts:
        return EncodedBatch(data=positional_bytes.tobytes(), offsets=offsets)
    # Segments alternate: runs of positional pieces, then text; the first may be empty.
    is_positional = np.tile(np.arange(segment_lengths.shape[1]) % 2 == 0, n)
    positional = np.repeat(is_positional, segment_lengths.ravel())
    out = np.empty(int(offsets[-1]), dtype=np.uint8)
    out[positional] = positional_bytes
    out[~positional] = np.frombuffer(_interleave(texts), dtype=np.uint8)
    return EncodedBatch(data=out.tobytes(), offsets=offsets)


@dataclass(frozen=True, slots=True, eq=False)
class _Varint:
    """Zigzagged values and their varint byte counts."""

    z: npt.NDArray[np.uint64]
    lengths: npt.NDArray[np.int64]

    @classmethod
    def of(cls, z: npt.NDArray[np.uint64]) -> _Varint:
        return cls(z, _varint_lengths(z))

    @property
    def width(self) -> int:
        return int(self.lengths.max()) if self.z.size else 0


@dataclass(frozen=True, slots=True, eq=False)
class _Fixed:
    """Fixed-width bytes as (width, n) rows."""

    rows: npt.NDArray[np.uint8]

    @property
    def width(self) -> int:
        return int(self.rows.shape[0])


@dataclass(frozen=True, slots=True, eq=False)
class _Text:
    """String bytes, copied in by mask; only their lengths matter for the layout."""

    lengths: npt.NDArray[np.int64]


def _byte_rows(
    pieces: Sequence[_Varint | _Fixed | _Text], n: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_] | None]:
    """All non-text bytes as (width, n) rows, plus which of them are real (None: all are)."""
    byte_pieces = [p for p in pieces if not isinstance(p, _Text)]
    rows = np.empty((sum(p.width for p in byte_pieces), n), dtype=np.uint8)
    ragged = any(isinstance(p, _Varint) and p.width > int(p.lengths.min()) for p in byte_pieces)
    valid = np.ones(rows.shape, dtype=np.bool_) if ragged else None
    r = 0
    shifted = np.empty(n, dtype=np.uint64)
    for piece in byte_pieces:
        if isinstance(piece, _Fixed):
            rows[r : r + piece.width] = piece.rows
        else:
            shortest = int(piece.lengths.min())
            for k in range(piece.width):
                np.right_shift(piece.z, np.uint64(7 * k), out=shifted)
                np.bitwise_and(shifted, np.uint64(0x7F), out=shifted)
                row = rows[r + k]
                row[...] = shifted
                if k + 1 < shortest:
                    row |= np.uint8(0x80)
                elif k + 1 < piece.width:
                    row |= (piece.lengths > k + 1).view(np.uint8) << np.uint8(7)
                if valid is not None and k >= shortest:
                    np.greater(piece.lengths, k, out=valid[r + k])
        r += piece.width
    return rows, valid


def _segment_lengths(pieces: Sequence[_Varint | _Fixed | _Text], n: int) -> npt.NDArray[np.int64]:
    """Bytes per record in each segment: positional run, text, positional run, text, ..."""
    columns: list[npt.NDArray[np.int64]] = []
    run = np.zeros(n, dtype=np.int64)
    for piece in pieces:
        if isinstance(piece, _Text):
            columns += [run, piece.lengths]
            run = np.zeros(n, dtype=np.int64)
        elif isinstance(piece, _Fixed):
            run += piece.width
        else:
            run += piece.lengths
    columns.append(run)
    return np.stack(columns, axis=1)


def _scalar_piece(name: str, kind: BulkKind, column: Any, n: int) -> _Varint | _Fixed:
    if kind in ("long", "int"):
        return _Varint.of(_zigzag(name, column, kind))
    arr = np.asarray(column)
    if kind == "boolean":
        if arr.dtype != np.bool_:
            raise SerdeError(f"field {name!r}: expected a bool column, got dtype {arr.dtype}")
        return _Fixed(arr.view(np.uint8).reshape(1, n))
    if arr.dtype.kind not in "fiu":
        raise SerdeError(f"field {name!r}: expected numbers, got a column of dtype {arr.dtype}")
    with np.errstate(over="ignore"):  # overflow is detected just below
        wide = np.ascontiguousarray(arr, dtype=_FIXED_WIDTH_DTYPES[kind])
    if np.any(np.isfinite(arr) & ~np.isfinite(wide)):
        raise SerdeError(f"field {name!r}: value outside the Avro {kind} range")
    return _Fixed(wide.view(np.uint8).reshape(n, wide.dtype.itemsize).T)


def _interleave(texts: list[bytes | list[bytes]]) -> bytes:
    """All string fields' bytes in record-major order (record 0's strings first)."""
    if len(texts) == 1 and isinstance(texts[0], bytes):
        return texts[0]
    per_field = [t for t in texts if isinstance(t, list)]
    return b"".join(itertools.chain.from_iterable(zip(*per_field, strict=True)))
