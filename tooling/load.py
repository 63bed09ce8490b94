"""``restream load``: a user's own file (JSON lines, CSV or Parquet) into a Kafka topic.

One record per row: the value is the row as a JSON object (every column, nulls as ``null``;
a JSON-lines file's lines as they are, so that values keep their exact types and text),
the key the ``--key`` column's value as UTF-8 text (none without ``--key``), the record
timestamp the ``--timestamp`` column (epoch milliseconds, or ISO-8601 text / a datetime
column, read as UTC when it has no offset). Keyed rows go to the partition Kafka's default
partitioner picks (murmur2 of the key), so the topic looks as a Java producer would write it;
unkeyed rows are dealt round-robin. Within a partition, rows keep the file's order.

The last record of each partition goes in a record batch of its own: brokers that report a
partition's end as "first offset of the last batch + 1" (the embedded Tansu, DESIGN.md
section 6) then report the true end, so ``--end latest`` reads every loaded record.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO, get_args

import numpy as np

from connector.errors import ConfigError

if TYPE_CHECKING:
    import polars as pl

__all__ = ["FILE_FORMATS", "FileFormat", "LoadReport", "load_command", "load_file", "read_table"]

FileFormat = Literal["jsonl", "csv", "parquet"]
FILE_FORMATS: tuple[FileFormat, ...] = get_args(FileFormat)
_SUFFIXES: dict[str, FileFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_CHUNK_ROWS = 100_000


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What a load wrote."""

    topic: str
    records: int
    partitions: int
    seconds: float


def _format_of(path: Path, file_format: FileFormat | None) -> FileFormat:
    fmt = file_format or _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(
            "--format",
            f"cannot tell the format of {path} from its suffix; pass one of "
            f"{', '.join(FILE_FORMATS)}",
        )
    return fmt


def _json_lines(path: Path, columns: list[str]) -> tuple[pl.DataFrame, list[bytes], list[str]]:
    """A JSON-lines file's lines (the values, verbatim), a frame of those of ``columns`` that
    some line has, and every field name seen. Reformatting the values would change what a
    user wrote (polars makes a column of numbers and text all text)."""
    import polars as pl

    if not path.is_file():
        raise ConfigError("FILE", f"{path} is not a readable file")
    values: list[bytes] = []
    picked: dict[str, list[object]] = {c: [] for c in columns}
    seen: dict[str, None] = {}
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ConfigError("FILE", f"line {number} of {path} is not JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise ConfigError(
                "FILE", f"line {number} of {path} is a JSON {type(record).__name__}, not an object"
            )
        values.append(line)
        seen.update(dict.fromkeys(record))
        for c in columns:
            picked[c].append(record.get(c))
    try:
        frame = pl.DataFrame({c: v for c, v in picked.items() if c in seen})
    except (pl.exceptions.PolarsError, TypeError, ValueError) as exc:
        raise ConfigError("FILE", f"{path}: column {columns} mixes types: {exc}") from exc
    return frame, values, list(seen)


def read_table(path: Path, file_format: FileFormat | None = None) -> pl.DataFrame:
    """The file as a data frame; the format from ``file_format`` or the file's suffix."""
    import polars as pl  # here: `restream --help` need not load it

    fmt = _format_of(path, file_format)
    if not path.is_file():
        raise ConfigError("FILE", f"{path} is not a readable file")
    try:
        if fmt == "jsonl":
            return pl.read_ndjson(path)
        if fmt == "csv":
            return pl.read_csv(path, try_parse_dates=False)
        return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise ConfigError("FILE", f"cannot read {path} as {fmt}: {exc}") from exc


def _timestamps(frame: pl.DataFrame, column: str, names: list[str]) -> np.ndarray:
    import polars as pl

    if column not in frame.columns:
        raise ConfigError("--timestamp", f"no column {column!r}; the file has {', '.join(names)}")
    series = frame[column]
    if series.null_count():
        row = int(np.flatnonzero(series.is_null().to_numpy())[0])
        raise ConfigError("--timestamp", f"column {column!r} is empty in row {row}")
    try:
        if series.dtype == pl.String:
            series = series.str.to_datetime(time_zone="UTC")
        if series.dtype.is_temporal():
            if getattr(series.dtype, "time_zone", None) is None:
                series = series.dt.replace_time_zone("UTC")
            series = series.dt.epoch("ms")
        if not series.dtype.is_integer():
            raise ConfigError(
                "--timestamp",
                f"column {column!r} holds {series.dtype}; it needs epoch milliseconds "
                "(integers) or ISO-8601 times",
            )
    except pl.exceptions.PolarsError as exc:
        raise ConfigError(
            "--timestamp", f"column {column!r} is not epoch milliseconds or ISO-8601: {exc}"
        ) from exc
    ts = np.asarray(series.cast(pl.Int64).to_numpy(), dtype=np.int64)
    if len(ts) and ts.min() < 1:
        # Kafka has no negative timestamps, and its clients take 0 (and -1) as "now".
        row = int(np.argmin(ts))
        raise ConfigError(
            "--timestamp",
            f"column {column!r} is {ts[row]} in row {row}: Kafka record timestamps start at "
            "1 (1970-01-01T00:00:00.001Z); clients write 0 and below as the current time",
        )
    return ts


def _keys(
    frame: pl.DataFrame, column: str | None, names: list[str], rows: int
) -> list[bytes | None]:
    if column is None:
        return [None] * rows
    if column not in frame.columns:
        raise ConfigError("--key", f"no column {column!r}; the file has {', '.join(names)}")
    return [None if v is None else str(v).encode() for v in frame[column].to_list()]


def load_file(
    path: Path,
    *,
    bootstrap: str,
    topic: str,
    timestamp: str,
    key: str | None = None,
    partitions: int = 1,
    file_format: FileFormat | None = None,
) -> LoadReport:
    """Write ``path``'s rows to ``topic`` (created with ``partitions`` if missing; refused if
    it already holds records, whose offsets would interleave with the file's)."""
    from connector.kafka.partitioner import java_partition
    from connector.kafka.producer import (
        BulkProducer,
        TopicSpec,
        create_topics,
        topic_record_bounds,
    )

    began = time.perf_counter()
    if partitions < 1:
        raise ConfigError("--partitions", f"{partitions}; use 1 or more")
    fmt = _format_of(path, file_format)
    if fmt == "jsonl":
        frame, values, names = _json_lines(path, [c for c in (timestamp, key) if c])
        n_rows = len(values)
    else:
        frame = read_table(path, fmt)
        values = frame.write_ndjson().encode().splitlines() if frame.height else []
        names, n_rows = frame.columns, frame.height
    ts = _timestamps(frame, timestamp, names)
    keys = _keys(frame, key, names, n_rows)
    bounds = topic_record_bounds(bootstrap, topic)
    if bounds:
        holding = {p: hi - lo for p, (lo, hi) in bounds.items() if hi > lo}
        if holding:
            raise ConfigError(
                "--topic",
                f"{topic} already holds records (partition: count {holding}); delete it or "
                "load into another topic",
            )
        partitions = len(bounds)
    else:
        create_topics(bootstrap, [TopicSpec(topic, partitions)])
    if key is None:
        part = np.arange(n_rows, dtype=np.int64) % partitions
    else:
        part = np.array(
            [0 if k is None else java_partition(k, partitions) for k in keys], dtype=np.int64
        )
    last = np.zeros(n_rows, dtype=bool)
    if n_rows:
        _, first_in_reverse = np.unique(part[::-1], return_index=True)
        last[n_rows - 1 - first_in_reverse] = True
    producer = BulkProducer(bootstrap)
    for final in (False, True):
        for start in range(0, n_rows, _CHUNK_ROWS):
            rows = np.flatnonzero(last[start : start + _CHUNK_ROWS] == final) + start
            producer.produce(
                topic,
                [values[i] for i in rows.tolist()],
                [keys[i] for i in rows.tolist()],
                part[rows].tolist(),
                ts[rows].tolist(),
            )
        producer.flush()
    return LoadReport(topic, n_rows, partitions, time.perf_counter() - began)


def load_command(
    *,
    path: str,
    bootstrap: str | None,
    topic: str,
    timestamp: str,
    key: str | None,
    partitions: int,
    file_format: FileFormat | None,
    out: TextIO,
) -> int:
    """``restream load``: load the file, print what was written."""
    if not bootstrap:
        raise ConfigError(
            "--bootstrap", "set it or RESTREAM_BOOTSTRAP (start a broker with `restream broker`)"
        )
    report = load_file(
        Path(path),
        bootstrap=bootstrap,
        topic=topic,
        timestamp=timestamp,
        key=key,
        partitions=partitions,
        file_format=file_format,
    )
    print(
        f"loaded {report.records:,} records from {path} into {report.topic} "
        f"({report.partitions} partitions) in {report.seconds:.2f} s",
        file=out,
    )
    return 0
