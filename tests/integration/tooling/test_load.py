"""``restream load``: a user's file into a topic, read back record by record."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import polars as pl
import pytest

from connector.errors import ConfigError
from connector.kafka.partitioner import java_partition
from connector.kafka.producer import topic_record_bounds
from tests.support.broker import ReadRange
from tooling.broker import LocalBroker
from tooling.load import load_file

ROWS = [
    {"card": f"c{i % 7}", "amount": i * 1.5, "when": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z"}
    for i in range(500)
]


def _write(path: Path, fmt: str) -> Path:
    frame = pl.DataFrame(ROWS)
    if fmt == "jsonl":
        frame.write_ndjson(path)
    elif fmt == "csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_every_row_lands_keyed_timestamped_and_latest_is_exact(
    broker: LocalBroker, read_range: ReadRange, tmp_path: Path, fmt: str
) -> None:
    path = _write(tmp_path / f"payments.{fmt}", fmt)
    topic = f"restream-test-{uuid.uuid4().hex[:12]}"
    report = load_file(
        path, bootstrap=broker.bootstrap, topic=topic, timestamp="when", key="card", partitions=3
    )
    assert (report.records, report.partitions) == (500, 3)
    # The broker's end offsets are exact (the embedded one reports the last batch's start
    # + 1): what `--end latest` resolves to is every record loaded.
    bounds = topic_record_bounds(broker.bootstrap, topic)
    want: dict[int, list[dict[str, object]]] = {0: [], 1: [], 2: []}
    for row in ROWS:
        want[java_partition(str(row["card"]).encode(), 3)].append(row)
    assert bounds == {p: (0, len(rows)) for p, rows in want.items()}
    records = read_range(topic, bounds)
    for p, rows in want.items():
        got = sorted((r for r in records if r.partition == p), key=lambda r: r.offset)
        assert [json.loads(r.value or b"") for r in got] == rows  # file order kept
        assert [r.key for r in got] == [str(row["card"]).encode() for row in rows]
        i = [ROWS.index(row) for row in rows]
        assert [r.timestamp for r in got] == [1_767_225_600_000 + 1000 * k for k in i]


def test_epoch_millisecond_timestamps_and_no_key(
    broker: LocalBroker, read_range: ReadRange, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    # Mixed types and float text stay as written: JSON lines are loaded verbatim.
    lines = [json.dumps({"ts": 1000 + i, "x": i if i % 2 else f"{i}", "f": 1.0}) for i in range(10)]
    path.write_text("\n".join(lines) + "\n\n")
    topic = f"restream-test-{uuid.uuid4().hex[:12]}"
    load_file(path, bootstrap=broker.bootstrap, topic=topic, timestamp="ts", partitions=2)
    records = read_range(topic, {0: (0, 5), 1: (0, 5)})  # round robin
    assert sorted(r.timestamp for r in records) == list(range(1000, 1010))
    assert all(r.key is None for r in records)
    assert sorted(r.value or b"" for r in records) == sorted(line.encode() for line in lines)


def test_bad_input_is_refused_naming_the_flag(broker: LocalBroker, tmp_path: Path) -> None:
    path = _write(tmp_path / "p.csv", "csv")
    topic = f"restream-test-{uuid.uuid4().hex[:12]}"
    with pytest.raises(ConfigError, match=r"--timestamp: no column 'ts'; the file has card"):
        load_file(path, bootstrap=broker.bootstrap, topic=topic, timestamp="ts")
    with pytest.raises(ConfigError, match=r"--timestamp: column 'card' is not epoch"):
        load_file(path, bootstrap=broker.bootstrap, topic=topic, timestamp="card")
    with pytest.raises(ConfigError, match=r"--format: cannot tell the format"):
        load_file(tmp_path / "p.txt", bootstrap=broker.bootstrap, topic=topic, timestamp="when")
    early = tmp_path / "early.jsonl"
    early.write_text('{"ts": 5}\n{"ts": 0}\n')
    with pytest.raises(ConfigError, match=r"--timestamp: column 'ts' is 0 in row 1: Kafka record"):
        load_file(early, bootstrap=broker.bootstrap, topic=topic, timestamp="ts")
    load_file(path, bootstrap=broker.bootstrap, topic=topic, timestamp="when")
    with pytest.raises(ConfigError, match=r"--topic: .* already holds records"):
        load_file(path, bootstrap=broker.bootstrap, topic=topic, timestamp="when")
