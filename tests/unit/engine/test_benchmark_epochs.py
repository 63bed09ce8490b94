"""The engine bench's epoch sizes: those ``restream run`` picks for a replay of that length."""

from __future__ import annotations

import pytest

from engine.benchmark import epoch_size_for
from engine.executors.base import auto_epoch_size


@pytest.mark.parametrize(
    ("name", "events", "expected"),
    [
        ("batch", 1_000_000, 125_000),  # 8 epochs, as restream run cuts 1M events
        ("serial", 10_000_000, 250_000),
        ("parallel-w2", 1_000_000, 125_000),
        ("parallel-w2", 10_000_000, 250_000),
        ("parallel-w16", 100_000_000, 2_000_000),
        ("ray-w3", 4_000_000, 375_000),
        ("parallel-w2", 50_000, 20_000),  # never below the smallest epoch
    ],
)
def test_the_epoch_size_is_restream_runs_for_that_length(
    name: str, events: int, expected: int
) -> None:
    assert epoch_size_for(name, events, None) == expected
    workers = 1 if name in ("batch", "serial") else int(name.rsplit("w", 1)[1])
    assert expected == auto_epoch_size(workers, events)


def test_an_asked_size_wins_and_baselines_have_none() -> None:
    assert epoch_size_for("parallel-w2", 1_000_000, 5000) == 5000
    assert epoch_size_for("handwritten", 1_000_000, None) is None
    assert epoch_size_for("wholelog", 1_000_000, 5000) is None
