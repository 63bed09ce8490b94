"""How fast :mod:`connector.serde.values` decodes social Message values, against fastavro.

``python -m tooling.serde_bench --records 1000000`` generates that many messages with the
social generator, encodes them as the generator writes them (decimal keys, Avro values) and
prints records per second, the median of ``--repeats`` runs, for:

* ``avro``: :func:`connector.serde.values.value_decoder` on plain Avro values, with key checks;
* ``avro-confluent``: the same on Confluent-framed values (a ``mock://`` schema registry);
* ``polars-read``: ``polars.read_avro`` alone on the same batches (the bulk decoder's floor);
* ``fastavro``: ``fastavro.schemaless_reader`` one record at a time, columns not built.

Decoders get the records in batches of ``--batch`` (as a partition's batch would come).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import fastavro
import numpy as np
import polars as pl

from connector.serde.avro import AvroSchema, confluent_header, encode_columns, load_schema
from connector.serde.avro_decode import FlatDecoder
from connector.serde.values import SchemaRegistry, ValueDecoder, value_decoder
from engine.examples.social.data import generate_social
from tooling.generate import decimal_keys

__all__ = ["bench_decode", "main"]

_MESSAGE_SHARE = 0.9  # the generator makes about 92% messages, 8% friendships


def _messages(n: int) -> tuple[AvroSchema, list[bytes], list[bytes]]:
    """``n`` encoded social messages and their keys."""
    schema = load_schema("social/Message")
    data = generate_social(users=max(1000, n // 10), events=int(n / _MESSAGE_SHARE) + 100)
    m = data.messages
    columns = {
        "message_id": m.message_id[:n],
        "ts": m.ts[:n],
        "sender": m.sender[:n],
        "recipient": m.recipient[:n],
        "content": m.content[:n],
    }
    values = encode_columns(schema, columns).values()
    return schema, values, decimal_keys(np.asarray(m.sender[:n]))


def _median_rate(n: int, run: Callable[[], object], repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - began)
    return n / statistics.median(seconds)


def _batched(
    decoder: ValueDecoder, values: Sequence[bytes], keys: Sequence[bytes], batch: int
) -> Callable[[], object]:
    chunks = [
        (list(values[i : i + batch]), list(keys[i : i + batch]))
        for i in range(0, len(values), batch)
    ]

    def run() -> object:
        good = 0
        for chunk_values, chunk_keys in chunks:
            decoded = decoder.decode(chunk_values, chunk_keys)
            good += int(decoded.good.sum())
        if good != len(values):
            raise RuntimeError(f"only {good} of {len(values)} records decoded")
        return good

    return run


def _polars_only(schema: AvroSchema, values: Sequence[bytes], batch: int) -> Callable[[], object]:
    """Read each batch's container with polars, nothing else (the containers are prebuilt)."""
    outputs = [(f["name"], f["type"], f["type"]) for f in schema.raw["fields"]]
    header = FlatDecoder(schema.raw, outputs).header
    containers = []
    for i in range(0, len(values), batch):
        chunk = values[i : i + batch]
        size = sum(map(len, chunk))
        counts = _zigzag(len(chunk)) + _zigzag(size)
        containers.append(b"".join([header, counts, *chunk, header[-16:]]))

    def run() -> object:
        return [pl.read_avro(io.BytesIO(c)).height for c in containers]

    return run


def _zigzag(value: int) -> bytes:
    z, out = value << 1, bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _mock_registry(schema: AvroSchema) -> tuple[SchemaRegistry, int]:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    client = SchemaRegistryClient.new_client({"url": "mock://serde-bench"})
    schema_id = client.register_schema("bench-value", Schema(schema.text, "AVRO"))
    return client, int(schema_id)


def bench_decode(n: int, *, batch: int = 10_000, repeats: int = 3) -> dict[str, float]:
    """Records per second decoding ``n`` social messages: serde bulk vs fastavro one at a time."""
    schema, values, keys = _messages(n)
    rates: dict[str, float] = {}
    plain = value_decoder("avro", schema, key_format="decimal")
    rates["avro"] = _median_rate(n, _batched(plain, values, keys, batch), repeats)
    registry, schema_id = _mock_registry(schema)
    framed = [confluent_header(schema_id) + v for v in values]
    confluent = value_decoder("avro-confluent", schema, key_format="decimal", registry=registry)
    rates["avro-confluent"] = _median_rate(n, _batched(confluent, framed, keys, batch), repeats)
    rates["polars-read"] = _median_rate(n, _polars_only(schema, values, batch), repeats)
    raw = schema.raw

    def one_at_a_time() -> object:
        reader = fastavro.schemaless_reader
        return [reader(io.BytesIO(v), raw) for v in values]

    rates["fastavro"] = _median_rate(n, one_at_a_time, repeats)
    return rates


def main(argv: Sequence[str] | None = None) -> int:
    """Print the decode rates; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m tooling.serde_bench", description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rates = bench_decode(args.records, batch=args.batch, repeats=args.repeats)
    print(
        f"{args.records} social Message records, batches of {args.batch}, median of "
        f"{args.repeats} runs"
    )
    for name, rate in rates.items():
        print(f"  {name:15s} {rate / 1e6:6.3f} M records/s")
    print(f"  bulk avro is {rates['avro'] / rates['fastavro']:.1f}x fastavro one at a time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
