"""The README's "How events are ordered" says what the merge does: ties by topic *name*,
then partition, then offset; a partition keeps its order when its timestamps go back."""

from __future__ import annotations

from pathlib import Path

from engine.log import InMemorySource, TopicTable
from engine.merge import merge_log

_README = Path(__file__).resolve().parents[3] / "README.md"


def _log(*tables: TopicTable) -> list[tuple[str, int, int, int]]:
    """(topic, partition, offset, ts) of every event in seq order."""
    rows: list[tuple[int, str, int, int, int]] = []
    for epoch in merge_log(InMemorySource.from_tables(*tables, batch_size=2), epoch_size=3):
        for events in epoch.events.values():
            for i in range(len(events)):
                rows.append(
                    (
                        int(events.seq[i]),
                        epoch.topics[int(events.topic[i])],
                        int(events.partition[i]),
                        int(events.offset[i]),
                        int(events.ts[i]),
                    )
                )
    return [row[1:] for row in sorted(rows)]


def test_ties_go_by_topic_name_then_partition_then_offset() -> None:
    # "b.chargebacks" is listed first but sorts after "a.payments": names decide, not order.
    chargebacks = TopicTable("b.chargebacks", "chargeback", {"partition": [0], "ts": [10]})
    payments = TopicTable(
        "a.payments", "payment", {"partition": [1, 0, 0], "ts": [10, 10, 10]}, partitions=2
    )
    assert _log(chargebacks, payments) == [
        ("a.payments", 0, 0, 10),
        ("a.payments", 0, 1, 10),
        ("a.payments", 1, 0, 10),
        ("b.chargebacks", 0, 0, 10),
    ]
    # Renamed so that it sorts first, the chargeback comes first at the same timestamp.
    renamed = TopicTable("0.chargebacks", "chargeback", {"partition": [0], "ts": [10]})
    assert _log(renamed, payments)[0] == ("0.chargebacks", 0, 0, 10)


def test_a_partition_keeps_its_order_when_timestamps_go_back() -> None:
    late = TopicTable("a", "x", {"partition": [0, 0, 0], "ts": [5, 30, 1]})
    other = TopicTable("b", "y", {"partition": [0, 0], "ts": [20, 40]})
    # ts 1 follows ts 30 of its partition (it merges at 30), before b's 40.
    assert [(t, ts) for t, _, _, ts in _log(late, other)] == [
        ("a", 5),
        ("b", 20),
        ("a", 30),
        ("a", 1),
        ("b", 40),
    ]


def test_the_readme_states_the_rule() -> None:
    text = " ".join(_README.read_text(encoding="utf-8").split())
    assert "### How events are ordered" in text
    assert "smallest `(timestamp, topic name, partition, offset)`" in text
    assert "Bad records leave before the merge." in text
    assert "**Renaming a topic**" in text
