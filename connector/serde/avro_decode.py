"""Bulk decoding of Avro bodies of flat records into engine columns, exactly as fastavro.

A batch's bodies are wrapped into one in-memory Avro object container file (a header with the
schema, then one block holding every body back to back) and read by ``polars.read_avro``,
many times faster than ``fastavro.schemaless_reader`` one record at a time. The result is what
fastavro gives per record, bit for bit, bad records included:

* A concatenation hides record boundaries, so each decoded row's canonical encoded length
  (zigzag varint widths, string lengths plus their length varints, 1 byte per boolean, 4 and 8
  per float and double) must equal its body's length. No field is ever read from fewer bytes
  than its canonical encoding and polars never reads past the block, so if every row of a block
  passes, every row was read from exactly its own bytes and every field was encoded
  canonically (the only encoding of its value), which fastavro decodes to the same value.
* Bytes that lengths leave open are checked directly: a boolean byte must be 0 or 1 (fastavro
  reads any other as true) and the last byte of a 10-byte varint must be 1 (polars drops bits
  past 64). An ``int`` is read as a ``long`` and must fit 32 bits.
* When a batch fails (polars raises, or a row fails a check), a vectorised scan of the Avro
  grammar finds the bodies that are not exactly one record. Fastavro decodes those one at a
  time; the others are read again without them, so that each row is read from its own bytes
  and can be judged alone: rows that fail a check go to fastavro too. Fastavro decides every
  row it decodes; bytes left after a record make it undecodable (as in
  :func:`connector.serde.avro.decode_value`).

Float NaNs are quieted as fastavro's float-to-double conversion does, so that they are
bit-identical too. On a batch with a truncated body, polars may panic (caught; the Rust panic
message goes to stderr) before the scan takes over. :func:`resolve_writer` reads bodies written
with another schema (Confluent framing) as the reader's fields.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import fastavro
import numpy as np
import numpy.typing as npt
import polars as pl

from connector.serde.avro import without_logical_types
from connector.serde.avro_bulk import BULK_KINDS, BulkKind
from connector.serde.rows import RawRows, gather
from engine.log import Column, StringColumn

__all__ = [
    "COLUMN_DTYPES",
    "AvroRows",
    "FlatDecoder",
    "OutputField",
    "field_kind",
    "resolve_writer",
    "string_column",
    "varint_widths",
]

logger = logging.getLogger(__name__)

OutputField: TypeAlias = tuple[str, BulkKind, BulkKind]
"""An output column: field name, its type in the writer's schema, its type in the output."""

COLUMN_DTYPES: dict[BulkKind, np.dtype[Any]] = {
    "long": np.dtype(np.int64),
    "int": np.dtype(np.int32),
    "boolean": np.dtype(np.bool_),
    "float": np.dtype(np.float32),
    "double": np.dtype(np.float64),
    "string": np.dtype(np.object_),
}
_SYNC = bytes(range(16))  # any 16 bytes: they only need to repeat the header's
_SMALL = 16  # a polars read costs about 50 µs however small: ten fastavro records
_READ_BUDGET = 4  # rows polars may read per batch row before the rest goes to fastavro
_INT_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_LONG_BYTES = 10
_FIXED_WIDTHS = {"boolean": 1, "float": 4, "double": 8}
_POLARS_ERRORS = (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError, ValueError)
_PROMOTIONS: dict[BulkKind, tuple[BulkKind, ...]] = {
    "int": ("int", "long", "float", "double"),
    "long": ("long", "float", "double"),
    "float": ("float", "double"),
    "double": ("double",),
    "boolean": ("boolean",),
    "string": ("string",),
}


@dataclass(frozen=True, slots=True, eq=False)
class AvroRows:
    """Decoded bodies: ``columns`` hold the rows where ``ok`` is set, in input order.

    ``errors`` maps every other row to what went wrong.
    """

    columns: Mapping[str, Column]
    ok: npt.NDArray[np.bool_]
    errors: Mapping[int, str]


def field_kind(spec: Any) -> BulkKind | None:
    """The bulk kind of a field's type (``"long"`` or ``{"type": "long", ...}``), else None."""
    if isinstance(spec, dict):
        spec = spec.get("type")
    return next((kind for kind in BULK_KINDS if spec == kind), None)


def varint_widths(z: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    """Bytes in the canonical varint encoding of each (zigzagged) value."""
    widths = np.ones(z.shape, dtype=np.int64)
    top = int(z.max()) if z.size else 0
    for k in range(1, _LONG_BYTES):
        if top < 1 << (7 * k):
            break
        widths += z >= np.uint64(1 << (7 * k))
    return widths


def string_column(strings: pl.Series) -> StringColumn:
    """Dictionary-encode a polars string series (its values come in no particular order).

    Rows are grouped by a 64-bit hash, then compared with their group's representative; on a
    collision (never seen) polars' exact Enum cast is used instead.
    """
    n = len(strings)
    if n == 0:
        return StringColumn(np.empty(0, dtype=np.int32), np.empty(0, dtype=object))
    hashes = strings.hash().to_numpy()
    order = np.argsort(hashes)
    ordered = hashes[order]
    first = np.empty(n, dtype=np.bool_)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    codes = np.empty(n, dtype=np.int32)
    codes[order] = np.cumsum(first, dtype=np.int32) - 1
    distinct = _take(strings, order[first])
    if not bool((_take(distinct, codes) == strings).all()):
        distinct = strings.unique()
        codes = strings.cast(pl.Enum(distinct)).to_physical().to_numpy().astype(np.int32)
    values: npt.NDArray[np.object_] = distinct.to_numpy()  # an object array of str
    return StringColumn(codes, values)


def _take(series: pl.Series, rows: npt.NDArray[np.integer[Any]]) -> pl.Series:
    """``series.gather(rows)``, without the overhead of a polars query (some 50 µs)."""
    return series[pl.Series(rows, dtype=pl.UInt32)]


def _zigzag_varint(value: int) -> bytes:
    z = (value << 1) ^ (value >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _avro_string(text: str) -> bytes:
    raw = text.encode()
    return _zigzag_varint(len(raw)) + raw


class FlatDecoder:
    """Decodes bodies written with one record schema into the requested output columns.

    ``writer`` is the fastavro-parsed schema of the bodies; ``outputs`` name the columns to
    produce, each with the field's type in ``writer`` and in the output (equal, or a promotion
    that Avro allows). A value is ``skip`` bytes of framing (checked by the caller), then the
    body. Bulk decoding needs every field of ``writer`` to be of a type in
    :data:`connector.serde.avro_bulk.BULK_KINDS`; otherwise fastavro decodes every body.
    """

    def __init__(self, writer: dict[str, Any], outputs: Sequence[OutputField], *, skip: int = 0):
        self.writer = writer
        self.name = str(writer.get("name", "record"))
        self.outputs = tuple(outputs)
        self.skip = skip
        kinds = [(str(f["name"]), field_kind(f["type"])) for f in writer.get("fields", ())]
        layout = [(name, kind) for name, kind in kinds if kind is not None]
        # A record without fields goes through fastavro too: only empty bodies are valid.
        self.bulk = bool(kinds) and len(layout) == len(kinds)
        self.layout = tuple(layout) if self.bulk else ()
        self.columns = [name for name, _ in self.layout]
        container_fields: list[dict[str, Any]] = [
            {"name": n, "type": "long" if k == "int" else k} for n, k in layout
        ]
        if skip:  # framing is read as a leading fixed field, which saves copying the bodies
            framing = "_".join(["framing", *(n for n, _ in layout)])  # unlike any field name
            fixed = {"type": "fixed", "name": framing, "size": skip}
            container_fields.insert(0, {"name": framing, "type": fixed})
        meta = {
            "avro.schema": json.dumps({"type": "record", "name": "R", "fields": container_fields}),
            "avro.codec": "null",
        }
        self.header = b"".join(
            [b"Obj\x01", _zigzag_varint(len(meta))]
            + [_avro_string(key) + _avro_string(value) for key, value in meta.items()]
            + [b"\x00", _SYNC]
        )

    def decode(
        self, values: Sequence[bytes] | RawRows, lengths: npt.NDArray[np.int64] | None = None
    ) -> AvroRows:
        """Decode each value's body; rows that fastavro would reject (or leave bytes of) fail.

        ``values`` may be :class:`~connector.serde.rows.RawRows` (no nulls: null values are
        the caller's problem), and ``lengths`` give their lengths, if the caller has them.
        """
        return _Batch(self, values, lengths).run()


class _Batch:
    """One :meth:`FlatDecoder.decode` call: reads with polars, falls back per row.

    ``framed`` says that every body is known to be exactly one record by the Avro grammar, so
    that polars reads each from exactly its own bytes (or fails), whatever surrounds it.
    """

    def __init__(
        self,
        decoder: FlatDecoder,
        values: Sequence[bytes] | RawRows,
        lengths: npt.NDArray[np.int64] | None,
        *,
        framed: bool = False,
    ):
        self.decoder = decoder
        self.skip = decoder.skip
        self.framed = framed
        self.n = n = len(values)
        if lengths is None:
            lengths = (
                np.maximum(values.lengths, 0)
                if isinstance(values, RawRows)
                else np.fromiter(map(len, values), np.int64, count=n)
            )
        self.offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        size = int(self.offsets[-1])
        # The whole batch's container, built with a single copy of the values.
        prefix = decoder.header + _zigzag_varint(n) + _zigzag_varint(size)
        if isinstance(values, RawRows):
            self.container = gather(values, prefix, _SYNC)
        else:
            self.container = b"".join([prefix, *values, _SYNC])
        self.base = len(prefix)
        self.bytes = np.frombuffer(self.container, dtype=np.uint8, count=size, offset=self.base)
        self.ok = np.zeros(n, dtype=np.bool_)
        self.errors: dict[int, str] = {}
        self.numbers = {
            name: np.zeros(n, dtype=COLUMN_DTYPES[out])
            for name, _, out in decoder.outputs
            if out != "string"
        }
        # Per string field: the strings of some ok rows, with their rows; in no order.
        self.texts: dict[str, list[tuple[npt.NDArray[np.int64], pl.Series]]] = {
            name: [] for name, _, out in decoder.outputs if out == "string"
        }
        self.one_by_one = 0

    def run(self) -> AvroRows:
        self._decode()
        if self.one_by_one:
            logger.debug(
                "%s of %s %s bodies decoded one at a time",
                self.one_by_one,
                self.n,
                self.decoder.name,
            )
        every = bool(self.ok.all())
        columns: dict[str, Column] = {}
        for name, _, out in self.decoder.outputs:
            if out != "string":
                columns[name] = self.numbers[name] if every else self.numbers[name][self.ok]
                continue
            pieces = self.texts[name]
            strings = (
                pl.concat([s for _, s in pieces]) if pieces else pl.Series([], dtype=pl.String)
            )
            rows = np.concatenate([r for r, _ in pieces]) if pieces else np.zeros(0, np.int64)
            if np.any(rows[1:] < rows[:-1]):
                strings = _take(strings, np.argsort(rows, kind="stable"))
            columns[name] = string_column(strings)
        return AvroRows(columns, self.ok, self.errors)

    def _decode(self) -> None:
        if not self.decoder.bulk or self.n <= _SMALL:
            self._rowwise(np.arange(self.n))
            return
        if self.framed:
            self._decode_framed()
            return
        try:
            frame: pl.DataFrame | None = self._read(0, self.n)
        except _POLARS_ERRORS:
            frame = None
        good = None if frame is None else self._verify(frame, 0, self.n)
        if frame is not None and good is not None and good.all():
            self._take(frame, 0, self.n, good)
            return
        exact = self._exact()
        if frame is not None and good is not None and exact.all():
            # Every row was read from its own bytes: fastavro decides those that failed.
            self._take(frame, 0, self.n, good)
            return
        # Some bodies are not exactly one record, which misaligns the rest: fastavro decodes
        # those, the others are read again without them.
        self._rowwise(np.flatnonzero(~exact))
        rows = np.flatnonzero(exact)
        lengths = np.diff(self.offsets)[rows]
        values = [self._value(i) for i in rows.tolist()]
        framed = _Batch(self.decoder, values, lengths, framed=True)
        framed._decode()
        self.one_by_one += framed.one_by_one
        self.ok[rows] = framed.ok
        self.errors.update((int(rows[i]), error) for i, error in framed.errors.items())
        for name, numbers in framed.numbers.items():
            self.numbers[name][rows] = numbers
        for name, pieces in framed.texts.items():
            self.texts[name] += [(rows[local], series) for local, series in pieces]

    def _decode_framed(self) -> None:
        """Read ranges with polars, halving those it fails on (invalid UTF-8, say)."""
        budget = _READ_BUDGET * self.n
        pending = [(0, self.n)]
        while pending:
            lo, hi = pending.pop()
            if hi - lo <= _SMALL or hi - lo > budget:
                self._rowwise(np.arange(lo, hi))
                continue
            budget -= hi - lo
            try:
                frame = self._read(lo, hi)
            except _POLARS_ERRORS:
                mid = (lo + hi) // 2
                pending += [(mid, hi), (lo, mid)]
                continue
            self._take(frame, lo, hi, self._verify(frame, lo, hi))

    def _exact(self) -> npt.NDArray[np.bool_]:
        """Which bodies hold exactly one record by the Avro grammar (values unchecked).

        Fields are stepped through for all bodies at once, never past a body's own end;
        varints longer than 10 bytes (which polars rejects) count as inexact.
        """
        pos, end = self.offsets[:-1] + self.skip, self.offsets[1:]
        exact = pos <= end
        for _, kind in self.decoder.layout:
            if kind in _FIXED_WIDTHS:
                pos += _FIXED_WIDTHS[kind]
            else:
                width = np.zeros(self.n, dtype=np.int64)
                value = np.zeros(self.n, dtype=np.uint64)
                going = exact.copy()
                for k in range(_LONG_BYTES):
                    rows = np.flatnonzero(going)
                    at = pos[rows] + k
                    inside = at < end[rows]
                    exact[rows[~inside]] = False
                    rows, at = rows[inside], at[inside]
                    byte = self.bytes[at].astype(np.uint64)
                    value[rows] |= (byte & np.uint64(0x7F)) << np.uint64(7 * k)
                    width[rows] += 1
                    going[:] = False
                    going[rows] = byte >= 0x80
                exact &= ~going
                pos += width
                if kind == "string":
                    length = (value >> np.uint64(1)).astype(np.int64)
                    exact &= ((value & np.uint64(1)) == 0) & (length <= end - pos)
                    pos += np.where(exact, length, 0)
            exact &= pos <= end
            np.minimum(pos, end, out=pos)
        exact &= pos == end
        return exact

    def _read(self, lo: int, hi: int) -> pl.DataFrame:
        container = self.container
        if (lo, hi) != (0, self.n):
            start, stop = self.base + int(self.offsets[lo]), self.base + int(self.offsets[hi])
            counts = _zigzag_varint(hi - lo) + _zigzag_varint(stop - start)
            body = memoryview(self.container)[start:stop]
            container = b"".join([self.decoder.header, counts, body, _SYNC])
        frame = pl.read_avro(io.BytesIO(container), columns=self.decoder.columns)
        if frame.height != hi - lo:
            raise ValueError(f"polars read {frame.height} records, not {hi - lo}")
        return frame

    def _verify(self, frame: pl.DataFrame, lo: int, hi: int) -> npt.NDArray[np.bool_]:
        """Which rows of ``frame`` provably hold what fastavro decodes from their bodies."""
        starts = self.offsets[lo:hi]
        total = np.full(hi - lo, self.skip, dtype=np.int64)  # bytes up to the field
        bad = np.zeros(hi - lo, dtype=np.bool_)
        last = max(self.bytes.size - 1, 0)
        for name, kind in self.decoder.layout:
            column = frame.get_column(name)
            if kind in ("long", "int"):
                values = column.to_numpy()
                widths = varint_widths(((values << 1) ^ (values >> 63)).view(np.uint64))
                if kind == "int":
                    low, high = _INT_RANGES["int"]
                    bad |= (values < low) | (values > high)
                elif widths.size and int(widths.max()) == _LONG_BYTES:
                    rows = np.flatnonzero(widths == _LONG_BYTES)
                    at = np.minimum(starts[rows] + total[rows] + _LONG_BYTES - 1, last)
                    bad[rows] |= self.bytes[at] != 1
                total += widths
            elif kind == "boolean":
                bad |= self.bytes[np.minimum(starts + total, last)] > 1
                total += 1
            elif kind in ("float", "double"):
                total += 4 if kind == "float" else 8
            else:
                lengths = column.str.len_bytes().to_numpy().astype(np.int64)
                total += varint_widths((lengths << 1).view(np.uint64)) + lengths
        bad |= total != self.offsets[lo + 1 : hi + 1] - starts
        return ~bad

    def _take(self, frame: pl.DataFrame, lo: int, hi: int, good: npt.NDArray[np.bool_]) -> None:
        """Keep the ``good`` rows of ``frame`` (rows lo..hi); fastavro decodes the others."""
        every = bool(good.all())
        rows = np.arange(lo, hi)[good]
        self.ok[rows] = True
        for name, kind, out in self.decoder.outputs:
            column = frame.get_column(name)
            if out == "string":
                self.texts[name].append((rows, column if every else column.filter(good)))
                continue
            values = column.to_numpy()
            if kind == "float":
                nan = np.isnan(values)
                if nan.any():  # as fastavro's float -> double conversion does
                    values = values.copy()
                    with np.errstate(invalid="ignore"):  # signalling NaNs signal
                        values[nan] = values[nan].astype(np.float64).astype(np.float32)
            elif kind in ("int", "long") and out in ("float", "double"):
                values = values.astype(np.float64)  # fastavro promotes via a Python float
            self.numbers[name][rows] = values if every else values[good]
        if not every:
            self._rowwise(np.arange(lo, hi)[~good])

    def _value(self, row: int) -> bytes:
        """Value ``row``, from the container (where every value is, back to back)."""
        start = self.base + int(self.offsets[row])
        return self.container[start : self.base + int(self.offsets[row + 1])]

    def _rowwise(self, rows: npt.NDArray[np.int64]) -> None:
        self.one_by_one += len(rows)
        texts: dict[str, list[str]] = {name: [] for name in self.texts}
        done: list[int] = []
        for row in rows.tolist():
            problem = self._one(row, texts)
            if problem:
                self.errors[row] = problem
            else:
                done.append(row)
        self.ok[done] = True
        for name, strings in texts.items():
            series = pl.Series(name, strings, dtype=pl.String)
            self.texts[name].append((np.array(done, dtype=np.int64), series))

    def _one(self, row: int, texts: dict[str, list[str]]) -> str:
        """Decode body ``row`` with fastavro and store its outputs; say why not if it can't."""
        body, name = self._value(row)[self.skip :], self.decoder.name
        stream = io.BytesIO(body)
        try:
            record = fastavro.schemaless_reader(stream, self.decoder.writer)
        except Exception as exc:  # fastavro raises many types on malformed input
            return f"value does not decode as {name}: {type(exc).__name__} {exc}".rstrip()
        if stream.tell() != len(body):
            return f"{name} value has {len(body) - stream.tell()} trailing bytes after the record"
        if not isinstance(record, dict):
            return f"value does not decode as {name}: not a record"
        values: list[Any] = []
        for field, _, out in self.decoder.outputs:
            value = record[field]
            if out in _INT_RANGES:
                low, high = _INT_RANGES[out]
                if not low <= value <= high:
                    return f"{name} field {field!r} holds {value}, outside the Avro {out} range"
            elif out in ("float", "double"):
                value = float(value)  # the promotion fastavro makes, before any narrowing
            values.append(value)
        for (field, _, out), value in zip(self.decoder.outputs, values, strict=True):
            if out == "string":
                texts[field].append(value)
            else:
                self.numbers[field][row] = value
        return ""


def resolve_writer(
    reader: str,
    outputs: Sequence[tuple[str, BulkKind]],
    defaults: Mapping[str, Any],
    text: str,
    *,
    skip: int = 0,
) -> tuple[FlatDecoder, dict[str, Any]] | str:
    """How to read bodies written with schema ``text`` as record ``reader``'s ``outputs``.

    Returns a decoder of the fields the writer has and the defaults of those it lacks, or why
    it cannot. As Avro schema resolution (and fastavro) does: both records have the same
    unqualified name, fields match by name, a field may be promoted (int to long, float or
    double; long to float or double; float to double), a reader field missing from the writer
    takes its default. Values start with ``skip`` bytes of framing.
    """
    try:
        parsed = fastavro.parse_schema(without_logical_types(json.loads(text)))
    except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as exc:
        return f"is not a valid Avro schema: {exc}"
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return "is not an Avro record schema"
    if str(parsed["name"]).rsplit(".", 1)[-1] != reader.rsplit(".", 1)[-1]:
        return f"is record {parsed['name']}, not {reader}"
    fields = {str(f["name"]): f["type"] for f in parsed["fields"]}
    plan: list[OutputField] = []
    missing: dict[str, Any] = {}
    for name, kind in outputs:
        if name not in fields:
            if name not in defaults:
                return f"has no field {name!r} and {reader} gives it no default"
            missing[name] = defaults[name]
            continue
        written = field_kind(fields[name])
        if written is None or kind not in _PROMOTIONS[written]:
            return f"has field {name!r} of type {fields[name]!r}, which cannot be read as {kind}"
        plan.append((name, written, kind))
    return FlatDecoder(parsed, plan, skip=skip), missing
