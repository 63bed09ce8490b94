"""Write the synthetic social data set to Kafka (``restream generate social``).

Each record goes to the partition the generator assigned it, so in an empty topic its Kafka
offset equals its ``offset`` column. Keys are the UTF-8 decimal ``sender`` (messages) or
``user_a`` (friendships); the record timestamp is ``ts``; values are Avro
(``schemas/social/*.avsc``), plain or Confluent-framed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from connector.config import ValueFormat
from connector.errors import ConfigError
from connector.kafka.batches import ByteRows, decimal_rows
from connector.kafka.native import NativeProducer, native_unsupported, topic_leaders
from connector.kafka.producer import BulkProducer, TopicSpec, create_topics, topic_record_bounds
from connector.runtime.processes import run_in_processes
from connector.serde.avro import (
    AVRO_FORMATS,
    Utf8Column,
    confluent_header,
    encode_columns,
    load_schema,
    register_schema,
)
from engine.errors import EngineError
from engine.examples.social.data import Skew, SocialData, generate_social

__all__ = [
    "TopicWrite",
    "WriteReport",
    "decimal_keys",
    "generate_social_command",
    "write_social",
]

logger = logging.getLogger(__name__)

_CHUNK_ROWS = 65_536
Column = npt.NDArray[Any] | Utf8Column
_MESSAGE_FIELDS = ("message_id", "ts", "sender", "recipient", "content")
_FRIENDSHIP_FIELDS = ("ts", "user_a", "user_b")


@dataclass(frozen=True, slots=True)
class TopicWrite:
    """Records and value bytes written to one topic."""

    topic: str
    records: int
    value_bytes: int


@dataclass(frozen=True, slots=True)
class WriteReport:
    """What :func:`write_social` wrote and how long encoding, producing and flushing took."""

    writes: tuple[TopicWrite, ...]
    seconds: float

    @property
    def records(self) -> int:
        """Records written over all topics."""
        return sum(w.records for w in self.writes)

    @property
    def rate(self) -> float:
        """Records per second, from the start of encoding to the last acknowledged delivery."""
        return self.records / self.seconds if self.seconds > 0 else float("inf")


def decimal_keys(values: npt.NDArray[np.integer[Any]]) -> list[bytes]:
    """Kafka keys: the UTF-8 decimal text of each integer (``str(v).encode()``)."""
    return np.asarray(values, dtype=np.int64).astype("S20").tolist()  # type: ignore[no-any-return]


class _DecimalKeys:
    """:func:`decimal_keys` for slices of one column, via a lookup table when ids are dense.

    User ids span a small range, so encoding each distinct id once and gathering is about
    four times faster than formatting every row.
    """

    def __init__(self, column: npt.NDArray[np.integer[Any]]):
        self._column = np.asarray(column, dtype=np.int64)
        self._table: npt.NDArray[np.object_] | None = None
        self._low = 0
        if self._column.size:
            low, high = int(self._column.min()), int(self._column.max())
            if high - low < 2 * self._column.size + 4096:
                ids = range(low, high + 1)
                self._table = np.array([str(i).encode() for i in ids], dtype=object)
                self._low = low

    def slice(self, start: int, stop: int) -> list[bytes]:
        part = self._column[start:stop]
        if self._table is None:
            return decimal_keys(part)
        return self._table[part - self._low].tolist()  # type: ignore[no-any-return]


def write_social(
    data: SocialData,
    *,
    bootstrap: str,
    messages_topic: str = "social.messages",
    friendships_topic: str = "social.friendships",
    partitions: int,
    value_format: ValueFormat = "avro",
    schema_registry: str | None = None,
    workers: int = 1,
    producer_overrides: Mapping[str, Any] | None = None,
) -> WriteReport:
    """Create both topics (or accept existing empty ones) and write ``data`` to them.

    With ``workers`` > 1, that many processes (at most one per partition) each encode and
    produce the rows of a contiguous group of partitions. The producer's cost per record
    dominates, so this helps when a core is idle and hurts when other work keeps the cores
    busy; one process is the default.
    """
    if value_format not in AVRO_FORMATS:
        raise ConfigError(
            "format", f"unknown value format {value_format!r}; use one of {AVRO_FORMATS}"
        )
    if value_format == "avro-confluent" and not schema_registry:
        raise ConfigError("schema-registry", "format avro-confluent needs a schema registry URL")
    if messages_topic == friendships_topic:
        raise ConfigError("friendships-topic", "must differ from the messages topic")
    if workers < 1:
        raise ConfigError("workers", f"{workers}; use 1 or more")
    began = time.perf_counter()  # the rate counts everything: encoding, topics, delivery
    m, f = data.messages, data.friendships
    tables: tuple[_TableJob, ...] = (
        _TableJob(messages_topic, "social/Message", _columns(m, _MESSAGE_FIELDS), "sender"),
        _TableJob(
            friendships_topic, "social/Friendship", _columns(f, _FRIENDSHIP_FIELDS), "user_a"
        ),
    )
    for table in tables:
        _check_layout(table, partitions)
    if value_format == "avro-confluent" and schema_registry:
        tables = tuple(
            table.with_prefix(
                confluent_header(
                    register_schema(
                        schema_registry, f"{table.topic}-value", load_schema(table.schema)
                    )
                )
            )
            for table in tables
        )
    specs = [TopicSpec(t.topic, partitions) for t in tables]
    create_topics(bootstrap, specs, exist_ok=True)
    for spec in specs:
        _require_empty(bootstrap, spec)

    groups = np.array_split(np.arange(partitions), min(workers, partitions))
    if len(groups) == 1:
        results = [_write_jobs(bootstrap, producer_overrides, tables)]
    else:
        jobs = [
            tuple(t.partitions_between(int(g[0]), int(g[-1]) + 1) for t in tables) for g in groups
        ]
        calls = [(bootstrap, producer_overrides, job) for job in jobs]
        results = run_in_processes(_write_jobs, calls, name="restream-writer")
    writes = tuple(
        TopicWrite(
            t.topic,
            sum(r[i].records for r in results),
            sum(r[i].value_bytes for r in results),
        )
        for i, t in enumerate(tables)
    )
    report = WriteReport(writes=writes, seconds=time.perf_counter() - began)
    logger.info(
        "wrote %s records in %.2f s (%.0f records/s) with %s process(es)",
        report.records,
        report.seconds,
        report.rate,
        len(groups),
    )
    return report


def _columns(table: object, names: tuple[str, ...]) -> dict[str, Column]:
    """The table's columns; strings become one UTF-8 buffer, cheap to send to a process."""
    columns: dict[str, Column] = {}
    for name in (*names, "partition", "offset"):
        column = np.asarray(getattr(table, name))
        columns[name] = Utf8Column.from_strings(column) if column.dtype.kind in "OUT" else column
    return columns


def _rows(column: Column, rows: npt.NDArray[np.int64]) -> Column:
    if rows.size and int(rows[-1]) - int(rows[0]) + 1 == rows.size:  # contiguous: slice
        return _slice(column, int(rows[0]), int(rows[-1]) + 1)
    return column.take(rows) if isinstance(column, Utf8Column) else column[rows]


def _slice(column: Column, start: int, stop: int) -> Column:
    return column.slice(start, stop) if isinstance(column, Utf8Column) else column[start:stop]


@dataclass(frozen=True, slots=True)
class _TableJob:
    """One table's rows to write to one topic: the unit of work sent to a writer process."""

    topic: str
    schema: str
    columns: Mapping[str, Column]
    key: str
    prefix: bytes = b""

    @property
    def rows(self) -> int:
        return len(self.columns["partition"])

    def array(self, name: str) -> npt.NDArray[Any]:
        column = self.columns[name]
        if isinstance(column, Utf8Column):
            raise ConfigError(name, f"{self.topic}: expected a numeric column")
        return column

    def with_prefix(self, prefix: bytes) -> _TableJob:
        return _TableJob(self.topic, self.schema, self.columns, self.key, prefix)

    def partitions_between(self, low: int, high: int) -> _TableJob:
        part = self.array("partition")
        rows = np.flatnonzero((part >= low) & (part < high))
        columns = {name: _rows(column, rows) for name, column in self.columns.items()}
        return _TableJob(self.topic, self.schema, columns, self.key, self.prefix)


def _check_layout(table: _TableJob, partitions: int) -> None:
    """Rows must list each partition's records in offset order 0, 1, 2, ...: that is what
    makes the Kafka offsets equal the generated ones."""
    part, offset = table.array("partition"), table.array("offset")
    if not table.rows:
        return
    if int(part.min()) < 0 or int(part.max()) >= partitions:
        raise ConfigError(
            "partitions", f"{table.topic} rows use partitions beyond 0..{partitions - 1}"
        )
    for p in range(partitions):
        got = offset[part == p]
        if not np.array_equal(got, np.arange(got.size)):
            raise ConfigError(
                "data",
                f"{table.topic} partition {p}: rows are not at offsets 0, 1, 2, ... in order",
            )


def _write_jobs(
    bootstrap: str, overrides: Mapping[str, Any] | None, jobs: tuple[_TableJob, ...]
) -> tuple[TopicWrite, ...]:
    """Encode and produce ``jobs`` with one producer; runs in a writer process or inline.

    The native producer (columns to record batches) when the Kafka settings allow it
    (:func:`connector.kafka.native.native_unsupported`), else librdkafka."""
    client = {"bootstrap.servers": bootstrap, **(overrides or {})}
    producer: BulkProducer | NativeProducer
    if native_unsupported(client) is None:
        producer = NativeProducer(topic_leaders(client, 30.0), timeout_s=120.0)
    else:
        producer = BulkProducer(bootstrap, overrides)
    writes = tuple(_write_table(producer, job) for job in jobs)
    producer.flush()
    if isinstance(producer, NativeProducer):
        producer.close()
    return writes


def _require_empty(bootstrap: str, spec: TopicSpec) -> None:
    bounds = topic_record_bounds(bootstrap, spec.name)
    if len(bounds) < spec.partitions:
        raise ConfigError(
            "partitions",
            f"topic {spec.name} has {len(bounds)} partitions, fewer than {spec.partitions}",
        )
    holding = {p: hi - lo for p, (lo, hi) in bounds.items() if hi > lo}
    if holding:
        raise ConfigError(
            "topic",
            f"{spec.name} already holds records (partition: count {holding}); offsets would not "
            "match the generated ones: delete the topic or choose another name",
        )


def _write_table(producer: BulkProducer | NativeProducer, job: _TableJob) -> TopicWrite:
    """Produce ``job``'s rows; the last record of each partition goes in a batch of its own.

    Brokers that report a partition's end as "first offset of the last record batch + 1"
    (Tansu 0.6, DESIGN.md section 6) then still report the true end, so ``latest`` and
    explicit end offsets work on the written topics too. It costs one flush per topic.
    """
    schema = load_schema(job.schema)
    fields = [f["name"] for f in schema.raw["fields"]]
    # The native producer takes keys as decimal rows; librdkafka's byte strings are made once.
    keys = None if isinstance(producer, NativeProducer) else _DecimalKeys(job.array(job.key))
    partition, ts = job.array("partition"), job.array("ts")
    last_rows = np.zeros(job.rows, dtype=bool)
    if job.rows:
        # Rows of a partition are in offset order: its last row is its last record.
        reverse = partition[::-1]
        _, first_in_reverse = np.unique(reverse, return_index=True)
        last_rows[job.rows - 1 - first_in_reverse] = True
    value_bytes = 0
    for final in (False, True):
        for start in range(0, job.rows, _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, job.rows)
            rows = np.flatnonzero(last_rows[start:stop] == final) + start
            if not len(rows):
                continue
            chunk = {name: _rows(job.columns[name], rows) for name in fields}
            batch = encode_columns(schema, chunk, prefix=job.prefix)
            value_bytes += len(batch.data)
            if isinstance(producer, NativeProducer):
                producer.produce(
                    job.topic,
                    partition[rows].astype(np.int32),
                    ts[rows].astype(np.int64),
                    decimal_rows(job.array(job.key)[rows]),
                    ByteRows.joined(batch.data, batch.offsets),
                )
                continue
            assert keys is not None
            key_slice = keys.slice(start, stop)
            producer.produce(
                job.topic,
                batch.values(),
                [key_slice[i - start] for i in rows.tolist()],
                partition[rows].tolist(),
                ts[rows].tolist(),
            )
        if not final:
            producer.flush()
    return TopicWrite(topic=job.topic, records=job.rows, value_bytes=value_bytes)


def generate_social_command(
    *,
    users: int,
    events: int,
    days: int,
    seed: int,
    shape: tuple[Skew, int],
    partitions: int,
    bootstrap: str,
    messages_topic: str,
    friendships_topic: str,
    value_format: ValueFormat,
    schema_registry: str | None,
    workers: int,
    out: TextIO,
) -> int:
    """``restream generate social``: generate the data set, write it, print the rate.
    ``shape``: the skew and backwards jitter (``resolve_scenario`` of the social data set)."""
    began = time.perf_counter()
    skew, jitter_ms = shape
    try:
        data = generate_social(
            users=users,
            events=events,
            days=days,
            seed=seed,
            jitter_ms=jitter_ms,
            partitions=partitions,
            skew=skew,
        )
    except EngineError as exc:
        raise ConfigError("generate social", str(exc)) from exc
    m, f = data.messages, data.friendships
    print(
        f"generated {len(m.ts):,} messages + {len(f.ts):,} friendships ({users:,} users, "
        f"{days} days, seed {seed}) in {time.perf_counter() - began:.2f} s",
        file=out,
        flush=True,
    )
    report = write_social(
        data,
        bootstrap=bootstrap,
        messages_topic=messages_topic,
        friendships_topic=friendships_topic,
        partitions=partitions,
        value_format=value_format,
        schema_registry=schema_registry,
        workers=workers,
    )
    for write in report.writes:
        print(
            f"  {write.topic}: {write.records:,} records, {write.value_bytes / 1e6:.1f} MB of "
            f"{value_format} values",
            file=out,
        )
    print(
        f"wrote {report.records:,} events to {bootstrap} in {report.seconds:.2f} s: "
        f"{report.rate:,.0f} events/s",
        file=out,
    )
    return 0
