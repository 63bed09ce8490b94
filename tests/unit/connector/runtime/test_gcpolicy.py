"""The collector thresholds a replay runs with, and that they are undone afterwards."""

from __future__ import annotations

import gc

import pytest

from connector.runtime.gcpolicy import REPLAY_THRESHOLDS, replay_collection


def test_thresholds_hold_inside_and_are_restored_after() -> None:
    before = gc.get_threshold()
    with replay_collection():
        assert gc.get_threshold() == REPLAY_THRESHOLDS
    assert gc.get_threshold() == before


def test_thresholds_are_restored_when_the_run_fails() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError, match="boom"), replay_collection():
        raise RuntimeError("boom")
    assert gc.get_threshold() == before


def test_young_objects_are_collected_less_often_but_still_collected() -> None:
    assert all(t > 0 for t in REPLAY_THRESHOLDS)  # 0 would switch collection off
    gc.collect()
    with replay_collection():
        start = gc.get_count()[0]
        kept = [[i] for i in range(5_000)]  # 5,000 tracked allocations: the default 700
        # would have run several generation-0 collections, each resetting the count.
        assert gc.get_count()[0] >= start + 5_000
        more = [[i] for i in range(REPLAY_THRESHOLDS[0])]  # past the raised threshold
        assert gc.get_count()[0] < start + 5_000 + REPLAY_THRESHOLDS[0]
    del kept, more
