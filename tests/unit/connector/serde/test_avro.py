"""Schemas, framing, and the bulk encoder proven byte-identical to fastavro."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.errors import ConfigError, SerdeError
from connector.serde.avro import (
    SCHEMAS_DIR_ENV,
    AvroSchema,
    Utf8Column,
    confluent_header,
    decode_value,
    encode_columns,
    encode_value,
    load_schema,
    load_schema_file,
    schema_dir_candidates,
    schemas_dir,
)
from tests.support.budget import examples

LONGS = st.integers(-(2**63), 2**63 - 1)
INTS = st.integers(-(2**31), 2**31 - 1)
TEXT = st.text(max_size=40)

ALL_KINDS = {
    "type": "record",
    "name": "AllKinds",
    "namespace": "test",
    "fields": [
        {"name": "a", "type": "long"},
        {"name": "s1", "type": "string"},
        {"name": "i", "type": "int"},
        {"name": "flag", "type": "boolean"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "s2", "type": "string"},
        {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}


def _fastavro(schema: AvroSchema, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema.parsed, record)
    return buf.getvalue()


def _schema_file(tmp_path: Path, source: dict[str, Any]) -> AvroSchema:
    path = tmp_path / f"{source['name']}.avsc"
    path.write_text(json.dumps(source))
    return load_schema_file(path)


def _columns(rows: list[dict[str, Any]], schema: AvroSchema) -> dict[str, Any]:
    dtypes = {
        "long": np.int64,
        "int": np.int32,
        "boolean": np.bool_,
        "float": np.float32,
        "double": np.float64,
        "string": object,
    }
    columns: dict[str, Any] = {}
    for field in schema.raw["fields"]:
        name = field["name"]
        columns[name] = np.array([r[name] for r in rows], dtype=dtypes[field["type"]])
    return columns


message_rows = st.lists(
    st.fixed_dictionaries(
        {"message_id": LONGS, "ts": LONGS, "sender": LONGS, "recipient": LONGS, "content": TEXT}
    ),
    max_size=30,
)


@settings(max_examples=examples(100), deadline=None)  # timing varies on a loaded 2-core machine
@given(rows=message_rows, prefix=st.binary(max_size=6))
def test_bulk_messages_equal_fastavro_record_by_record(
    rows: list[dict[str, Any]], prefix: bytes
) -> None:
    schema = load_schema("social/Message")
    batch = encode_columns(schema, _columns(rows, schema), prefix=prefix)
    assert batch.values() == [prefix + _fastavro(schema, r) for r in rows]
    assert len(batch) == len(rows)


@settings(max_examples=examples(100), deadline=None)  # timing varies on a loaded 2-core machine
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {
                "message_id": LONGS,
                "ts": LONGS,
                "sender": LONGS,
                "recipient": LONGS,
                "rules": INTS,
                "score": INTS,
                "spam": st.booleans(),
                "sender_flagged": LONGS,
            }
        ),
        max_size=30,
    )
)
def test_bulk_spam_scores_equal_fastavro(rows: list[dict[str, Any]]) -> None:
    schema = load_schema("restream.social.SpamScore")
    assert encode_columns(schema, _columns(rows, schema)).values() == [
        _fastavro(schema, r) for r in rows
    ]


finite32 = st.floats(width=32, allow_nan=False)


@pytest.fixture(scope="module")
def all_kinds(tmp_path_factory: pytest.TempPathFactory) -> AvroSchema:
    return _schema_file(tmp_path_factory.mktemp("schemas"), ALL_KINDS)


@settings(max_examples=examples(200), deadline=None)
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {
                "a": LONGS,
                "s1": TEXT,
                "i": INTS,
                "flag": st.booleans(),
                "f": finite32,
                "d": st.floats(allow_nan=False),
                "s2": TEXT,
                "t": LONGS,
            }
        ),
        max_size=20,
    )
)
def test_bulk_encoder_handles_every_supported_type(
    rows: list[dict[str, Any]], all_kinds: AvroSchema
) -> None:
    schema = all_kinds
    assert encode_columns(schema, _columns(rows, schema)).values() == [
        _fastavro(schema, r) for r in rows
    ]


@settings(max_examples=examples(100), deadline=None)  # timing varies on a loaded 2-core machine
@given(strings=st.lists(TEXT, max_size=30), data=st.data())
def test_utf8_columns_encode_like_python_strings(strings: list[str], data: st.DataObject) -> None:
    schema = load_schema("social/Message")
    n = len(strings)
    numbers = {k: np.arange(n, dtype=np.int64) for k in ("message_id", "ts", "sender", "recipient")}
    from_strings = encode_columns(schema, {**numbers, "content": np.array(strings, dtype=object)})
    column = Utf8Column.from_strings(strings)
    assert encode_columns(schema, {**numbers, "content": column}).values() == from_strings.values()
    assert column.strings() == strings
    start = data.draw(st.integers(0, n))
    stop = data.draw(st.integers(start, n))
    assert column.slice(start, stop).strings() == strings[start:stop]
    rows = np.array(data.draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=n if n else 0)))
    assert column.take(rows.astype(np.int64)).strings() == [strings[i] for i in rows.tolist()]


def test_empty_batch_encodes_to_nothing() -> None:
    schema = load_schema("social/Friendship")
    batch = encode_columns(schema, {k: np.zeros(0, np.int64) for k in ("ts", "user_a", "user_b")})
    assert batch.values() == [] and batch.data == b""


def test_bulk_encoder_rejects_bad_columns(tmp_path: Path) -> None:
    schema = load_schema("social/SpamScore")
    good = {
        "message_id": [1],
        "ts": [1],
        "sender": [1],
        "recipient": [1],
        "rules": [1],
        "score": [1],
        "spam": np.array([True]),
        "sender_flagged": [1],
    }
    encode_columns(schema, good)
    with pytest.raises(SerdeError, match="int"):
        encode_columns(schema, {**good, "rules": [2**31]})
    with pytest.raises(SerdeError, match="no column"):
        encode_columns(schema, {k: v for k, v in good.items() if k != "score"})
    with pytest.raises(SerdeError, match="rows"):
        encode_columns(schema, {**good, "ts": [1, 2]})
    with pytest.raises(SerdeError, match="integers"):
        encode_columns(schema, {**good, "ts": [1.5]})
    with pytest.raises(SerdeError, match="bool"):
        encode_columns(schema, {**good, "spam": [1]})
    with pytest.raises(SerdeError, match="long range"):
        encode_columns(schema, {**good, "ts": np.array([2**64 - 1], dtype=np.uint64)})
    message = load_schema("social/Message")
    numbers = {k: [1] for k in ("message_id", "ts", "sender", "recipient")}
    with pytest.raises(SerdeError, match="str"):
        encode_columns(message, {**numbers, "content": [b"bytes"]})
    union = {"type": "record", "name": "U", "fields": [{"name": "x", "type": ["null", "long"]}]}
    with pytest.raises(SerdeError, match="encode_value"):
        encode_columns(_schema_file(tmp_path, union), {"x": [1]})


def test_float_overflow_is_an_error_not_infinity(tmp_path: Path) -> None:
    schema = _schema_file(
        tmp_path, {"type": "record", "name": "F", "fields": [{"name": "f", "type": "float"}]}
    )
    assert encode_columns(schema, {"f": [math.inf]}).values() == [
        _fastavro(schema, {"f": math.inf})
    ]
    with pytest.raises(SerdeError, match="float range"):
        encode_columns(schema, {"f": [1e300]})


@settings(max_examples=examples(100), deadline=None)  # timing varies on a loaded 2-core machine
@given(
    record=st.fixed_dictionaries({"ts": LONGS, "user_a": LONGS, "user_b": LONGS}),
    schema_id=st.integers(0, 2**32 - 1),
)
def test_confluent_framing_round_trips(record: dict[str, int], schema_id: int) -> None:
    schema = load_schema("social/Friendship")
    framed = encode_value(schema, record, "avro-confluent", schema_id)
    assert framed[:5] == b"\x00" + schema_id.to_bytes(4, "big") == confluent_header(schema_id)
    assert framed[5:] == encode_value(schema, record)
    decoded = decode_value(schema, framed, "avro-confluent")
    assert (decoded.record, decoded.schema_id) == (record, schema_id)
    assert decode_value(schema, framed[5:]).record == record


def test_decoding_rejects_bad_values() -> None:
    schema = load_schema("social/Friendship")
    body = encode_value(schema, {"ts": 1, "user_a": 2, "user_b": 3})
    with pytest.raises(SerdeError, match="Confluent"):
        decode_value(schema, body, "avro-confluent")
    with pytest.raises(SerdeError, match="trailing"):
        decode_value(schema, body + b"\x00")
    with pytest.raises(SerdeError, match="decode"):
        decode_value(schema, body[:-1])
    with pytest.raises(ConfigError, match="schema id"):
        encode_value(schema, {"ts": 1, "user_a": 2, "user_b": 3}, "avro-confluent")
    with pytest.raises(ConfigError, match="schema_id"):
        confluent_header(2**32)


def test_timestamps_decode_as_int_milliseconds() -> None:
    schema = load_schema("social/Message")
    record = {"message_id": 1, "ts": 1_700_000_000_123, "sender": 2, "recipient": 3, "content": "é"}
    assert decode_value(schema, encode_value(schema, record)).record == record


def test_schemas_load_by_path_or_full_name() -> None:
    by_path = load_schema("social/Message")
    assert by_path is load_schema("social/Message.avsc") is load_schema("restream.social.Message")
    assert by_path.name == "restream.social.Message"
    assert [f["name"] for f in by_path.raw["fields"]] == [
        "message_id",
        "ts",
        "sender",
        "recipient",
        "content",
    ]
    with pytest.raises(ConfigError, match="no schema"):
        load_schema("social/Nope")


def test_schema_dir_env_override_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "R.avsc").write_text(
        json.dumps({"type": "record", "name": "R", "fields": [{"name": "v", "type": "long"}]})
    )
    monkeypatch.setenv(SCHEMAS_DIR_ENV, str(tmp_path))
    assert schema_dir_candidates()[0] == tmp_path and schemas_dir() == tmp_path
    assert load_schema("x/R").name == "R"
    monkeypatch.setenv(SCHEMAS_DIR_ENV, str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=SCHEMAS_DIR_ENV):
        schemas_dir()


def test_without_override_the_repository_schemas_come_before_the_installed_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(SCHEMAS_DIR_ENV, raising=False)
    repo, installed = schema_dir_candidates()
    assert repo == Path(__file__).resolve().parents[4] / "schemas"
    assert installed.parts[-3:] == ("share", "restream", "schemas")
    assert schemas_dir() == repo


def test_invalid_schema_files_are_config_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.avsc").write_text("{not json")
    with pytest.raises(ConfigError, match="not a valid Avro schema"):
        load_schema_file(tmp_path / "bad.avsc")
    (tmp_path / "enum.avsc").write_text(json.dumps({"type": "enum", "name": "E", "symbols": ["A"]}))
    with pytest.raises(ConfigError, match="record"):
        load_schema_file(tmp_path / "enum.avsc")
