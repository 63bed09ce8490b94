"""Record values to columns and back: formats, bad records and their reasons, key formats."""

from __future__ import annotations

import json
import pickle
import re
import uuid
from typing import Any

import fastavro
import numpy as np
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.config import RunConfig
from connector.errors import BrokerError, ConfigError, SerdeError
from connector.serde.avro import AvroSchema, confluent_header, encode_value, load_schema
from connector.serde.schema_registry import (
    RegistryLookup,
    register_value_schema,
    registry_client,
)
from connector.serde.values import (
    DecodedBatch,
    RecordProblem,
    ValueFormat,
    value_decoder,
    value_encoder,
)
from engine.log import StringColumn
from tests.support.avro_values import VALUES, Fields, assert_column, flat_fields
from tests.support.budget import examples
from tooling.generate import decimal_keys

MESSAGE = load_schema("social/Message")
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1


def avro_schema(fields: list[dict[str, Any]], name: str = "Rec") -> AvroSchema:
    source = {"type": "record", "name": name, "namespace": "test", "fields": fields}
    parsed = fastavro.parse_schema(source)
    assert isinstance(parsed, dict)
    return AvroSchema(name=f"test.{name}", text=json.dumps(source), parsed=parsed, raw=parsed)


def flat_schema(fields: Fields) -> AvroSchema:
    return avro_schema([{"name": n, "type": k} for n, k in fields])


def registry() -> SchemaRegistryClient:
    return SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})


def register(client: SchemaRegistryClient, schema: AvroSchema | str, subject: str = "s") -> int:
    text = schema if isinstance(schema, str) else schema.text
    return int(client.register_schema(f"{subject}-value", Schema(text, "AVRO")))


def messages(n: int) -> list[dict[str, Any]]:
    return [
        {
            "message_id": i,
            "ts": 1_700_000_000_000 + i,
            "sender": i % 7,
            "recipient": (i * 13) % 11 - 5,
            "content": f"message {i % 5} ✓",
        }
        for i in range(n)
    ]


def problems(batch: DecodedBatch) -> list[tuple[int, str]]:
    return [(p.row, p.reason) for p in batch.problems]


def test_avro_values_decode_into_typed_columns_without_ts() -> None:
    records = messages(100)
    values: list[bytes | None] = [encode_value(MESSAGE, r) for r in records]
    keys = decimal_keys(np.array([r["sender"] for r in records]))
    decoder = value_decoder("avro", MESSAGE, key_format="decimal")
    assert decoder.fields == ("message_id", "sender", "recipient", "content")
    batch = decoder.decode(values, list(keys))
    assert batch.good.all() and batch.problems == ()
    assert set(batch.columns) == set(decoder.fields)
    for name in ("message_id", "sender", "recipient"):
        column = batch.columns[name]
        assert isinstance(column, np.ndarray) and column.dtype == np.int64
        assert column.tolist() == [r[name] for r in records]
    content = batch.columns["content"]
    assert isinstance(content, StringColumn)
    assert content.decode().tolist() == [r["content"] for r in records]


def test_bad_records_get_their_reason_and_the_good_ones_keep_their_order() -> None:
    records = messages(40)
    values: list[bytes | None] = [encode_value(MESSAGE, r) for r in records]
    keys: list[bytes | None] = [str(r["sender"]).encode() for r in records]
    values[3] = None
    values[5] = values[5][:-2]  # type: ignore[index]
    values[8] = values[8] + b"\x00"  # type: ignore[operator]
    keys[11] = b"eleven"
    keys[12] = None
    values[12] = None  # a null value wins over a bad key
    batch = value_decoder("avro", MESSAGE, key_format="decimal").decode(values, keys)
    assert problems(batch) == [
        (3, "null-value"),
        (5, "undecodable"),
        (8, "undecodable"),
        (11, "wrong-key-type"),
        (12, "null-value"),
    ]
    assert "does not decode as restream.social.Message" in batch.problems[1].detail
    assert "1 trailing bytes" in batch.problems[2].detail
    assert "b'eleven'" in batch.problems[3].detail
    kept = [i for i in range(40) if i not in (3, 5, 8, 11, 12)]
    assert np.flatnonzero(batch.good).tolist() == kept
    column = batch.columns["message_id"]
    assert isinstance(column, np.ndarray)
    assert column.tolist() == kept


def test_a_batch_of_only_bad_records_has_empty_typed_columns() -> None:
    batch = value_decoder("avro", MESSAGE).decode([None, b"\xff"], [None, None])
    assert problems(batch) == [(0, "null-value"), (1, "undecodable")]
    assert not batch.good.any()
    ids = batch.columns["message_id"]
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int64 and len(ids) == 0
    assert len(batch.columns["content"]) == 0


@pytest.mark.parametrize("fmt", ["avro", "avro-confluent", "json"])
def test_an_empty_batch_has_empty_typed_columns(fmt: ValueFormat) -> None:
    client = registry() if fmt == "avro-confluent" else None
    batch = value_decoder(fmt, MESSAGE, key_format="decimal", registry=client).decode([], [])
    assert batch.problems == () and batch.good.shape == (0,)
    ids, content = batch.columns["message_id"], batch.columns["content"]
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int64 and len(ids) == 0
    assert isinstance(content, StringColumn) and len(content) == 0


def test_keys_and_values_must_pair_up() -> None:
    with pytest.raises(SerdeError, match="2 values but 1 keys"):
        value_decoder("avro", MESSAGE).decode([b"", b""], [None])


DECIMAL = re.compile(rb"-?[0-9]+")


def decimal_ok(key: bytes | None) -> bool:
    return (
        key is not None and DECIMAL.fullmatch(key) is not None and LONG_MIN <= int(key) <= LONG_MAX
    )


def string_ok(key: bytes | None) -> bool:
    if key is None:
        return False
    try:
        key.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


KEYS = st.one_of(
    st.none(),
    st.binary(max_size=24),
    st.integers(LONG_MIN - 10, LONG_MAX + 10).map(lambda i: str(i).encode()),
    st.from_regex(rb"\A-?[0-9]{1,25}\Z"),
    st.text(max_size=8).map(str.encode),
    st.sampled_from(
        [b"-", b"+1", b" 1", b"1 ", b"1.0", b"0x1f", "\u0661".encode(), b"-0", b"007", b"1\n2"]
    ),
)


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(KEYS, max_size=40), st.sampled_from(["decimal", "string", "any"]))
def test_key_formats(keys: list[bytes | None], key_format: Any) -> None:
    values: list[bytes | None] = [encode_value(MESSAGE, messages(1)[0])] * len(keys)
    batch = value_decoder("avro", MESSAGE, key_format=key_format).decode(values, keys)
    if key_format == "any":
        expected = [True] * len(keys)
    else:
        expected = [(decimal_ok if key_format == "decimal" else string_ok)(k) for k in keys]
    assert batch.good.tolist() == expected
    assert problems(batch) == [(i, "wrong-key-type") for i, ok in enumerate(expected) if not ok]


def roundtrip_columns(fields: Fields, records: list[dict[str, Any]]) -> dict[str, Any]:
    dtypes = {"long": np.int64, "int": np.int32, "boolean": np.bool_}
    dtypes |= {"float": np.float32, "double": np.float64, "string": object}
    return {n: np.array([r[n] for r in records], dtype=dtypes[k]) for n, k in fields}


@st.composite
def flat_batches(draw: st.DrawFn) -> tuple[Fields, list[dict[str, Any]]]:
    fields = draw(flat_fields())
    record = st.fixed_dictionaries({name: VALUES[kind] for name, kind in fields})
    return fields, draw(st.lists(record, max_size=40))


@settings(max_examples=examples(120), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flat_batches(), st.sampled_from(["avro", "avro-confluent", "json"]))
def test_encode_then_decode_gives_the_columns_back(
    batch: tuple[Fields, list[dict[str, Any]]], fmt: ValueFormat
) -> None:
    fields, records = batch
    schema = flat_schema(fields)
    client = registry() if fmt == "avro-confluent" else None
    schema_id = register(client, schema) if client is not None else None
    values = value_encoder(fmt, schema, schema_id=schema_id).encode(
        roundtrip_columns(fields, records)
    )
    decoder = value_decoder(fmt, schema, exclude=(), registry=client)
    decoded = decoder.decode(list(values), [None] * len(values))
    assert decoded.good.all() and decoded.problems == ()
    for name, kind in fields:
        expected = [r[name] for r in records]
        column = decoded.columns[name]
        if fmt == "json" and kind in ("float", "double"):
            assert isinstance(column, np.ndarray)
            want = np.array(expected, dtype=column.dtype)
            nan = np.isnan(want)  # JSON keeps neither a NaN's sign nor its payload
            assert (np.isnan(column) == nan).all()
            assert column[~nan].view(np.uint8).tolist() == want[~nan].view(np.uint8).tolist()
        else:
            assert_column(column, kind, expected)


def test_avro_encoding_is_fastavro_byte_for_byte_and_confluent_adds_the_header() -> None:
    records = messages(30)
    columns = roundtrip_columns(
        [("message_id", "long"), ("ts", "long"), ("sender", "long"), ("recipient", "long")],
        records,
    )
    columns["content"] = StringColumn.encode([r["content"] for r in records])
    plain = value_encoder("avro", MESSAGE).encode(columns)
    assert plain == [encode_value(MESSAGE, r) for r in records]
    framed = value_encoder("avro-confluent", MESSAGE, schema_id=7).encode(columns)
    assert framed == [confluent_header(7) + v for v in plain]


def test_json_encoding_is_compact_json_in_schema_order() -> None:
    schema = flat_schema([("n", "int"), ("b", "boolean"), ("f", "float"), ("s", "string")])
    columns = {
        "n": np.array([1, -2], dtype=object),  # Python ints in an object array
        "b": np.array([True, False]),
        "f": np.array([0.1, 2.5], dtype=np.float32),
        "s": np.array(["é", "x"], dtype=object),
    }
    out = value_encoder("json", schema).encode(columns)
    f32 = float(np.float32(0.1))
    assert (
        out[0]
        == json.dumps({"n": 1, "b": True, "f": f32, "s": "é"}, separators=(",", ":")).encode()
    )
    assert out[1] == b'{"n":-2,"b":false,"f":2.5,"s":"x"}'


def test_object_columns_of_python_values_encode_like_typed_ones() -> None:
    schema = flat_schema([("a", "long"), ("b", "boolean"), ("d", "double"), ("s", "string")])
    typed = {
        "a": np.array([1, 2**40]),
        "b": np.array([True, False]),
        "d": np.array([1.0, 2.5]),
        "s": np.array(["x", "y"], dtype=object),
    }
    loose = {name: np.array(column.tolist(), dtype=object) for name, column in typed.items()}
    loose["d"] = np.array([1, 2.5], dtype=object)  # an int for a double is fine
    loose["a"] = np.array([np.int64(1), 2**40], dtype=object)  # so are numpy scalars
    loose["b"] = np.array([np.bool_(True), False], dtype=object)
    encoder = value_encoder("avro", schema)
    assert encoder.encode(loose) == encoder.encode(typed)


@pytest.mark.parametrize(
    ("column", "kind", "message"),
    [
        (np.array([1.5], dtype=object), "long", "expected long values, got float"),
        (np.array([True], dtype=object), "long", "expected long values, got bool"),
        (np.array([1.0]), "long", "expected integers"),
        (np.array([1], dtype=object), "boolean", "expected boolean values, got int"),
        (np.array([np.True_], dtype=object), "double", "expected double values, got bool"),
        (np.array([2**31]), "int", "outside the Avro int"),
        (np.array([2**70], dtype=object), "long", "outside the Avro long range"),
        (np.array([1], dtype=object), "string", "expected str values"),
    ],
)
@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_encoding_rejects_values_of_the_wrong_type(
    column: Any, kind: Any, message: str, fmt: ValueFormat
) -> None:
    encoder = value_encoder(fmt, flat_schema([("x", kind)]))
    with pytest.raises(SerdeError, match=message):
        encoder.encode({"x": column})


def test_encoding_needs_every_field_in_columns_of_one_length() -> None:
    encoder = value_encoder("avro", flat_schema([("a", "long"), ("b", "long")]))
    with pytest.raises(SerdeError, match=r"no column for field\(s\) b"):
        encoder.encode({"a": np.array([1])})
    with pytest.raises(SerdeError, match="different lengths"):
        encoder.encode({"a": np.array([1]), "b": np.array([1, 2])})


def test_schema_ids_go_with_avro_confluent_only() -> None:
    with pytest.raises(ConfigError, match="needs the output schema's id"):
        value_encoder("avro-confluent", MESSAGE)
    with pytest.raises(ConfigError, match="takes no schema id"):
        value_encoder("json", MESSAGE, schema_id=3)
    with pytest.raises(ConfigError, match="unknown value format"):
        value_encoder("protobuf", MESSAGE)  # type: ignore[arg-type]


def test_decoders_need_flat_schemas_and_known_formats() -> None:
    nested = avro_schema(
        [{"name": "a", "type": "long"}, {"name": "tags", "type": ["null", "string"]}], "Nested"
    )
    with pytest.raises(ConfigError, match=r"schema: field 'tags' of test.Nested has type"):
        value_decoder("avro", nested)
    with pytest.raises(ConfigError, match="unknown value format"):
        value_decoder("csv", MESSAGE)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown key format"):
        value_decoder("avro", MESSAGE, key_format="uuid")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="schema-registry"):
        value_decoder("avro-confluent", MESSAGE)
    for default in (2**40, True):  # fastavro accepts both for an int
        bad = avro_schema([{"name": "a", "type": "int", "default": default}], "BadDefault")
        with pytest.raises(ConfigError, match=r"default of field 'a' of test\.BadDefault"):
            value_decoder("json", bad)


def confluent(schema_id: int, schema: AvroSchema, record: dict[str, Any]) -> bytes:
    return confluent_header(schema_id) + encode_value(schema, record)


def test_confluent_values_are_read_by_writer_schema_and_reader_field_names() -> None:
    client = registry()
    reader_id = register(client, MESSAGE)
    # The same record with its fields reordered, one promoted (int to long) and extras.
    writer = avro_schema(
        [
            {"name": "content", "type": "string"},
            {"name": "extra", "type": "double"},
            {"name": "recipient", "type": "int"},
            {"name": "sender", "type": "long"},
            {"name": "message_id", "type": "long"},
        ],
        "Message",
    )
    complex_writer = avro_schema(
        [
            {"name": "tags", "type": {"type": "map", "values": "long"}},
            {"name": "message_id", "type": "long"},
            {"name": "recipient", "type": "long"},
            {"name": "sender", "type": "long"},
            {"name": "content", "type": "string"},
        ],
        "Message",
    )
    writer_id = register(client, writer, "w")
    complex_id = register(client, complex_writer, "c")
    records = messages(60)
    values: list[bytes | None] = []
    for i, r in enumerate(records):
        if i % 3 == 0:
            values.append(confluent(reader_id, MESSAGE, r))
        elif i % 3 == 1:
            values.append(confluent(writer_id, writer, {**r, "extra": 0.5}))
        else:
            values.append(confluent(complex_id, complex_writer, {**r, "tags": {"a": i}}))
    decoder = value_decoder("avro-confluent", MESSAGE, registry=client)
    batch = decoder.decode(values, [None] * len(values))
    assert batch.good.all()
    for name in ("message_id", "sender", "recipient"):
        column = batch.columns[name]
        assert isinstance(column, np.ndarray) and column.dtype == np.int64
        assert column.tolist() == [r[name] for r in records]
    content = batch.columns["content"]
    assert isinstance(content, StringColumn)
    assert content.decode().tolist() == [r["content"] for r in records]


def test_confluent_framing_unknown_ids_and_unreadable_writers() -> None:
    client = registry()
    reader_id = register(client, MESSAGE)
    lacking = avro_schema(
        [{"name": n, "type": "long"} for n in ("message_id", "sender", "recipient")], "Message"
    )
    lacking_id = register(client, lacking, "lacking")
    other_id = register(client, avro_schema([{"name": "x", "type": "long"}], "Other"), "o")
    good = confluent(reader_id, MESSAGE, messages(1)[0])
    values: list[bytes | None] = [
        good,
        b"",
        b"\x00\x00\x01",
        b"\x01" + good[1:],
        confluent_header(9999) + good[5:],
        confluent_header(lacking_id) + encode_value(lacking, messages(1)[0]),
        confluent_header(other_id) + b"\x02",
        good[:-1],
    ]
    decoder = value_decoder("avro-confluent", MESSAGE, registry=client)
    batch = decoder.decode(values, [None] * len(values))
    assert problems(batch) == [
        (1, "undecodable"),
        (2, "undecodable"),
        (3, "undecodable"),
        (4, "unknown-schema-id"),
        (5, "undecodable"),
        (6, "undecodable"),
        (7, "undecodable"),
    ]
    details = {p.row: p.detail for p in batch.problems}
    assert "not Confluent-framed" in details[1] and "first byte 1" in details[3]
    assert "schema id 9999 is not in the schema registry" in details[4]
    assert f"writer schema id {lacking_id} has no field 'content'" in details[5]
    assert "is record test.Other, not restream.social.Message" in details[6]
    assert batch.good.tolist() == [True] + [False] * 7


def test_confluent_bodies_decode_exactly_as_plain_ones_bad_records_included() -> None:
    client = registry()
    schema_id = register(client, MESSAGE)
    plain: list[bytes | None] = [encode_value(MESSAGE, r) for r in messages(300)]
    for row in range(7, 300, 23):
        body = plain[row]
        assert body is not None
        plain[row] = [body[:-3], body + b"\x01", body[:1] + b"\xff" + body[2:]][row % 3]
    framed: list[bytes | None] = [confluent_header(schema_id) + v for v in plain if v]
    keys: list[bytes | None] = [None] * len(plain)
    want = value_decoder("avro", MESSAGE).decode(plain, keys)
    got = value_decoder("avro-confluent", MESSAGE, registry=client).decode(framed, keys)
    assert got.problems == want.problems and len(want.problems) >= 10
    assert got.good.tolist() == want.good.tolist()
    for name in ("message_id", "sender", "recipient"):
        assert np.array_equal(got.columns[name], want.columns[name])  # type: ignore[arg-type]
    content, expected = got.columns["content"], want.columns["content"]
    assert isinstance(content, StringColumn) and isinstance(expected, StringColumn)
    assert content.equals(expected)


def test_a_reader_default_fills_a_field_the_writer_lacks() -> None:
    client = registry()
    reader = avro_schema(
        [{"name": "a", "type": "long"}, {"name": "s", "type": "string", "default": "none"}]
    )
    writer = avro_schema([{"name": "a", "type": "long"}])
    writer_id = register(client, writer)
    values: list[bytes | None] = [confluent(writer_id, writer, {"a": i}) for i in range(20)]
    batch = value_decoder("avro-confluent", reader, registry=client).decode(values, [None] * 20)
    assert batch.good.all()
    strings = batch.columns["s"]
    assert isinstance(strings, StringColumn)
    assert strings.decode().tolist() == ["none"] * 20


class CountingRegistry:
    """A registry that counts lookups and can fail with an error of any status."""

    def __init__(self, inner: Any = None, status: int | None = None) -> None:
        self.inner, self.status, self.calls = inner, status, 0

    def get_schema(self, schema_id: int) -> Any:
        self.calls += 1
        if self.status is not None:
            error = RuntimeError(f"HTTP {self.status}")
            error.http_status_code = self.status  # type: ignore[attr-defined]
            raise error
        return self.inner.get_schema(schema_id)


def test_registry_lookups_are_cached_and_outages_fail_loudly() -> None:
    client = registry()
    schema_id = register(client, MESSAGE)
    counting = CountingRegistry(client)
    decoder = value_decoder("avro-confluent", MESSAGE, registry=counting)
    values: list[bytes | None] = [confluent(schema_id, MESSAGE, r) for r in messages(5)]
    unknown: list[bytes | None] = [confluent_header(4242) + b"\x00"]
    for _ in range(3):
        assert decoder.decode(values, [None] * 5).good.all()
        assert problems(decoder.decode(unknown, [None])) == [(0, "unknown-schema-id")]
    assert counting.calls == 2
    down = value_decoder("avro-confluent", MESSAGE, registry=CountingRegistry(status=503))
    with pytest.raises(BrokerError, match="schema id 1 in the schema registry failed"):
        down.decode([confluent(1, MESSAGE, messages(1)[0])], [None])


JSON_SCHEMA = flat_schema(
    [
        ("l", "long"),
        ("i", "int"),
        ("b", "boolean"),
        ("f", "float"),
        ("d", "double"),
        ("s", "string"),
    ]
)
JSON_GOOD = {"l": -5, "i": 7, "b": True, "f": 0.5, "d": 1e300, "s": "é"}


@pytest.mark.parametrize(
    ("field", "value", "detail"),
    [
        ("i", True, "field 'i' is a boolean, not an integer"),
        ("l", 1.0, "field 'l' is a number, not an integer"),
        ("l", 2**63, "field 'l' holds 9223372036854775808, outside the Avro long range"),
        ("i", -(2**31) - 1, "outside the Avro int range"),
        ("b", 1, "field 'b' is an integer, not a boolean"),
        ("f", "1", "field 'f' is a string, not a number"),
        ("f", 1e39, "field 'f' holds 1e+39, outside the Avro float range"),
        ("d", None, "field 'd' is null, not a number"),
        ("s", 5, "field 's' is an integer, not a string"),
        ("s", ["x"], "field 's' is a JSON list, not a string"),
        ("s", "\ud800", "field 's' is not valid Unicode"),
    ],
)
def test_json_values_of_the_wrong_type_are_undecodable(field: str, value: Any, detail: str) -> None:
    record = {**JSON_GOOD, field: value}
    values: list[bytes | None] = [json.dumps(JSON_GOOD).encode(), json.dumps(record).encode()]
    batch = value_decoder("json", JSON_SCHEMA).decode(values, [None, None])
    assert problems(batch) == [(1, "undecodable")]
    assert detail in batch.problems[0].detail


def test_json_values_must_be_utf8_objects_with_every_field() -> None:
    missing = {k: v for k, v in JSON_GOOD.items() if k != "d"}
    values: list[bytes | None] = [
        json.dumps({**JSON_GOOD, "ts": "ignored", "extra": [1]}).encode(),
        json.dumps(missing).encode(),
        b"[1, 2]",
        b"{not json",
        b'{"s": "\xff"}',
        json.dumps(JSON_GOOD).encode("utf-16"),
        b"[" * 100_000 + b"]" * 100_000,
    ]
    batch = value_decoder("json", JSON_SCHEMA).decode(values, [None] * 7)
    assert problems(batch) == [(i, "undecodable") for i in range(1, 7)]
    details = [p.detail for p in batch.problems]
    assert details[0] == "field 'd' is missing"
    assert details[1] == "value is a JSON list, not an object"
    assert all("not UTF-8 JSON" in d for d in details[2:])
    floats = batch.columns["f"]
    assert isinstance(floats, np.ndarray) and floats.dtype == np.float32
    assert floats.tolist() == [0.5]
    strings = batch.columns["s"]
    assert isinstance(strings, StringColumn) and strings.decode().tolist() == ["é"]


def test_json_fields_with_a_default_may_be_missing() -> None:
    schema = avro_schema(
        [{"name": "a", "type": "long"}, {"name": "s", "type": "string", "default": "dflt"}]
    )
    values: list[bytes | None] = [b'{"a": 1}', b'{"a": 2, "s": "x"}', b'{"s": "y"}']
    batch = value_decoder("json", schema).decode(values, [None] * 3)
    assert problems(batch) == [(2, "undecodable")]
    strings = batch.columns["s"]
    assert isinstance(strings, StringColumn)
    assert strings.decode().tolist() == ["dflt", "x"]


def test_json_skips_excluded_fields() -> None:
    record = {k: v for k, v in messages(1)[0].items() if k != "ts"}
    batch = value_decoder("json", MESSAGE).decode([json.dumps(record).encode()], [None])
    assert batch.good.all()
    assert "ts" not in batch.columns


def test_problem_values_compare_by_content() -> None:
    assert RecordProblem(1, "null-value", "x") == RecordProblem(1, "null-value", "x")


def test_json_without_a_schema_keeps_values_exact_and_refuses_what_json_cannot_hold() -> None:
    from connector.serde.values import JsonRecordEncoder
    from engine.log import StringColumn
    from engine.output import ABSENT

    floats = np.array([0.1, 1e300, -0.0], dtype=np.float64)
    columns = {
        "n": np.array([1, 2**62, -3], dtype=np.int64),
        "x": floats,
        "s": StringColumn.encode(["a", "é", "c"]),
        "o": np.array([True, None, ABSENT], dtype=object),
    }
    values = JsonRecordEncoder(("s", "n", "x", "o")).encode(columns)
    rows = [json.loads(v) for v in values]
    assert rows == [
        {"s": "a", "n": 1, "x": 0.1, "o": True},
        {"s": "é", "n": 2**62, "x": 1e300, "o": None},
        {"s": "c", "n": -3, "x": -0.0},
    ]
    assert [r["x"] for r in rows] == floats.tolist()  # floats round-trip bit for bit
    assert list(rows[0]) == ["s", "n", "x", "o"]  # the declared order
    for bad in (float("nan"), b"bytes"):
        column = np.array([bad], dtype=object)
        with pytest.raises(SerdeError, match=r"field 'v' holds .*which JSON cannot hold"):
            JsonRecordEncoder().encode({"v": column})
    with pytest.raises(SerdeError, match="no column for field"):
        JsonRecordEncoder(("missing",)).encode({"v": np.array([1])})


def test_a_registry_lookup_pickles_without_its_client_and_finds_the_same_registry() -> None:
    config = RunConfig(value_format="avro-confluent", schema_registry_url="mock://lookup-test")
    client = registry_client(config)
    assert client is not None
    schema_id = register_value_schema(client, "t", load_schema("social/Message"))
    lookup = RegistryLookup(config)
    assert "Message" in lookup.get_schema(schema_id).schema_str
    shipped = pickle.dumps(lookup)  # no client inside: sockets and TLS contexts do not pickle
    assert b"mock://lookup-test" in shipped
    # In this process the same settings give the same (cached) client, so the same registry.
    assert (
        pickle.loads(shipped).get_schema(schema_id).schema_str
        == client.get_schema(schema_id).schema_str
    )
