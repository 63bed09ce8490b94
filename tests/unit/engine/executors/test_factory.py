"""engine.executors.make_executor: an executor by name."""

from __future__ import annotations

import re
import sys
from typing import get_args

import pytest

from connector.config import ExecutorName as SettingExecutorName
from engine.errors import EngineError
from engine.executors import (
    EXECUTOR_NAMES,
    BatchExecutor,
    ParallelExecutor,
    SerialExecutor,
    auto_epoch_size,
    make_executor,
)
from engine.executors.ray_executor import RayExecutor


def test_each_name_gives_its_executor() -> None:
    assert type(make_executor("serial", epoch_size=7)) is SerialExecutor
    assert type(make_executor("batch", workers=1)) is BatchExecutor
    parallel = make_executor("parallel", workers=3, epoch_size=9)
    assert isinstance(parallel, ParallelExecutor)
    assert (parallel.workers, parallel.epoch_size) == (3, 9)


def test_defaults_are_the_executors_own() -> None:
    assert make_executor("serial").epoch_size == auto_epoch_size(1)  # type: ignore[attr-defined]
    assert make_executor("batch", epoch_size=5).epoch_size == 5  # type: ignore[attr-defined]


def test_one_process_executors_refuse_workers_and_unknown_names_are_refused() -> None:
    with pytest.raises(EngineError, match="one process"):
        make_executor("batch", workers=2)
    with pytest.raises(EngineError, match="unknown executor 'spark'"):
        make_executor("spark", workers=2)  # type: ignore[arg-type]


def test_ray_gives_the_ray_executor_without_connecting() -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed")
    ray = make_executor("ray", workers=3, epoch_size=9, stall_timeout=5, ray_address="h:1")
    assert isinstance(ray, RayExecutor)
    assert (ray.workers, ray.epoch_size, ray.stall_timeout, ray.address) == (3, 9, 5, "h:1")


def test_ray_without_the_ray_package_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(EngineError, match=re.escape("pip install 'restream[ray]'")):
        make_executor("ray", workers=2)


def test_the_connector_setting_offers_exactly_these_executors() -> None:
    assert sorted(get_args(SettingExecutorName)) == sorted(EXECUTOR_NAMES)


@pytest.mark.parametrize(
    ("workers", "events", "expected"),
    [
        (1, 200_000, 25_000),  # eight epochs, so reading, computing and writing overlap
        (2, 100_000, 20_000),  # not below the smallest automatic epoch
        (1, 0, 20_000),
        (2, 10_000_000, 250_000),  # long runs: the per-worker size
        (64, 10**9, 2_000_000),
    ],
)
def test_automatic_epochs_of_a_known_length_run(workers: int, events: int, expected: int) -> None:
    assert auto_epoch_size(workers, events) == expected


def test_automatic_epochs_need_a_count_of_events() -> None:
    with pytest.raises(EngineError, match="events must be >= 0"):
        auto_epoch_size(1, -1)
