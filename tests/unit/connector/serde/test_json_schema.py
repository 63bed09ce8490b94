"""Schemas inferred from sampled JSON values (``--value-format json`` without an .avsc)."""

from __future__ import annotations

import json

import pytest

from connector.errors import ConfigError
from connector.serde.json_schema import infer_json_schema
from connector.serde.values import check_schema, value_decoder


def _values(*records: object) -> list[bytes | None]:
    return [json.dumps(r).encode() for r in records]


def test_each_field_gets_the_narrowest_type_that_holds_every_sampled_value() -> None:
    sample = _values(
        {"card": "c1", "cents": 5, "rate": 1, "ok": True},
        {"card": "c2", "cents": 7, "rate": 0.5, "ok": False},
    )
    schema = infer_json_schema("pay-ment", [*sample, b"not json", b"[1]", None], label="schemas")
    assert schema.name == "pay_ment"
    assert [(f["name"], f["type"]) for f in schema.raw["fields"]] == [
        ("card", "string"),
        ("cents", "long"),
        ("rate", "double"),  # integers among numbers: a double
        ("ok", "boolean"),
    ]
    check_schema(schema, "schemas")  # the decoder can read it into columns


def test_values_that_do_not_fit_later_are_bad_records_with_their_reason() -> None:
    schema = infer_json_schema("payment", _values({"card": "c1", "cents": 5}), label="schemas")
    decoded = value_decoder("json", schema).decode(
        _values({"card": "c2", "cents": 6}, {"card": "c3", "cents": "six"}, {"card": "c4"}),
        [None, None, None],
    )
    assert decoded.good.tolist() == [True, False, False]
    details = [p.detail for p in decoded.problems]
    assert "cents" in details[0] and "not an integer" in details[0]
    assert "cents" in details[1] and "missing" in details[1]


@pytest.mark.parametrize(
    ("records", "says"),
    [
        ([{"a": None}], "field 'a' of event kind 'k': it is null in every sampled record"),
        ([{"a": {"b": 1}}], "field 'a' of event kind 'k': it holds nested JSON"),
        ([{"a": [1]}], "holds nested JSON"),
        ([{"a": "x"}, {"a": 1}], "field 'a' of event kind 'k': it holds both text and ['long']"),
        ([{"a": True}, {"a": 1}], "holds both booleans and ['long'] values"),
        ([{"a": 1, "b": 2}, {"a": 2}], "field 'b' of event kind 'k': it is missing from 1 of 2"),
        ([], "the start of its topics holds no JSON objects"),
    ],
)
def test_a_sample_that_leaves_a_field_in_doubt_asks_for_an_avsc(
    records: list[object], says: str
) -> None:
    with pytest.raises(ConfigError, match=r"give k=path\.avsc") as info:
        infer_json_schema("k", _values(*records), label="schemas")
    assert says in str(info.value)
    assert str(info.value).startswith("schemas: ")
