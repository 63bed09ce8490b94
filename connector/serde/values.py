"""Record values to engine columns and back, for the Kafka reader and the output writer.

:func:`value_decoder` builds a :class:`ValueDecoder` that turns one partition's batch of raw
records into columns (numpy arrays; strings as :class:`engine.log.StringColumn`) and reports
every bad record with its reason, so that the reader can dead-letter it or fail the job:

* ``null-value``: the value is null (a tombstone);
* ``wrong-key-type``: the key does not match the key format (``decimal``: ASCII ``-?[0-9]+``
  within the 64-bit range, as the generator writes; ``string``: valid UTF-8; ``any``: no check;
  a null key is wrong for ``decimal`` and ``string``);
* ``unknown-schema-id``: an ``avro-confluent`` value names an id the registry does not know;
* ``undecodable``: anything else (bad framing, a body that fastavro would reject or leave bytes
  of, a writer schema that cannot be read as the reader's, JSON of the wrong shape).

Columns are the schema's fields except ``exclude`` (by default the value's ``ts``: the event
time is the Kafka timestamp unless ``--event-time`` names a field, see
:mod:`connector.serde.event_time`), typed long: int64, int: int32, boolean: bool, float: float32,
double: float64, string: StringColumn. Avro values are decoded in bulk by
:mod:`connector.serde.avro_decode`, exactly as fastavro decodes them one at a time.
:func:`value_encoder` does the reverse for output topics.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeAlias, cast

import numpy as np
import numpy.typing as npt
import polars as pl

from connector.config import KEY_FORMATS, VALUE_FORMATS, KeyFormat, ValueFormat
from connector.errors import BrokerError, ConfigError, SerdeError
from connector.serde.avro import AvroSchema, confluent_header, encode_columns
from connector.serde.avro_bulk import BULK_KINDS, BulkKind, EncodedBatch
from connector.serde.avro_decode import (
    COLUMN_DTYPES,
    FlatDecoder,
    field_kind,
    resolve_writer,
    string_column,
)
from connector.serde.rows import RawRows, ascii_rows, gather, valid_decimals
from engine.log import Column, StringColumn, concat_columns, take_column
from engine.output import ABSENT

__all__ = [
    "KEY_FORMATS",
    "VALUE_FORMATS",
    "BadReason",
    "DecodedBatch",
    "JsonRecordEncoder",
    "KeyFormat",
    "RecordProblem",
    "SchemaRegistry",
    "ValueDecoder",
    "ValueEncoder",
    "ValueFormat",
    "check_schema",
    "encoded_batch",
    "value_decoder",
    "value_encoder",
]

logger = logging.getLogger(__name__)

#: Why a record is bad; ``bad-timestamp`` is the reader's (event time out of range).
BadReason = Literal[
    "undecodable", "unknown-schema-id", "null-value", "wrong-key-type", "bad-timestamp"
]

_HEADER_LEN = 5
_LONGEST_SAFE_DECIMAL = 18  # digits that always fit in an int64
_INT_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INTEGERS = (int, np.integer)
_NUMBERS = (int, float, np.integer, np.floating)
_Problems: TypeAlias = dict[int, tuple[BadReason, str]]


class SchemaRegistry(Protocol):
    """The registry lookup the decoder needs; ``confluent_kafka``'s SchemaRegistryClient has it.

    An unknown id must raise an exception whose ``http_status_code`` is 404.
    """

    def get_schema(self, schema_id: int) -> Any:
        """The registered schema (with ``schema_str`` and ``schema_type``) of ``schema_id``."""
        ...


@dataclass(frozen=True, slots=True)
class RecordProblem:
    """Why row ``row`` of a batch is bad; ``detail`` is a message for humans."""

    row: int
    reason: BadReason
    detail: str


@dataclass(frozen=True, slots=True, eq=False)
class DecodedBatch:
    """The good rows' columns (in input order), which rows were good, and the bad rows' problems."""

    columns: Mapping[str, Column]
    good: npt.NDArray[np.bool_]
    problems: tuple[RecordProblem, ...]


@dataclass(frozen=True, slots=True, eq=False)
class _Decoded:
    """A format's result over the rows it was given: columns of ok rows, problems of others."""

    columns: dict[str, Column]
    ok: npt.NDArray[np.bool_]
    problems: _Problems


@dataclass(frozen=True, slots=True, eq=False)
class _Writer:
    """How to read values written with one registered schema: a decoder, or why not."""

    decoder: FlatDecoder | None
    defaults: Mapping[str, Any]
    problem: str = ""


class ValueDecoder:
    """Decodes batches of raw records into columns; build it with :func:`value_decoder`."""

    def __init__(
        self,
        fmt: ValueFormat,
        schema: AvroSchema,
        key_format: KeyFormat,
        outputs: Sequence[tuple[str, BulkKind]],
        registry: SchemaRegistry | None,
    ):
        self.fields: tuple[str, ...] = tuple(name for name, _ in outputs)
        self._fmt = fmt
        self._schema = schema
        self._key_format = key_format
        self._outputs = tuple(outputs)
        self._registry = registry
        self._defaults = _defaults(schema)
        self._flat = FlatDecoder(schema.raw, [(n, k, k) for n, k in outputs])
        self._writers: dict[int, _Writer | None] = {}

    def decode(
        self,
        values: Sequence[bytes | None] | RawRows,
        keys: Sequence[bytes | None] | RawRows,
    ) -> DecodedBatch:
        """Decode one batch; row i is the record with value ``values[i]`` and key ``keys[i]``
        (lists, or :class:`~connector.serde.rows.RawRows` where they are in a buffer)."""
        n = len(values)
        if len(keys) != n:
            raise SerdeError(f"a batch has {n} values but {len(keys)} keys; pass one key per value")
        problems: _Problems = {}
        if isinstance(values, RawRows):
            for row in np.flatnonzero(values.nulls()).tolist():
                problems[row] = ("null-value", "value is null (a tombstone)")
            lengths = np.maximum(values.lengths, 0)
        else:
            try:
                lengths = np.fromiter(map(len, values), np.int64, count=n)  # type: ignore[arg-type]
            except TypeError:  # a null value
                for row, value in enumerate(values):
                    if value is None:
                        problems[row] = ("null-value", "value is null (a tombstone)")
                lengths = np.fromiter((len(v or b"") for v in values), np.int64, count=n)
        if self._key_format != "any":
            found = (
                _raw_key_problems(keys, self._key_format)
                if isinstance(keys, RawRows)
                else _key_problems(keys, self._key_format)
            )
            for row, detail in found.items():
                problems.setdefault(row, ("wrong-key-type", detail))
        rows = np.arange(n, dtype=np.int64)
        if problems:
            rows = np.setdiff1d(rows, np.fromiter(problems, np.int64, count=len(problems)))
        # Rows with a problem already are not decoded; the others have a value.
        candidates: Sequence[bytes] | RawRows
        if isinstance(values, RawRows):
            candidates = values.take(rows) if problems else values
        else:
            candidates = cast(
                "Sequence[bytes]", [values[i] for i in rows.tolist()] if problems else values
            )
        lengths = lengths[rows] if problems else lengths
        if self._fmt == "avro":
            result = self._flat.decode(candidates, lengths)
            decoded = _Decoded(
                dict(result.columns),
                result.ok,
                {row: ("undecodable", detail) for row, detail in result.errors.items()},
            )
        elif self._fmt == "avro-confluent":
            decoded = self._decode_confluent(candidates, lengths)
        else:
            texts = candidates.rows() if isinstance(candidates, RawRows) else candidates
            decoded = self._decode_json(cast("Sequence[bytes]", texts))
        good = np.zeros(n, dtype=np.bool_)
        good[rows[decoded.ok]] = True
        for local, problem in decoded.problems.items():
            problems[int(rows[local])] = problem
        listed = tuple(RecordProblem(row, *problems[row]) for row in sorted(problems))
        return DecodedBatch(decoded.columns, good, listed)

    def _decode_confluent(
        self, values: Sequence[bytes] | RawRows, lengths: npt.NDArray[np.int64]
    ) -> _Decoded:
        m = len(values)
        raw = values if isinstance(values, RawRows) else None
        listed = cast("Sequence[bytes]", values)
        joined = np.frombuffer(gather(raw) if raw is not None else b"".join(listed), np.uint8)
        framed = lengths >= _HEADER_LEN
        starts = np.cumsum(lengths) - lengths
        heads = np.zeros((m, _HEADER_LEN), dtype=np.uint8)
        heads[framed] = joined[starts[framed, None] + np.arange(_HEADER_LEN)]
        framed &= heads[:, 0] == 0
        ids = np.ascontiguousarray(heads[:, 1:]).view(">u4").ravel().astype(np.int64)
        problems: _Problems = {}
        for row in np.flatnonzero(~framed).tolist():
            value = raw.row(row) if raw is not None else listed[row]
            problems[row] = ("undecodable", _framing_problem(cast("bytes", value)))
        ok = np.zeros(m, dtype=np.bool_)
        parts: list[tuple[npt.NDArray[np.int64], dict[str, Column]]] = []
        for schema_id in np.unique(ids[framed]).tolist():
            group = np.flatnonzero(framed & (ids == schema_id))
            writer = self._writer(schema_id)
            if writer is None or writer.decoder is None:
                reason: BadReason = "unknown-schema-id" if writer is None else "undecodable"
                detail = (
                    f"schema id {schema_id} is not in the schema registry"
                    if writer is None
                    else writer.problem
                )
                problems.update((row, (reason, detail)) for row in group.tolist())
                continue
            grouped: Sequence[bytes] | RawRows
            if len(group) == m:
                grouped = values
            elif raw is not None:
                grouped = raw.take(group)
            else:
                grouped = [listed[i] for i in group.tolist()]
            result = writer.decoder.decode(grouped, lengths[group])
            problems.update(
                (int(group[local]), ("undecodable", detail))
                for local, detail in result.errors.items()
            )
            ok[group[result.ok]] = True
            count = int(result.ok.sum())
            columns = {
                name: _constant(kind, writer.defaults[name], count)
                if name in writer.defaults
                else result.columns[name]
                for name, kind in self._outputs
            }
            parts.append((group[result.ok], columns))
        return _Decoded(self._merge(parts), ok, problems)

    def _merge(
        self, parts: list[tuple[npt.NDArray[np.int64], dict[str, Column]]]
    ) -> dict[str, Column]:
        """Columns of several schema ids' rows, back in row order."""
        if len(parts) == 1:
            return parts[0][1]
        if not parts:
            return _empty_columns(self._outputs)
        order = np.argsort(np.concatenate([rows for rows, _ in parts]), kind="stable")
        return {
            name: take_column(concat_columns([columns[name] for _, columns in parts]), order)
            for name, _ in self._outputs
        }

    def _writer(self, schema_id: int) -> _Writer | None:
        """The cached way to read ``schema_id``'s values; None if the registry lacks the id."""
        if schema_id in self._writers:
            return self._writers[schema_id]
        assert self._registry is not None  # value_decoder requires one for avro-confluent
        try:
            registered = self._registry.get_schema(schema_id)
        except Exception as exc:  # the client raises its own error types
            if getattr(exc, "http_status_code", None) == 404:
                logger.warning("schema id %s is not in the schema registry", schema_id)
                self._writers[schema_id] = None
                return None
            raise BrokerError(
                f"looking up schema id {schema_id} in the schema registry failed: {exc}; "
                "check that the registry is reachable"
            ) from exc
        what = f"writer schema id {schema_id}"
        schema_type = getattr(registered, "schema_type", None) or "AVRO"
        if schema_type != "AVRO":
            writer = _Writer(None, {}, f"{what} is a {schema_type} schema, not Avro")
        else:
            text = str(registered.schema_str)
            resolved = resolve_writer(
                self._schema.name, self._outputs, self._defaults, text, skip=_HEADER_LEN
            )
            if isinstance(resolved, str):
                writer = _Writer(None, {}, f"{what} {resolved}")
            else:
                writer = _Writer(*resolved)
        if writer.problem:
            logger.warning("%s", writer.problem)
        self._writers[schema_id] = writer
        return writer

    def _decode_json(self, values: Sequence[bytes]) -> _Decoded:
        m = len(values)
        ok = np.zeros(m, dtype=np.bool_)
        problems: _Problems = {}
        cells: dict[str, list[Any]] = {name: [] for name, _ in self._outputs}
        for row, value in enumerate(values):
            try:
                record = json.loads(value.decode("utf-8"))
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
                problems[row] = ("undecodable", f"value is not UTF-8 JSON: {exc}")
                continue
            if not isinstance(record, dict):
                kind = type(record).__name__
                problems[row] = ("undecodable", f"value is a JSON {kind}, not an object")
                continue
            got: list[Any] = []
            for name, kind in self._outputs:
                if name in record:
                    cell, problem = _json_cell(kind, record[name])
                elif name in self._defaults:
                    cell, problem = self._defaults[name], ""
                else:
                    cell, problem = None, "is missing"
                if problem:
                    problems[row] = ("undecodable", f"field {name!r} {problem}")
                    break
                got.append(cell)
            else:
                ok[row] = True
                for (name, _), cell in zip(self._outputs, got, strict=True):
                    cells[name].append(cell)
        columns: dict[str, Column] = {}
        for name, kind in self._outputs:
            if kind == "string":
                columns[name] = string_column(pl.Series(name, cells[name], dtype=pl.String))
            else:
                columns[name] = np.array(cells[name], dtype=COLUMN_DTYPES[kind])
        return _Decoded(columns, ok, problems)


def _json_cell(kind: BulkKind, value: Any) -> tuple[Any, str]:
    """A JSON value as a cell of ``kind``, or why it cannot be one."""
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        if type(value) is not int:
            return None, f"is {_json_type(value)}, not an integer"
        if not low <= value <= high:
            return None, f"holds {value}, outside the Avro {kind} range"
        return value, ""
    if kind == "boolean":
        return (
            (value, "") if type(value) is bool else (None, f"is {_json_type(value)}, not a boolean")
        )
    if kind == "string":
        if not isinstance(value, str):
            return None, f"is {_json_type(value)}, not a string"
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return None, "is not valid Unicode (it holds a lone surrogate)"
        return value, ""
    if type(value) not in (int, float):
        return None, f"is {_json_type(value)}, not a number"
    try:
        number = float(value)
    except OverflowError:
        return None, f"holds {value}, outside the Avro {kind} range"
    if kind == "float" and math.isfinite(number) and abs(number) > _FLOAT32_MAX:
        return None, f"holds {value}, outside the Avro float range"
    return number, ""


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    return names.get(type(value), "null" if value is None else f"a JSON {type(value).__name__}")


def _framing_problem(value: bytes) -> str:
    first = f"first byte {value[0]}" if value else "empty"
    return (
        f"value of {len(value)} bytes ({first}) is not Confluent-framed: expected magic byte 0 "
        "and a 4-byte schema id before the Avro body"
    )


def _defaults(schema: AvroSchema) -> dict[str, Any]:
    """Each bulk field's default, checked and converted; ConfigError if one is invalid."""
    defaults: dict[str, Any] = {}
    for field in schema.raw["fields"]:
        kind = field_kind(field["type"])
        if "default" not in field or kind is None:
            continue
        value, problem = _json_cell(kind, field["default"])
        if problem:
            raise ConfigError(
                "schema", f"default of field {field['name']!r} of {schema.name} {problem}"
            )
        defaults[str(field["name"])] = value
    return defaults


def _constant(kind: BulkKind, value: Any, count: int) -> Column:
    if kind == "string":
        values = np.empty(1, dtype=object)
        values[0] = value
        return StringColumn(np.zeros(count, dtype=np.int32), values)
    return np.full(count, value, dtype=COLUMN_DTYPES[kind])


def _empty_columns(outputs: Sequence[tuple[str, BulkKind]]) -> dict[str, Column]:
    return {
        name: StringColumn(np.empty(0, dtype=np.int32), np.empty(0, dtype=object))
        if kind == "string"
        else np.empty(0, dtype=COLUMN_DTYPES[kind])
        for name, kind in outputs
    }


def _key_problems(keys: Sequence[bytes | None], fmt: KeyFormat) -> dict[int, str]:
    """Rows whose key does not match ``fmt`` (decimal or string), with why."""
    problems: dict[int, str] = {}
    present = cast("Sequence[bytes]", keys)
    try:
        joined = b"\n".join(present)
    except TypeError:  # a null key
        for row, key in enumerate(keys):
            if key is None:
                problems[row] = f"key is null; key format {fmt} needs a key"
        present = [b"" if key is None else key for key in keys]
        joined = b"\n".join(present)
    if fmt == "string":
        if not joined.isascii():
            for row, key in enumerate(present):
                try:
                    key.decode("utf-8")
                except UnicodeDecodeError as exc:
                    problems[row] = f"key {key[:40]!r} is not valid UTF-8 ({exc.reason})"
        return problems
    n = len(present)
    if n == 0:
        return problems
    # Keys are found between the newlines that join them, unless a key holds one.
    data = np.frombuffer(joined, dtype=np.uint8)
    breaks = np.flatnonzero(data == ord("\n"))
    if len(breaks) == n - 1:
        ends = np.append(breaks, data.size)
        starts = np.concatenate(([0], breaks + 1))
    else:
        lengths = np.fromiter(map(len, present), np.int64, count=n)
        ends = np.cumsum(lengths + 1) - 1
        starts = ends - lengths
    non_digits = np.zeros(data.size + 1, dtype=np.int64)
    np.cumsum((data - np.uint8(ord("0"))) > 9, out=non_digits[1:])
    minus = np.zeros(n, dtype=np.int64)
    nonempty = ends > starts
    minus[nonempty] = data[starts[nonempty]] == ord("-")
    digits = ends - starts - minus
    valid = (digits > 0) & (non_digits[ends] - non_digits[starts] == minus)
    for row in np.flatnonzero(valid & (digits > _LONGEST_SAFE_DECIMAL)).tolist():
        low, high = _INT_RANGES["long"]
        valid[row] = low <= int(present[row]) <= high
    for row in np.flatnonzero(~valid).tolist():
        problems.setdefault(
            row, f"key {present[row][:40]!r} is not a decimal integer in the 64-bit range"
        )
    return problems


def _raw_key_problems(keys: RawRows, fmt: KeyFormat) -> dict[int, str]:
    """:func:`_key_problems` of keys in a buffer: checked in place, objects made only for
    the keys that fail."""
    problems = {
        row: f"key is null; key format {fmt} needs a key"
        for row in np.flatnonzero(keys.nulls()).tolist()
    }
    if fmt == "string":
        for row in np.flatnonzero(~ascii_rows(keys)).tolist():
            key = cast("bytes", keys.row(row))
            try:
                key.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems[row] = f"key {key[:40]!r} is not valid UTF-8 ({exc.reason})"
        return problems
    valid, long = valid_decimals(keys)
    for row in np.flatnonzero(long).tolist():
        low, high = _INT_RANGES["long"]
        valid[row] = low <= int(cast("bytes", keys.row(row))) <= high
    for row in np.flatnonzero(~valid).tolist():
        text = keys.row(row) or b""
        problems.setdefault(row, f"key {text[:40]!r} is not a decimal integer in the 64-bit range")
    return problems


def value_decoder(
    fmt: ValueFormat,
    schema: AvroSchema,
    *,
    key_format: KeyFormat = "any",
    exclude: Collection[str] = ("ts",),
    registry: SchemaRegistry | None = None,
) -> ValueDecoder:
    """A decoder of ``fmt`` values of ``schema`` (the reader's schema) into columns.

    Only flat records of long, int, boolean, float, double and string fields can become
    columns; any other schema is a ConfigError naming the schema and the field.
    ``avro-confluent`` needs ``registry`` (e.g. ``SchemaRegistryClient``) to look writer
    schemas up by id; lookups are cached for the decoder's life.
    """
    if fmt not in VALUE_FORMATS:
        raise ConfigError("format", f"unknown value format {fmt!r}; use one of {VALUE_FORMATS}")
    if key_format not in KEY_FORMATS:
        raise ConfigError(
            "key-format", f"unknown key format {key_format!r}; use one of {KEY_FORMATS}"
        )
    if fmt == "avro-confluent" and registry is None:
        raise ConfigError("schema-registry", "format avro-confluent needs a schema registry")
    outputs = [(name, kind) for name, kind in _schema_fields(schema) if name not in exclude]
    return ValueDecoder(fmt, schema, key_format, outputs, registry)


def check_schema(schema: AvroSchema, label: str) -> None:
    """ConfigError labelled ``label`` unless ``schema`` can be read into and written from
    columns (a flat record of simple fields, defaults of their type): checked with the
    settings, before a run creates or writes anything."""
    try:
        _schema_fields(schema)
        _defaults(schema)
    except ConfigError as exc:
        raise ConfigError(label, exc.message) from None


def _schema_fields(schema: AvroSchema) -> list[tuple[str, BulkKind]]:
    fields: list[tuple[str, BulkKind]] = []
    for field in schema.raw["fields"]:
        kind = field_kind(field["type"])
        if kind is None:
            raise ConfigError(
                "schema",
                f"field {field['name']!r} of {schema.name} has type {field['type']!r}; only "
                f"flat records of {', '.join(BULK_KINDS)} fields can be read into columns",
            )
        fields.append((str(field["name"]), kind))
    return fields


class ValueEncoder:
    """Encodes output columns into record values; build it with :func:`value_encoder`."""

    def __init__(self, fmt: ValueFormat, schema: AvroSchema, prefix: bytes):
        self._fmt = fmt
        self._schema = schema
        self._prefix = prefix
        self._fields = _schema_fields(schema)

    def encode(self, columns: Mapping[str, npt.NDArray[Any] | StringColumn]) -> list[bytes]:
        """One value per row; every schema field needs a column, all of one length.

        Columns may be typed numpy arrays, object arrays of Python values, or StringColumns.
        Avro values are byte-identical to fastavro's; JSON values are
        ``json.dumps(record, separators=(",", ":"))`` with the fields in schema order.
        """
        coerced = self._coerced(columns)
        if self._fmt != "json":
            return encode_columns(self._schema, coerced, prefix=self._prefix).values()
        names = [name for name, _ in self._fields]
        cells = [_json_cells(name, kind, coerced[name]) for name, kind in self._fields]
        return [
            json.dumps(dict(zip(names, row, strict=True)), separators=(",", ":")).encode()
            for row in zip(*cells, strict=True)
        ]

    def encode_batch(self, columns: Mapping[str, npt.NDArray[Any] | StringColumn]) -> EncodedBatch:
        """The values of :meth:`encode`, back to back in one buffer (Avro never makes one
        object per value)."""
        if self._fmt == "json":
            return encoded_batch(self.encode(columns))
        return encode_columns(self._schema, self._coerced(columns), prefix=self._prefix)

    def _coerced(
        self, columns: Mapping[str, npt.NDArray[Any] | StringColumn]
    ) -> dict[str, npt.NDArray[Any]]:
        missing = [name for name, _ in self._fields if name not in columns]
        if missing:
            raise SerdeError(f"{self._schema.name}: no column for field(s) {', '.join(missing)}")
        coerced = {name: _coerce(name, kind, columns[name]) for name, kind in self._fields}
        lengths = {len(column) for column in coerced.values()}
        if len(lengths) > 1:
            raise SerdeError(
                f"{self._schema.name}: columns have different lengths {sorted(lengths)}"
            )
        return coerced


def encoded_batch(values: Sequence[bytes]) -> EncodedBatch:
    """Values given one by one, back to back as an :class:`EncodedBatch`."""
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, values), np.int64, len(values)), out=offsets[1:])
    return EncodedBatch(b"".join(values), offsets)


def _coerce(name: str, kind: BulkKind, column: npt.NDArray[Any] | StringColumn) -> npt.NDArray[Any]:
    """A column as the numpy array the Avro encoder takes for ``kind``; SerdeError if it can't."""
    if isinstance(column, StringColumn):
        if kind != "string":
            raise SerdeError(f"field {name!r}: expected {kind} values, got a StringColumn")
        return column.decode()
    array = np.asarray(column)
    if array.dtype != np.object_ or kind == "string":
        if kind in _INT_RANGES and array.dtype.kind not in "iu":
            raise SerdeError(
                f"field {name!r}: expected integers, got a column of dtype {array.dtype}"
            )
        return array
    items = array.tolist()  # Python values stay themselves, numpy scalars too
    boolean = (bool, np.bool_)
    wanted = {"boolean": boolean, "float": _NUMBERS, "double": _NUMBERS}.get(kind, _INTEGERS)
    for item in items:
        if not isinstance(item, wanted) or (kind != "boolean" and isinstance(item, boolean)):
            raise SerdeError(
                f"field {name!r}: expected {kind} values, got {type(item).__name__} {item!r}"
            )
    try:
        return np.array(
            items, dtype=np.float64 if kind in ("float", "double") else COLUMN_DTYPES[kind]
        )
    except OverflowError as exc:
        raise SerdeError(f"field {name!r}: value outside the Avro {kind} range ({exc})") from exc


def _json_cells(name: str, kind: BulkKind, column: npt.NDArray[Any]) -> list[Any]:
    """Python values for JSON; ints checked against the Avro range, floats narrowed to float32."""
    if kind == "boolean":
        if column.dtype != np.bool_:
            raise SerdeError(f"field {name!r}: expected a bool column, got dtype {column.dtype}")
        return column.tolist()  # type: ignore[no-any-return]
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        if column.size and (int(column.min()) < low or int(column.max()) > high):
            raise SerdeError(f"field {name!r}: value outside the Avro {kind} range")
        return column.astype(np.int64).tolist()  # type: ignore[no-any-return]
    if kind in ("float", "double"):
        if column.dtype.kind not in "fiu":
            raise SerdeError(
                f"field {name!r}: expected numbers, got a column of dtype {column.dtype}"
            )
        with np.errstate(over="ignore"):
            narrowed = column.astype(COLUMN_DTYPES[kind])
        if np.any(np.isfinite(column) & ~np.isfinite(narrowed)):
            raise SerdeError(f"field {name!r}: value outside the Avro {kind} range")
        return narrowed.tolist()  # type: ignore[no-any-return]
    items = column.tolist()
    for item in items:
        if not isinstance(item, str):
            raise SerdeError(f"field {name!r}: expected str values, got {type(item).__name__}")
    return items  # type: ignore[no-any-return]


class JsonRecordEncoder:
    """Encodes output columns as JSON objects without a schema (``--output-format json`` and
    no output schema): the values are the records' own, as JSON has them.

    ``fields`` are the fields every record must carry, in this order (``p.output(...,
    fields=...)``); empty means each record's own fields, in the order the stream first
    emitted them, a field the record lacks left out (a column cell :data:`ABSENT`).
    Integers stay integers and floats round-trip exactly (``repr``); NaN and infinities,
    bytes and other values JSON cannot hold are a SerdeError naming the field.
    """

    def __init__(self, fields: Sequence[str] = ()):
        self.fields = tuple(fields)

    def encode_batch(self, columns: Mapping[str, npt.NDArray[Any] | StringColumn]) -> EncodedBatch:
        """The values of :meth:`encode`, back to back in one buffer."""
        return encoded_batch(self.encode(columns))

    def encode(self, columns: Mapping[str, npt.NDArray[Any] | StringColumn]) -> list[bytes]:
        """One value per row (see the class docstring)."""
        names = list(self.fields or columns)
        missing = [name for name in names if name not in columns]
        if missing:
            raise SerdeError(f"no column for field(s) {', '.join(missing)}")
        cells = [_python_values(columns[name]) for name in names]
        rows = len(cells[0]) if cells else 0
        out: list[bytes] = []
        for row in range(rows):
            record = {
                name: cell[row]
                for name, cell in zip(names, cells, strict=True)
                if cell[row] is not ABSENT
            }
            try:
                text = json.dumps(record, separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError) as exc:
                bad = next((n for n, v in record.items() if not _json_safe(v)), "?")
                raise SerdeError(
                    f"field {bad!r} holds {record.get(bad)!r}, which JSON cannot hold ({exc}); "
                    "emit ints, floats (finite), strings, booleans, None, lists or dicts"
                ) from None
            out.append(text.encode())
        return out


def _python_values(column: npt.NDArray[Any] | StringColumn) -> list[Any]:
    """A column's cells as Python values (numpy scalars in object columns too)."""
    if isinstance(column, StringColumn):
        return column.decode().tolist()  # type: ignore[no-any-return]
    values: list[Any] = np.asarray(column).tolist()
    if column.dtype == np.object_:
        values = [v.item() if isinstance(v, np.generic) else v for v in values]
    return values


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def value_encoder(
    fmt: ValueFormat, schema: AvroSchema, *, schema_id: int | None = None
) -> ValueEncoder:
    """An encoder of ``schema`` records as ``fmt`` values (avro-confluent needs ``schema_id``)."""
    if fmt not in VALUE_FORMATS:
        raise ConfigError("format", f"unknown value format {fmt!r}; use one of {VALUE_FORMATS}")
    if fmt == "avro-confluent":
        if schema_id is None:
            raise ConfigError("schema_id", "format avro-confluent needs the output schema's id")
        return ValueEncoder(fmt, schema, confluent_header(schema_id))
    if schema_id is not None:
        raise ConfigError(
            "schema_id", f"format {fmt} takes no schema id (only avro-confluent does)"
        )
    return ValueEncoder(fmt, schema, b"")
