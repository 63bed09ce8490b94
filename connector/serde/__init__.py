"""Record values to engine columns and back: Avro (plain and Confluent-framed) and JSON.

::

    values.py           value_decoder / value_encoder: a partition's batch of records to
                        columns and bad-record problems (keys checked too), and back
    avro.py             schemas (``schemas/`` or a ``.avsc`` path), the Confluent header,
                        one-value encode/decode (the reference), column encoding
    avro_bulk.py        encoding whole columns at once, bit-identical to fastavro
    avro_decode.py      decoding a batch's bodies in bulk (polars), checked record by record
    schema_registry.py  the Confluent Schema Registry client a job uses (``avro-confluent``)

``schema_registry`` is not re-exported here: it loads confluent-kafka's HTTP client stack,
which only a job that uses a registry needs; import it from its module.
"""

from __future__ import annotations

from connector.serde.avro import AvroSchema, load_schema, load_schema_file
from connector.serde.values import (
    KEY_FORMATS,
    VALUE_FORMATS,
    DecodedBatch,
    KeyFormat,
    RecordProblem,
    SchemaRegistry,
    ValueDecoder,
    ValueEncoder,
    ValueFormat,
    value_decoder,
    value_encoder,
)

__all__ = [
    "KEY_FORMATS",
    "VALUE_FORMATS",
    "AvroSchema",
    "DecodedBatch",
    "KeyFormat",
    "RecordProblem",
    "SchemaRegistry",
    "ValueDecoder",
    "ValueEncoder",
    "ValueFormat",
    "load_schema",
    "load_schema_file",
    "value_decoder",
    "value_encoder",
]
