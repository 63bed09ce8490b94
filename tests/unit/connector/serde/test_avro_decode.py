"""The bulk Avro decoder proven identical to fastavro, record for record, bad records included."""

from __future__ import annotations

import io
import logging
import random
import struct
from typing import Any

import fastavro
import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.serde.avro_bulk import BulkKind
from connector.serde.avro_decode import (
    AvroRows,
    FlatDecoder,
    _Batch,
    field_kind,
    resolve_writer,
    string_column,
    varint_widths,
)
from tests.support.avro_values import INT_RANGE, VALUES, Fields, assert_column, flat_fields
from tests.support.budget import examples

MUTATIONS = ("none", "truncate", "append", "random", "overlong", "bool-byte", "junk10", "utf8")


def _schema(fields: Fields) -> dict[str, Any]:
    source = {
        "type": "record",
        "name": "Rec",
        "namespace": "test",
        "fields": [{"name": n, "type": k} for n, k in fields],
    }
    parsed = fastavro.parse_schema(source)
    assert isinstance(parsed, dict)
    return parsed


def _varint(value: int, *, pad: int = 0, junk: int = 0) -> bytes:
    """Zigzag varint of ``value``; ``pad`` extra (overlong) bytes; ``junk`` in a 10th byte."""
    z = ((value << 1) ^ (value >> 63)) & (2**64 - 1)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    if len(out) == 10 and junk:
        out[-1] |= (junk << 1) & 0x7F
    if pad:
        out[-1] |= 0x80
        out += b"\x80" * (pad - 1) + b"\x00"
    return bytes(out)


def encode(
    fields: Fields, record: dict[str, Any], *, pad: int = 0, true_byte: int = 1, junk: int = 0
) -> bytes:
    """Avro binary of ``record``, optionally in the non-canonical forms fastavro still reads."""
    out = bytearray()
    for name, kind in fields:
        value = record[name]
        if kind in ("long", "int"):
            out += _varint(value, pad=pad, junk=junk)
        elif kind == "boolean":
            out.append(true_byte if value else 0)
        elif kind in ("float", "double"):
            out += struct.pack("<f" if kind == "float" else "<d", value)
        else:
            text = value.encode()
            out += _varint(len(text), pad=pad) + text
    return bytes(out)


def reference(schema: dict[str, Any], fields: Fields, body: bytes) -> dict[str, Any] | None:
    """What fastavro decodes from ``body`` (None: an error, trailing bytes, an int out of range)."""
    stream = io.BytesIO(body)
    try:
        record = fastavro.schemaless_reader(stream, schema)
    except Exception:
        return None
    if stream.tell() != len(body) or not isinstance(record, dict):
        return None
    for name, kind in fields:
        if kind == "int" and not INT_RANGE[0] <= record[name] <= INT_RANGE[1]:
            return None
    return record


def check_against_fastavro(fields: Fields, bodies: list[bytes]) -> AvroRows:
    schema = _schema(fields)
    result = FlatDecoder(schema, [(n, k, k) for n, k in fields]).decode(bodies)
    expected = [reference(schema, fields, body) for body in bodies]
    assert result.ok.tolist() == [e is not None for e in expected]
    assert sorted(result.errors) == [i for i, e in enumerate(expected) if e is None]
    good = [e for e in expected if e is not None]
    for name, kind in fields:
        assert_column(result.columns[name], kind, [r[name] for r in good])
    return result


@st.composite
def batches(draw: st.DrawFn) -> tuple[Fields, list[dict[str, Any]]]:
    """A schema and a batch of its records: up to 16 distinct ones repeated over up to 300 rows.

    Batches of more than 16 rows are what polars reads; smaller ones go to fastavro.
    """
    fields = draw(flat_fields())
    record = st.fixed_dictionaries({name: VALUES[kind] for name, kind in fields})
    distinct = draw(st.lists(record, min_size=1, max_size=16))
    size = draw(st.one_of(st.integers(0, 16), st.integers(17, 300)))
    picks = random.Random(draw(st.integers(0, 2**32))).choices(range(len(distinct)), k=size)
    return fields, [distinct[i] for i in picks]


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_bulk_decode_equals_fastavro_record_for_record(
    batch: tuple[Fields, list[dict[str, Any]]],
) -> None:
    fields, records = batch
    schema = _schema(fields)
    bodies = []
    for record in records:
        stream = io.BytesIO()
        fastavro.schemaless_writer(stream, schema, record)
        bodies.append(stream.getvalue())
    result = check_against_fastavro(fields, bodies)
    assert result.ok.all()


def _mutate(fields: Fields, record: dict[str, Any], mutation: str, data: st.DataObject) -> bytes:
    body = encode(fields, record)
    if mutation == "truncate" and body:
        return body[: data.draw(st.integers(0, len(body) - 1))]
    if mutation == "append":
        return body + data.draw(st.binary(min_size=1, max_size=3))
    if mutation == "random":
        return data.draw(st.binary(max_size=24))
    if mutation == "overlong":
        return encode(fields, record, pad=data.draw(st.integers(1, 3)))
    if mutation == "bool-byte":
        return encode(fields, record, true_byte=data.draw(st.integers(2, 255)))
    if mutation == "junk10":
        return encode(fields, record, junk=data.draw(st.integers(1, 63)))
    if mutation == "utf8" and any(kind == "string" for _, kind in fields):
        bad = dict(record)
        name = next(n for n, k in fields if k == "string")
        bad[name] = "\x00" * 2
        body = encode(fields, bad)
        at = body.index(b"\x04\x00\x00") + 1
        return (
            body[:at]
            + data.draw(st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0"]))[:2]
            + body[at + 2 :]
        )
    return body


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), st.data())
def test_corrupted_rows_are_reported_and_the_rest_decode_exactly(
    batch: tuple[Fields, list[dict[str, Any]]], data: st.DataObject
) -> None:
    fields, records = batch
    # Mostly a few bad rows among good ones (so that polars reads most of the batch), but
    # sometimes many.
    rows = st.integers(0, max(len(records) - 1, 0))
    many = st.integers(0, max(len(records) // 2, 1))
    hit = data.draw(st.dictionaries(rows, st.sampled_from(MUTATIONS), max_size=data.draw(many)))
    bodies = [_mutate(fields, r, hit.get(i, "none"), data) for i, r in enumerate(records)]
    check_against_fastavro(fields, bodies)


def test_a_large_batch_with_scattered_corruption_matches_fastavro() -> None:
    fields: Fields = [("id", "long"), ("n", "int"), ("flag", "boolean"), ("text", "string")]
    rng = np.random.default_rng(7)
    bodies = []
    for i in range(3000):
        record = {
            "id": int(rng.integers(-(2**63), 2**63 - 1)),
            "n": int(rng.integers(-(2**31), 2**31 - 1)),
            "flag": bool(i % 3),
            "text": f"row {i} é" * int(rng.integers(0, 4)),
        }
        body = encode(fields, record)
        roll = rng.random()
        if roll < 0.02:
            body = body[: len(body) // 2]
        elif roll < 0.04:
            body += b"\x00"
        elif roll < 0.06:
            body = encode(fields, record, pad=2)
        elif roll < 0.07:
            body = encode(fields, record, true_byte=7)
        bodies.append(body)
    result = check_against_fastavro(fields, bodies)
    assert 0 < int((~result.ok).sum()) < 200


def test_clean_batches_need_no_record_by_record_decoding(caplog: pytest.LogCaptureFixture) -> None:
    fields: Fields = [("a", "long"), ("s", "string")]
    bodies = [encode(fields, {"a": i * 1_000_003, "s": f"text {i % 17}"}) for i in range(500)]
    with caplog.at_level(logging.DEBUG, logger="connector.serde.avro_decode"):
        check_against_fastavro(fields, bodies)
        assert "one at a time" not in caplog.text
        check_against_fastavro(fields, [*bodies[:250], bodies[0] + b"\x01", *bodies[250:]])
        assert "1 of 501 test.Rec bodies decoded one at a time" in caplog.text


def test_float_nan_payloads_come_out_as_fastavro_gives_them() -> None:
    fields: Fields = [("f", "float"), ("d", "double")]
    patterns_f = [0x7F800001, 0x7FC00001, 0xFF812345, 0x7F800000, 0x80000000, 0x7FBFFFFF]
    patterns_d = [0x7FF0000000000001, 0xFFF8000000000123, 0x8000000000000000, 0x7FF4000000000000]
    bodies = [
        struct.pack("<I", patterns_f[i % len(patterns_f)])
        + struct.pack("<Q", patterns_d[i % len(patterns_d)])
        for i in range(40)
    ]
    result = check_against_fastavro(fields, bodies)
    column = result.columns["d"]
    assert isinstance(column, np.ndarray)
    assert column.view(np.uint64)[0] == patterns_d[0]  # doubles keep every bit


def test_ints_outside_32_bits_are_undecodable() -> None:
    fields: Fields = [("i", "int"), ("l", "long")]
    good = [encode(fields, {"i": 5, "l": -(2**63)}) for _ in range(100)]
    wide = _varint(2**31) + _varint(1)  # the int's bytes hold 2**31: the canonical length fits
    result = check_against_fastavro(fields, [*good[:50], wide, *good[50:]])
    assert result.ok.tolist() == [True] * 50 + [False] + [True] * 50
    assert "outside the Avro int range" in result.errors[50]


def test_10_byte_varints_with_bits_past_64_decode_as_fastavro_does(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fields: Fields = [("i", "int"), ("l", "long")]
    good = [encode(fields, {"i": 5, "l": 2**62 + i}) for i in range(100)]
    junk = [_varint(5) + b"\xff" * 9 + bytes([b]) for b in (0x03, 0x7F, 0x41)]
    with caplog.at_level(logging.DEBUG, logger="connector.serde.avro_decode"):
        result = check_against_fastavro(fields, [*good[:50], *junk, *good[50:]])
    assert result.ok.all()
    assert "decoded one at a time" in caplog.text  # only canonical varints are taken in bulk


def test_a_row_that_reads_into_the_next_one_is_not_trusted() -> None:
    # Row 50's second varint is cut after a continuation byte. Read on, it takes row 51's
    # extra leading 0x00 and looks whole (value 0 in one byte), the rows realign after it,
    # and only row 51 fails its length check.
    fields: Fields = [("a", "long"), ("b", "long")]
    good = [encode(fields, {"a": 0, "b": 300 + i}) for i in range(100)]
    bodies = [*good[:50], b"\x00\x80", b"\x00" + good[50], *good[51:]]
    result = check_against_fastavro(fields, bodies)
    assert result.ok.tolist() == [True] * 50 + [False, False] + [True] * 49


def test_trailing_bytes_and_empty_records() -> None:
    fields: Fields = [("a", "long")]
    result = check_against_fastavro(fields, [b"\x02"] * 20 + [b"\x02\x02", b""])
    assert "1 trailing bytes" in result.errors[20]
    assert "EOFError" in result.errors[21]
    empty = FlatDecoder(_schema([]), []).decode([b"", b"\x00", b""])
    assert empty.ok.tolist() == [True, False, True]


def test_a_writer_with_complex_fields_is_decoded_by_fastavro() -> None:
    writer = fastavro.parse_schema(
        {
            "type": "record",
            "name": "W",
            "fields": [
                {"name": "tags", "type": {"type": "array", "items": "string"}},
                {"name": "n", "type": ["null", "long"]},
                {"name": "a", "type": "int"},
            ],
        }
    )
    assert isinstance(writer, dict)
    bodies = []
    for i in range(40):
        stream = io.BytesIO()
        fastavro.schemaless_writer(stream, writer, {"tags": ["x"] * (i % 3), "n": None, "a": i})
        bodies.append(stream.getvalue())
    result = FlatDecoder(writer, [("a", "int", "double")]).decode([*bodies, b"\x01"])
    assert result.ok.tolist() == [True] * 40 + [False]
    assert_column(result.columns["a"], "double", [float(i) for i in range(40)])


@pytest.mark.parametrize("rows", [3, 40])  # fastavro alone; polars
def test_promotions_match_fastavro_schema_resolution(rows: int) -> None:
    writer_fields: Fields = [("a", "int"), ("b", "long"), ("c", "float")]
    writer = _schema(writer_fields)
    reader = {
        "type": "record",
        "name": "Rec",
        "fields": [
            {"name": "c", "type": "double"},
            {"name": "b", "type": "float"},
            {"name": "a", "type": "long"},
        ],
    }
    records = [
        {"a": -(2**31), "b": 2**60 + 12345, "c": 0.1},
        {"a": 7, "b": -(2**63), "c": float("nan")},
        # Rounded to a double first, as fastavro does, this long is a float32 tie that
        # rounds down; rounded straight to float32 it would round up.
        {"a": 2**31 - 1, "b": 2**54 + 2**30 + 1, "c": -0.0},
    ] * 20
    bodies = [encode(writer_fields, r) for r in records[:rows]]
    resolved = resolve_writer("other.Rec", outputs_of(reader), {}, _text(writer_fields))
    assert not isinstance(resolved, str)
    decoder, defaults = resolved
    assert defaults == {}
    result = decoder.decode(bodies)
    parsed_reader = fastavro.parse_schema(reader)
    expected: list[Any] = [
        fastavro.schemaless_reader(io.BytesIO(body), writer, parsed_reader) for body in bodies
    ]
    outputs: list[tuple[str, BulkKind]] = [("c", "double"), ("b", "float"), ("a", "long")]
    for name, kind in outputs:
        assert_column(result.columns[name], kind, [e[name] for e in expected])


def outputs_of(source: dict[str, Any]) -> list[tuple[str, BulkKind]]:
    return [(f["name"], f["type"]) for f in source["fields"]]


def _text(fields: Fields, name: str = "Rec") -> str:
    import json

    return json.dumps(
        {"type": "record", "name": name, "fields": [{"name": n, "type": k} for n, k in fields]}
    )


def test_resolve_writer_explains_what_does_not_fit() -> None:
    outputs: list[tuple[str, BulkKind]] = [("a", "long"), ("s", "string")]
    assert "no field 's'" in str(resolve_writer("Rec", outputs, {}, _text([("a", "long")])))
    assert "cannot be read as long" in str(
        resolve_writer("Rec", outputs, {}, _text([("a", "double"), ("s", "string")]))
    )
    assert "not Rec" in str(resolve_writer("Rec", outputs, {}, _text(outputs, "Other")))
    assert "not a valid Avro schema" in str(resolve_writer("Rec", outputs, {}, "{nope"))
    assert "not an Avro record" in str(resolve_writer("Rec", outputs, {}, '"long"'))
    resolved = resolve_writer("Rec", outputs, {"s": "x"}, _text([("a", "long")]))
    assert not isinstance(resolved, str) and resolved[1] == {"s": "x"}


def test_string_column_is_a_dictionary_of_distinct_values() -> None:
    strings = pl.Series(["b", "a", "b", "", "é", "a", "b"])
    column = string_column(strings)
    assert column.decode().tolist() == strings.to_list()
    assert sorted(column.values.tolist()) == ["", "a", "b", "é"]
    assert column.codes.dtype == np.int32
    empty = string_column(pl.Series([], dtype=pl.String))
    assert len(empty) == 0 and len(empty.values) == 0


@given(st.lists(st.integers(0, 2**64 - 1), max_size=50))
def test_varint_widths_are_the_canonical_lengths(values: list[int]) -> None:
    widths = varint_widths(np.array(values, dtype=np.uint64)).tolist()
    assert widths == [max(1, -(-v.bit_length() // 7)) for v in values]


def test_field_kind_reads_both_spellings() -> None:
    assert field_kind("long") == "long"
    assert field_kind({"type": "string", "avro.java.string": "String"}) == "string"
    assert field_kind(["null", "long"]) is None
    assert field_kind({"type": "array", "items": "long"}) is None


def reference_exact(fields: Fields, body: bytes) -> bool:
    """Whether ``body`` is exactly one record by the Avro grammar, varints of at most 10 bytes."""
    pos = 0
    for _, kind in fields:
        if kind in ("boolean", "float", "double"):
            pos += {"boolean": 1, "float": 4, "double": 8}[kind]
            continue
        z, shift = 0, 0
        while True:
            if pos >= len(body) or shift == 70:
                return False
            z |= (body[pos] & 0x7F) << shift
            pos, shift = pos + 1, shift + 7
            if body[pos - 1] < 0x80:
                break
        z &= 2**64 - 1  # as polars reads a varint: bits past 64 are dropped
        if kind == "string":
            if z & 1 or (z >> 1) > len(body) - pos:
                return False
            pos += z >> 1
        if pos > len(body):
            return False
    return pos == len(body)


@settings(max_examples=examples(200), deadline=None)
@given(flat_fields(), st.lists(st.binary(max_size=30), min_size=1, max_size=40), st.data())
def test_the_framing_scan_follows_the_avro_grammar(
    fields: Fields, noise: list[bytes], data: st.DataObject
) -> None:
    record = st.fixed_dictionaries({name: VALUES[kind] for name, kind in fields})
    bodies = []
    for junk in noise:
        body = encode(fields, data.draw(record), pad=data.draw(st.sampled_from([0, 0, 1, 9])))
        cut = data.draw(st.integers(0, len(body)))
        flipped = bytearray(body or b"\x00")
        flipped[cut % len(flipped)] ^= 1 << data.draw(st.integers(0, 7))
        choices = [body, body[:cut], body + junk[:2], junk, bytes(flipped)]
        bodies.append(data.draw(st.sampled_from(choices)))
    # _exact is the batch's private framing scan: the decoder's safety rests on it.
    scan = _Batch(FlatDecoder(_schema(fields), []), bodies, None)._exact()
    assert scan.tolist() == [reference_exact(fields, body) for body in bodies]


@pytest.mark.parametrize(
    ("fields", "body"),
    [
        ([("s", "string")], b"\x01"),  # a negative length
        ([("s", "string")], b"\x03a"),
        ([("s", "string")], b"\x04a"),  # a length past the end
        ([("a", "long")], b"\x80" * 10 + b"\x00"),  # 11 bytes: too long for polars
        ([("a", "long")], b"\x80" * 9 + b"\x00"),
        ([("a", "long"), ("b", "boolean")], b"\x80" * 10 + b"\x00"),
        ([("a", "long"), ("d", "double")], b"\x02" + b"\x00" * 7),  # a double cut short
        ([("a", "long"), ("b", "boolean")], b"\x02\x01\x01"),
        ([("s", "string"), ("a", "long")], b"\x02a\x80"),  # a varint cut short
    ],
)
def test_the_framing_scan_on_edge_cases(fields: Fields, body: bytes) -> None:
    good = encode(fields, {name: "" if kind == "string" else 0 for name, kind in fields})
    bodies = [good, body, good]
    scan = _Batch(FlatDecoder(_schema(fields), []), bodies, None)._exact()
    assert scan.tolist() == [True, reference_exact(fields, body), True]


@settings(max_examples=examples(100), deadline=None)
@given(st.lists(st.binary(max_size=12), min_size=17, max_size=60))
def test_string_bytes_are_valid_exactly_when_fastavro_says_so(texts: list[bytes]) -> None:
    # Polars and Python must agree on which byte strings are UTF-8, or bulk rows would differ.
    check_against_fastavro([("s", "string")], [_varint(len(t)) + t for t in texts])


def test_hash_collisions_fall_back_to_exact_dictionary_encoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    strings = pl.Series(["b", "a", "b", "c", "a"])
    monkeypatch.setattr(pl.Series, "hash", lambda self, *a, **k: pl.Series([7] * len(self)))
    column = string_column(strings)
    assert column.decode().tolist() == ["b", "a", "b", "c", "a"]
    assert sorted(column.values.tolist()) == ["a", "b", "c"]


def test_clean_framed_values_need_no_record_by_record_decoding(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fields: Fields = [("a", "long"), ("s", "string")]
    values = [b"\x00\x00\x00\x00\x09" + encode(fields, {"a": i, "s": "x"}) for i in range(99)]
    decoder = FlatDecoder(
        _schema(fields), [("a", "long", "long"), ("s", "string", "string")], skip=5
    )
    with caplog.at_level(logging.DEBUG, logger="connector.serde.avro_decode"):
        result = decoder.decode(values)
    assert result.ok.all() and "one at a time" not in caplog.text
    assert_column(result.columns["a"], "long", list(range(99)))
