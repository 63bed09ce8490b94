"""A record schema inferred from JSON values, for ``--value-format json`` without an ``.avsc``.

The decoder reads JSON into typed columns, so each field needs one type. Given a sample of a
topic's values (the first records of each partition the job reads: the same on every resume,
since the job's ranges are pinned), each field gets the narrowest type that holds every
sampled value: ``boolean``, ``long`` (integers), ``double`` (numbers, integers among them),
``string``. Field order is the order of first appearance. Fields the sample leaves in doubt
(only nulls, nested objects or arrays, strings mixed with numbers, a field that some sampled
records lack) stop the job with a message naming the field: give an ``.avsc`` for them (with
a default for a field that some records lack). Records that do not fit the inferred schema
later (a string where numbers were, a missing field, a null) are bad records with their
reason, like records that do not fit a given schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import fastavro

from connector.errors import ConfigError
from connector.serde.avro import AvroSchema

__all__ = ["SAMPLE_PER_PARTITION", "infer_json_schema", "inferred_schema"]

#: Records sampled from the start of each partition's range.
SAMPLE_PER_PARTITION = 1000

_ORDER = {"boolean": 0, "long": 1, "double": 2, "string": 3}


def _type_of(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    return "object" if isinstance(value, dict) else "array"


def infer_json_schema(kind: str, values: Iterable[bytes | None], *, label: str) -> AvroSchema:
    """The schema of event kind ``kind``'s JSON values; ConfigError labelled ``label`` when
    the sample cannot decide it."""
    seen: dict[str, set[str | None]] = {}
    present: dict[str, int] = {}
    objects = 0
    for value in values:
        if value is None:
            continue
        try:
            record = json.loads(value)
        except (UnicodeDecodeError, ValueError):
            continue  # a bad record: the decoder dead-letters it with its reason
        if not isinstance(record, dict):
            continue
        objects += 1
        for name, field in record.items():
            seen.setdefault(str(name), set()).add(_type_of(field))
            present[str(name)] = present.get(str(name), 0) + 1
    if objects == 0:
        raise ConfigError(
            label,
            f"cannot infer the fields of event kind {kind!r}: the start of its topics holds no "
            f"JSON objects; give {kind}=path.avsc",
        )
    fields = []
    for name, types in seen.items():
        known = {t for t in types if t is not None}
        doubt = ""
        if not known:
            doubt = "is null in every sampled record"
        elif present[name] < objects:
            doubt = (
                f"is missing from {objects - present[name]} of {objects} sampled records (they "
                "would all be bad records)"
            )
        elif known & {"object", "array"}:
            doubt = "holds nested JSON (objects or arrays); columns hold numbers, text, booleans"
        elif "string" in known and len(known) > 1:
            doubt = f"holds both text and {sorted(known - {'string'})} values"
        elif "boolean" in known and len(known) > 1:
            doubt = f"holds both booleans and {sorted(known - {'boolean'})} values"
        if doubt:
            raise ConfigError(
                label,
                f"cannot infer the type of field {name!r} of event kind {kind!r}: it {doubt}; "
                f"give {kind}=path.avsc",
            )
        fields.append({"name": name, "type": max(known, key=_ORDER.__getitem__)})
    return inferred_schema(
        json.dumps({"type": "record", "name": _record_name(kind), "fields": fields})
    )


def inferred_schema(text: str) -> AvroSchema:
    """The schema of an inferred schema's text (as a job's manifest keeps it)."""
    parsed = fastavro.parse_schema(json.loads(text))
    assert isinstance(parsed, dict)
    return AvroSchema(name=str(parsed["name"]), text=text, parsed=parsed, raw=parsed)


def _record_name(kind: str) -> str:
    """An Avro name for the kind: letters, digits and ``_``, not starting with a digit."""
    name = "".join(c if c.isalnum() and c.isascii() else "_" for c in kind) or "event"
    return name if not name[0].isdigit() else f"_{name}"
