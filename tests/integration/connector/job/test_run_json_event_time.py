"""A user's own backtest end to end on a real broker: a pipeline from a ``.py`` file, JSON
payments whose event time is an ISO-8601 payload field (``--event-time``), JSON output
without a schema (``fields=`` not given), compared record for record with a plain Python
loop; a payment with an unreadable time is dead-lettered with its reason."""

from __future__ import annotations

import json
import textwrap
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from confluent_kafka import Producer

from connector.cli.app import main
from tests.support.broker import NewTopic, ReadRange
from tooling.broker import LocalBroker

HOUR_MS = 3_600_000
T0 = datetime(2026, 10, 1, tzinfo=timezone.utc)

_RULES = """
from engine.pipeline import Pipeline, Record
from engine.windows import Sliding

def build():
    p = Pipeline("payments-1h")
    n = p.count("n_1h", on="payment", key="card", window=Sliding(3_600_000))
    seen = p.lookup("seen_1h", on="payment", table=n, key="card")
    out = p.output("flags", key="card")
    p.emit(
        "flag", on="payment", output=out, inputs=[seen],
        fn=lambda e, view: [Record(e.card, {"card": e.card, "n_1h": e.seen_1h, "at": e.ts})],
    )
    return p
"""

_SCHEMA = {
    "type": "record",
    "name": "Payment",
    "fields": [
        {"name": "card", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "paid_at", "type": "string"},
    ],
}


def _iso(ms: int) -> str:
    return (T0 + timedelta(milliseconds=ms)).isoformat().replace("+00:00", "Z")


def test_json_payments_with_a_payload_event_time_equal_a_plain_loop(
    broker: LocalBroker,
    new_topic: NewTopic,
    producer: Producer,
    read_range: ReadRange,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "rules.py").write_text(textwrap.dedent(_RULES), encoding="utf-8")
    (tmp_path / "Payment.avsc").write_text(json.dumps(_SCHEMA), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    topic = new_topic(partitions=1)
    # The payload's time is what counts: the record timestamps run the other way.
    payments = []
    for i in range(400):
        at = (i * 7_919) % (6 * HOUR_MS) + (i % 3) * 1000
        payments.append({"card": f"c{i % 13}", "amount": i / 8, "paid_at": _iso(at)})
    bad = {"card": "c1", "amount": 1.0, "paid_at": "not a time"}
    values = [json.dumps(p).encode() for p in payments]
    values.insert(200, json.dumps(bad).encode())
    for i, value in enumerate(values):
        producer.produce(topic, value=value, key=b"k", partition=0, timestamp=10**12 - i)
        producer.flush(10)  # one record a batch: `latest` is exact on Tansu (DESIGN.md §6)
    job = f"pay-{uuid.uuid4().hex[:8]}"
    code = main(
        [
            *("run", "--job-id", job, "--bootstrap-servers", broker.bootstrap),
            *("--pipeline", "./rules.py:build", "--inputs", f"{topic}=payment"),
            *("--value-format", "json", "--schemas", "payment=Payment.avsc"),
            *("--event-time", "payment=paid_at", "--output-format", "json"),
            *("--executor", "batch", "--epoch-size", "64", "--progress", "none"),
            *("--end", "latest"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "bad records {'undecodable': 1}" in capsys.readouterr().out

    # The plain loop: by event time (ties keep offset order: one partition), a 1-hour count.
    def millis(text: str) -> int:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (when - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)

    events = [(millis(p["paid_at"]), i, p) for i, p in enumerate(payments)]
    events.sort(key=lambda e: (e[0], e[1]))
    expected = []
    history: dict[str, list[int]] = defaultdict(list)
    for ts, _, p in events:
        history[p["card"]].append(ts)
        n = sum(1 for t in history[p["card"]] if ts - HOUR_MS < t <= ts)
        expected.append((p["card"].encode(), {"card": p["card"], "n_1h": n, "at": ts}, ts))
    got = read_range(f"{job}.flags", {0: (0, len(expected))})
    assert [(r.key, json.loads(r.value or b""), r.timestamp) for r in got] == expected
    [dead] = read_range(f"{job}.dead-letter", {0: (0, 1)})
    headers = dict(dead.headers)
    assert dead.value == json.dumps(bad).encode()
    assert headers["restream.detail"] == (
        b"event-time field 'paid_at': 'not a time' is neither epoch milliseconds nor an "
        b"ISO-8601 date-time"
    )
