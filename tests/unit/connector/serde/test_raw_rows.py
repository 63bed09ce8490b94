"""Values and keys read where they lie in a buffer (RawRows, the native reader's) decode exactly
as the same values and keys as a list of bytes: the same columns, good rows and problems with
their details, in every format and key format, bad records included."""

from __future__ import annotations

import json
import uuid
from typing import Any

import numpy as np
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.serde.avro import confluent_header, encode_value, load_schema
from connector.serde.rows import RawRows, ascii_rows, gather, valid_decimals
from connector.serde.values import DecodedBatch, value_decoder
from engine.log import StringColumn
from tests.support.budget import examples

MESSAGE = load_schema("social/Message")
_REGISTRY = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
_SCHEMA_ID = int(_REGISTRY.register_schema("m-value", Schema(MESSAGE.text, "AVRO")))

_message = st.fixed_dictionaries(
    {
        "message_id": st.integers(-(2**63), 2**63 - 1),
        "ts": st.integers(0, 2**41),
        "sender": st.integers(-(2**63), 2**63 - 1),
        "recipient": st.integers(-(2**63), 2**63 - 1),
        "content": st.text(max_size=12),
    }
)


def _avro(record: dict[str, Any]) -> bytes:
    return encode_value(MESSAGE, record)


def _value(fmt: str) -> st.SearchStrategy[bytes | None]:
    if fmt == "json":
        good = _message.map(lambda r: json.dumps(r).encode())
    elif fmt == "avro-confluent":
        good = _message.map(lambda r: confluent_header(_SCHEMA_ID) + _avro(r))
    else:
        good = _message.map(_avro)
    broken = good.flatmap(
        lambda v: st.sampled_from([v[:-1], v + b"\x01", v[:1] + b"\xff" + v[2:], b"", b"\x00"])
    )
    return st.one_of(good, good, good, broken, st.binary(max_size=12), st.none())


_key = st.one_of(
    st.none(),
    st.binary(max_size=12),
    st.integers(-(2**63) - 5, 2**63 + 5).map(lambda i: str(i).encode()),
    st.from_regex(rb"\A-?[0-9]{1,22}\Z"),
    st.text(max_size=6).map(str.encode),
)


def _raw(rows: list[bytes | None], junk: bytes) -> RawRows:
    """The rows in one buffer, with ``junk`` before each (fetched records have framing)."""
    data, starts, lengths = b"", [], []
    for row in rows:
        data += junk
        starts.append(len(data))
        lengths.append(-1 if row is None else len(row))
        data += row or b""
    return RawRows(data + junk, np.array(starts, np.int64), np.array(lengths, np.int64))


def _same(a: DecodedBatch, b: DecodedBatch) -> None:
    assert a.problems == b.problems
    assert a.good.tolist() == b.good.tolist()
    assert a.columns.keys() == b.columns.keys()
    for name, column in a.columns.items():
        other = b.columns[name]
        if isinstance(column, StringColumn):
            assert isinstance(other, StringColumn) and column.equals(other)
        else:
            assert isinstance(other, np.ndarray)
            assert column.dtype == other.dtype
            assert column.tobytes() == other.tobytes()


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["avro", "avro-confluent", "json"]).flatmap(
        lambda fmt: st.tuples(
            st.just(fmt),
            st.lists(st.tuples(_value(fmt), _key), max_size=70),
        )
    ),
    st.sampled_from(["decimal", "string", "any"]),
    st.binary(max_size=3),
)
def test_rows_in_a_buffer_decode_as_a_list_does(
    drawn: tuple[str, list[tuple[bytes | None, bytes | None]]], key_format: Any, junk: bytes
) -> None:
    fmt, pairs = drawn
    values = [v for v, _ in pairs]
    keys = [k for _, k in pairs]
    registry = _REGISTRY if fmt == "avro-confluent" else None
    decoder = value_decoder(fmt, MESSAGE, key_format=key_format, registry=registry)  # type: ignore[arg-type]
    _same(decoder.decode(_raw(values, junk), _raw(keys, junk)), decoder.decode(values, keys))


@given(st.lists(_key, max_size=30), st.binary(max_size=3))
def test_the_compiled_checks_and_gather(keys: list[bytes | None], junk: bytes) -> None:
    raw = _raw(keys, junk)
    assert raw.rows() == keys
    assert [raw.row(i) for i in range(len(keys))] == keys
    assert gather(raw, b"<", b">") == b"<" + b"".join(k or b"" for k in keys) + b">"
    valid, long = valid_decimals(raw)
    for key, ok, more in zip(keys, valid.tolist(), long.tolist(), strict=True):
        digits = (key or b"").removeprefix(b"-")
        want = key is not None and digits.isdigit() and digits.isascii()
        assert ok == want
        assert more == (want and len(digits) > 18)
    assert ascii_rows(raw).tolist() == [(k or b"").isascii() for k in keys]
    picked = np.arange(len(keys))[::-2]
    assert raw.take(picked).rows() == [keys[i] for i in picked.tolist()]
