"""``build_job``: the settings checked before a run touches a broker — event kinds without an
input topic, outputs declared without ``fields=``, JSON output without a schema, schemas that
cannot become columns, and ``restream positions`` needing no value schemas."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.config import RunConfig
from connector.errors import ConfigError
from connector.job.run import build_job, fingerprint_parts

# Two kinds; the output declares no fields, as in the README's example.
_RULES = """
from engine.pipeline import Pipeline, Record

def build(fields=()):
    p = Pipeline("fraud")
    n = p.count("n", on="payment", key="card")
    seen = p.lookup("seen", on="payment", table=n, key="card")
    back = p.count("chargebacks", on="chargeback", key="card")
    out = p.output("flags", key="card", fields=fields)
    p.emit("flag", on="payment", output=out, inputs=[seen],
           fn=lambda e, view: [Record(e.card, {"card": e.card, "n": e.seen})])
    return p

def declared():
    return build(fields=("card", "n"))
"""

_PAYMENT = {
    "type": "record",
    "name": "Payment",
    "fields": [{"name": "card", "type": "string"}, {"name": "ts", "type": "long"}],
}
_FLAGS = {
    "type": "record",
    "name": "Flag",
    "fields": [{"name": "card", "type": "string"}, {"name": "n", "type": "long"}],
}


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "rules.py").write_text(textwrap.dedent(_RULES), encoding="utf-8")
    for name, schema in (("Payment", _PAYMENT), ("Flag", _FLAGS)):
        (tmp_path / f"{name}.avsc").write_text(json.dumps(schema), encoding="utf-8")
    nested = {**_FLAGS, "fields": [{"name": "tags", "type": {"type": "array", "items": "string"}}]}
    (tmp_path / "Nested.avsc").write_text(json.dumps(nested), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def _config(**kw: Any) -> RunConfig:
    values: dict[str, Any] = {
        "job_id": "fraud-v1",
        "bootstrap_servers": "127.0.0.1:1",  # never contacted by build_job
        "pipeline": "./rules.py:build",
        "inputs": (("payments", "payment"), ("chargebacks", "chargeback")),
        "schemas": {"payment": "Payment.avsc", "chargeback": "Payment.avsc"},
        "output_schemas": {"flags": "Flag.avsc"},
    }
    values.update(kw)
    return RunConfig(**values)


def test_a_kind_without_an_input_topic_is_refused_naming_it(folder: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build_job(_config(inputs=(("payments", "payment"),)))
    assert info.value.field == "inputs (--inputs, RESTREAM_INPUTS)"
    assert "no input topic is of event kind 'chargeback'" in info.value.message
    assert "--inputs TOPIC=chargeback" in info.value.message


def test_an_output_without_fields_takes_a_schema(folder: Path) -> None:
    job = build_job(_config())
    [(stream, topic, schema)] = job.outputs
    assert (stream, topic) == ("flags", "fraud-v1.flags")
    assert schema is not None and schema.name == "Flag"


def test_declared_fields_are_checked_against_the_schema(folder: Path) -> None:
    build_job(_config(pipeline="./rules.py:declared"))
    with pytest.raises(ConfigError, match=r"fields \['ts'\] that p.output\('flags', fields="):
        build_job(_config(pipeline="./rules.py:declared", output_schemas={"flags": "Payment.avsc"}))


def test_avro_output_without_a_schema_says_json_needs_none(folder: Path) -> None:
    with pytest.raises(ConfigError, match=r"flags=path.avsc, or write JSON without one"):
        build_job(_config(output_schemas={}))


def test_json_output_needs_no_schema(folder: Path) -> None:
    job = build_job(_config(output_schemas={}, output_format="json"))
    assert job.outputs == (("flags", "fraud-v1.flags", None),)
    assert fingerprint_parts(job)["outputs"] == [["flags", "fraud-v1.flags", []]]
    declared = build_job(
        _config(pipeline="./rules.py:declared", output_schemas={}, output_format="json")
    )
    assert fingerprint_parts(declared)["outputs"] == [["flags", "fraud-v1.flags", ["card", "n"]]]


def test_positions_needs_no_value_schemas(folder: Path) -> None:
    job = build_job(_config(schemas={}, output_schemas={}), schemas=False)
    assert job.inputs == (("payments", "payment"), ("chargebacks", "chargeback"))
    assert job.schemas == {}
    with pytest.raises(ConfigError, match="no schema for event kind 'chargeback'"):
        build_job(_config(schemas={}, output_schemas={}))


def test_a_schema_that_cannot_be_columns_is_a_setting_error(folder: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build_job(_config(output_schemas={"flags": "Nested.avsc"}))
    assert info.value.field == "output_schemas (--output-schemas, RESTREAM_OUTPUT_SCHEMAS)"
    assert "field 'tags' of Flag has type" in info.value.message
    with pytest.raises(ConfigError, match="RESTREAM_SCHEMAS"):
        build_job(_config(schemas={"payment": "Nested.avsc", "chargeback": "Payment.avsc"}))


def test_event_time_fields_are_checked_with_the_settings(folder: Path) -> None:
    build_job(_config(event_time={"payment": "ts"}))
    for given, expected in [
        ({"refund": "ts"}, "refund=ts: no input topic is of event kind 'refund'"),
        ({"payment": "when"}, "payment=when: schema Payment has no field 'when'; it has"),
    ]:
        with pytest.raises(ConfigError) as info:
            build_job(_config(event_time=given))
        assert info.value.field == "event_time (--event-time, RESTREAM_EVENT_TIME)"
        assert expected in info.value.message
    assert fingerprint_parts(build_job(_config(event_time={"payment": "ts"})))["event_time"] == {
        "payment": "ts"
    }
    assert "event_time" not in fingerprint_parts(build_job(_config()))
