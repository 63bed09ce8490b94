"""The collector thresholds a replay runs with, and that they are undone afterwards."""

from __future__ import annotations

import gc

import pytest

from connector.gcpolicy import REPLAY_THRESHOLDS, replay_collection


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


def test_full_collections_stay_on_and_young_cycles_are_still_collected() -> None:
    assert all(t > 0 for t in REPLAY_THRESHOLDS)  # 0 would switch collection off
    with replay_collection():
        node: list[object] = []
        node.append(node)  # a cycle only the collector frees
        del node
        assert gc.collect(0) >= 1
