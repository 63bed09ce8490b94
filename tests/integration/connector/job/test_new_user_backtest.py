"""Issue 20's new user, end to end: a card-payments backtest that is not the social one,
written in a ``.py`` file run by path (no PYTHONPATH), over JSON-lines and CSV files brought to
the embedded broker with ``restream load``, read as JSON without an ``.avsc`` (fields
inferred), replayed with ``--end latest`` by the parallel executor, equal record for record to
a plain Python loop written here.

The loop follows the README's "How events are ordered": the merge takes records by
``(running max of the timestamp in their partition, topic name, partition, offset)``.
"""

from __future__ import annotations

import csv
import json
import random
import textwrap
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from connector.cli.app import main
from connector.kafka.partitioner import java_partition
from connector.kafka.producer import topic_record_bounds
from tests.support.broker import ReadRange
from tooling.broker import LocalBroker

HOUR = 3_600_000
DAY = 24 * HOUR
PARTITIONS = 3

_RULES = """
from engine import Pipeline, Record, Sliding, Unordered

HOUR = 3_600_000


def build() -> Pipeline:
    p = Pipeline("cards")
    n_1h = p.count("payments_1h", on="payment", key="card", window=Sliding(HOUR))
    spend = p.sum(
        "card_spend_24h", on="payment", key="card", value="cents", window=Sliding(24 * HOUR)
    )
    shops = p.distinct(
        "card_shops_1h", on="payment", key="card", value="merchant", window=Sliding(HOUR)
    )
    last = p.since_last("card_last_payment", on="payment", key="card")
    at_shop = p.count("at_shop", on="payment", key=("card", "merchant"))
    chargebacks = p.count("chargebacks", on="chargeback", key="card")
    cols = [
        p.lookup("n_1h", on="payment", table=n_1h, key="card"),
        p.lookup("spend_24h", on="payment", table=spend, key="card"),
        p.lookup("shops_1h", on="payment", table=shops, key="card"),
        p.lookup("gap", on="payment", table=last, key="card", before=True, default=-1),
        p.lookup("seen_shop", on="payment", table=at_shop, key=("card", "merchant"), before=True),
        p.lookup("cb", on="payment", table=chargebacks, key="card"),
    ]
    out = p.output("scores", key="card")
    p.emit(
        "score",
        on="payment",
        output=out,
        inputs=cols,
        fn=lambda e, _v: [
            Record(
                e.card,
                {
                    "id": e.id,
                    "n_1h": e.n_1h,
                    "spend_24h": e.spend_24h,
                    "shops_1h": e.shops_1h,
                    "gap": e.gap,
                    "new_shop": e.seen_shop == 0,
                    "cb": e.cb,
                    "flag": e.n_1h > 3 or (e.cb > 0 and e.seen_shop == 0),
                },
            )
        ],
    )
    return p
"""


def _data(rng: random.Random) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Payments over two days, one hot card, times that go back by up to an hour."""
    payments, chargebacks = [], []
    clock = 1_790_000_000_000  # October 2026
    for i in range(3_000):
        clock += rng.randrange(0, 90_000)
        card = "c0" if rng.random() < 0.3 else f"c{rng.randrange(1, 60)}"
        ts = clock - (rng.randrange(HOUR) if rng.random() < 0.1 else 0)
        ts -= ts % 60_000 if rng.random() < 0.5 else 0  # minute clocks: equal timestamps
        merchant = f"m{rng.randrange(12)}"
        payments.append(
            {
                "id": i,
                "card": card,
                "merchant": merchant,
                "cents": rng.randrange(1, 90_000),
                "ts": ts,
            }
        )
        if rng.random() < 0.05:
            chargebacks.append({"card": card, "ts": ts + rng.randrange(-HOUR, 4 * HOUR)})
    return payments, chargebacks


def _serial_log(topics: dict[str, list[dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """(topic, row) in the log's order: per partition in file order, merged by effective key."""
    keyed = []
    for topic, rows in topics.items():
        running: dict[int, int] = {}
        offsets: dict[int, int] = defaultdict(int)
        for row in rows:
            part = java_partition(row["card"].encode(), PARTITIONS)
            running[part] = max(running.get(part, row["ts"]), row["ts"])
            keyed.append(((running[part], topic, part, offsets[part]), topic, row))
            offsets[part] += 1
    keyed.sort(key=lambda k: k[0])
    return [(topic, row) for _, topic, row in keyed]


def _plain_loop(log: list[tuple[str, dict[str, Any]]], payments_topic: str) -> list[dict[str, Any]]:
    history: dict[str, list[dict[str, Any]]] = defaultdict(list)
    chargebacks: dict[str, int] = defaultdict(int)
    seen_shop: dict[tuple[str, str], int] = defaultdict(int)
    out = []
    for topic, row in log:
        card = row["card"]
        if topic != payments_topic:
            chargebacks[card] += 1
            continue
        before = history[card]
        gap = row["ts"] - before[-1]["ts"] if before else -1
        history[card].append(row)
        r = row["ts"]
        hour = [p for p in history[card] if r - HOUR < p["ts"] <= r]
        day = [p for p in history[card] if r - DAY < p["ts"] <= r]
        shop = (card, row["merchant"])
        value = {
            "id": row["id"],
            "n_1h": len(hour),
            "spend_24h": sum(p["cents"] for p in day),
            "shops_1h": len({p["merchant"] for p in hour}),
            "gap": gap,
            "new_shop": seen_shop[shop] == 0,
            "cb": chargebacks[card],
            "flag": len(hour) > 3 or (chargebacks[card] > 0 and seen_shop[shop] == 0),
        }
        seen_shop[shop] += 1
        out.append(value)
    return out


def test_a_new_users_json_backtest_equals_a_plain_loop(
    broker: LocalBroker,
    read_range: ReadRange,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    payments, chargebacks = _data(random.Random(20))
    (tmp_path / "fraud.py").write_text(textwrap.dedent(_RULES), encoding="utf-8")
    with (tmp_path / "payments.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(p) + "\n" for p in payments)
    with (tmp_path / "chargebacks.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["card", "ts"])
        writer.writeheader()
        writer.writerows(chargebacks)
    monkeypatch.chdir(tmp_path)
    tag = uuid.uuid4().hex[:8]
    topics = {"payments": f"a-payments-{tag}", "chargebacks": f"b-chargebacks-{tag}"}
    for name, file in (("payments", "payments.jsonl"), ("chargebacks", "chargebacks.csv")):
        load = ["load", file, "--bootstrap", broker.bootstrap, "--topic", topics[name]]
        assert main([*load, "--timestamp", "ts", "--key", "card", "--partitions", "3"]) == 0
    job = f"cards-{tag}"
    code = main(
        [
            *("run", "--job-id", job, "--bootstrap-servers", broker.bootstrap),
            *("--pipeline", "./fraud.py:build"),
            *("--inputs", f"{topics['payments']}=payment"),
            *("--inputs", f"{topics['chargebacks']}=chargeback"),
            *("--value-format", "json", "--output-format", "json"),
            *("--executor", "parallel", "--workers", "2", "--progress", "none"),
            *("--end", "latest"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    log = _serial_log({topics["payments"]: payments, topics["chargebacks"]: chargebacks})
    assert len(log) == len(payments) + len(chargebacks)  # `latest` read every loaded record
    expected = _plain_loop(log, topics["payments"])
    # The sink's batches hide the output's true end from Tansu's watermark (DESIGN.md
    # section 6): read what the loop expects, and check the run's own count of what it wrote.
    assert f"output records {len(expected):,} to {job}.scores" in capsys.readouterr().out
    partitions = len(topic_record_bounds(broker.bootstrap, f"{job}.scores"))
    by_partition: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for value in expected:
        card = payments[value["id"]]["card"]
        by_partition[java_partition(card.encode(), partitions)].append(value)
    got = read_range(f"{job}.scores", {p: (0, len(v)) for p, v in by_partition.items()})
    for part, values in by_partition.items():
        records = sorted((r for r in got if r.partition == part), key=lambda r: r.offset)
        assert [json.loads(r.value or b"") for r in records] == values, part


def test_json_fields_the_sample_leaves_in_doubt_stop_the_job_naming_them(
    broker: LocalBroker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A field holding text in one record and numbers in another: exit 2 naming it, before
    the ranges are pinned (a rerun with an .avsc then starts cleanly)."""
    (tmp_path / "fraud.py").write_text(textwrap.dedent(_RULES), encoding="utf-8")
    rows = [{"id": 0, "card": "c1", "merchant": "m1", "cents": 5, "ts": 1_790_000_000_000}]
    rows.append({**rows[0], "id": 1, "cents": "five", "ts": 1_790_000_000_001})
    (tmp_path / "payments.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "chargebacks.jsonl").write_text(json.dumps({"card": "c1", "ts": 1}) + "\n")
    monkeypatch.chdir(tmp_path)
    tag = uuid.uuid4().hex[:8]
    topics = {"payment": f"p-{tag}", "chargeback": f"c-{tag}"}
    for kind, file in (("payment", "payments.jsonl"), ("chargeback", "chargebacks.jsonl")):
        load = ["load", file, "--bootstrap", broker.bootstrap, "--topic", topics[kind]]
        assert main([*load, "--timestamp", "ts"]) == 0
    capsys.readouterr()
    run = [
        *("run", "--job-id", f"doubt-{tag}", "--bootstrap-servers", broker.bootstrap),
        *("--pipeline", "./fraud.py:build", "--value-format", "json", "--output-format", "json"),
        *("--progress", "none"),
        *(
            "--inputs",
            f"{topics['payment']}=payment",
            "--inputs",
            f"{topics['chargeback']}=chargeback",
        ),
        *("--checkpoint-dir", str(tmp_path / "ckpt"), "--end", "latest"),
    ]
    assert main(run) == 2
    err = capsys.readouterr().err
    assert "cannot infer the type of field 'cents' of event kind 'payment'" in err
    assert "give payment=path.avsc" in err and "Traceback" not in err
    assert not (tmp_path / "ckpt" / f"doubt-{tag}" / "manifest.json").exists()
