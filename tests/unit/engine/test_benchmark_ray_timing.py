"""The engine bench times a ``ray-wN`` run without the cluster's start or shutdown: the
bench's process connects before the timed run and disconnects after it, so the executor
(which finds Ray connected) leaves the cluster alone at the end of its run."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from engine.benchmark import _run_one
from engine.examples.social.data import generate_social
from engine.executors import ray_executor
from engine.executors.base import RunStats
from engine.executors.batch import BatchExecutor


def test_a_ray_run_is_timed_between_connecting_and_shutting_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said: list[str] = []

    class FakeRay:
        def shutdown(self) -> None:
            said.append("shutdown")

    class FakeExecutor:
        """Runs the batch executor in this process, saying what is asked of it."""

        def __init__(self, *, workers: int, epoch_size: int | None) -> None:
            self.epoch_size = epoch_size
            self.peak_rss = [0, 0]

        def start(self, plan: Any) -> None:
            said.append("start")

        def run(self, plan: Any, source: Any, sink: Any) -> RunStats:
            said.append("run")
            return BatchExecutor(epoch_size=self.epoch_size).run(plan, source, sink)

        def close(self) -> None:
            said.append("close")

    def connect(address: str) -> tuple[FakeRay, bool]:
        said.append("connect")
        return FakeRay(), True

    monkeypatch.setattr(ray_executor, "connect_ray", connect)
    monkeypatch.setattr(ray_executor, "RayExecutor", FakeExecutor)
    path = tmp_path / "data.pickle"
    path.write_bytes(pickle.dumps(generate_social(users=50, events=400, days=1, seed=2)))
    seconds, outputs, *_ = _run_one("ray-w2", str(path), 100)
    assert said == ["connect", "start", "run", "close", "shutdown"]
    assert outputs > 0 and seconds > 0
