"""Which executor a run config builds, its epoch size, and the warning for epochs too small."""

from __future__ import annotations

import logging

import pytest

from connector.config import load_config
from connector.job.run import _executor
from engine.errors import EngineError
from engine.executors.base import AUTO_EPOCH_MAX, AUTO_EPOCH_MIN, auto_epoch_size
from engine.executors.batch import BatchExecutor
from engine.executors.parallel import ParallelExecutor


def test_small_epochs_for_many_workers_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(
        {"executor": "parallel", "workers": "16", "epoch_size": "100000"}, environ={}
    )
    with caplog.at_level(logging.WARNING, logger="connector.job.run"):
        executor = _executor(config)
    assert isinstance(executor, ParallelExecutor) and executor.workers == 16
    assert "each of 16 workers ~6250 events" in caplog.text
    assert "at least 800000" in caplog.text


def test_large_enough_epochs_and_one_worker_are_not(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="connector.job.run"):
        _executor(
            load_config(
                {"executor": "parallel", "workers": "2", "epoch_size": "250000"}, environ={}
            )
        )
        _executor(
            load_config({"executor": "parallel", "workers": "1", "epoch_size": "1000"}, environ={})
        )
        _executor(load_config({"executor": "batch", "epoch_size": "1000"}, environ={}))
    assert caplog.text == ""


@pytest.mark.parametrize(
    ("workers", "expected"),
    [(1, AUTO_EPOCH_MIN), (2, 250_000), (3, 375_000), (16, 2_000_000), (64, AUTO_EPOCH_MAX)],
)
def test_automatic_epochs_grow_with_workers_within_bounds(workers: int, expected: int) -> None:
    assert auto_epoch_size(workers) == expected
    config = load_config({"executor": "parallel", "workers": str(workers)}, environ={})
    executor = _executor(config)
    assert isinstance(executor, ParallelExecutor)
    assert executor.epoch_size == expected
    # The engine picks the same size when the executor is built without the connector.
    assert ParallelExecutor(workers=workers).epoch_size == expected


def test_automatic_epochs_are_warned_about_only_past_the_cap_and_a_chosen_size_wins(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="connector.job.run"):
        many = _executor(load_config({"workers": "32"}, environ={}))
    assert caplog.text == ""  # 2,000,000 over 32 workers: 62,500 each
    assert isinstance(many, ParallelExecutor) and many.epoch_size == AUTO_EPOCH_MAX
    with caplog.at_level(logging.WARNING, logger="connector.job.run"):
        _executor(load_config({"workers": "48"}, environ={}))
    assert "epoch_size 2000000 (automatic, capped) gives each of 48 workers ~41666" in caplog.text
    batch = _executor(load_config({"executor": "batch"}, environ={}))
    assert isinstance(batch, BatchExecutor) and batch.epoch_size == auto_epoch_size(1)
    chosen = _executor(load_config({"workers": "4", "epoch_size": "777"}, environ={}))
    assert isinstance(chosen, ParallelExecutor) and chosen.epoch_size == 777


def test_auto_epoch_size_needs_a_worker() -> None:
    with pytest.raises(EngineError, match="workers must be >= 1"):
        auto_epoch_size(0)


def test_a_short_run_gets_eight_epochs_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="connector.job.run"):
        executor = _executor(load_config({"workers": "2"}, environ={}), 200_000)
    assert isinstance(executor, ParallelExecutor) and executor.epoch_size == 25_000
    assert "at least 8 epochs for the job's 200000 events" in caplog.text
    assert "set epoch_size to at least" not in caplog.text  # the advice would be wrong here
    # A long run keeps the per-worker size, a chosen size wins whatever the length.
    long_run = _executor(load_config({"workers": "2"}, environ={}), 10_000_000)
    assert isinstance(long_run, ParallelExecutor) and long_run.epoch_size == 250_000
    chosen = _executor(load_config({"executor": "batch", "epoch_size": "777"}, environ={}), 10)
    assert isinstance(chosen, BatchExecutor) and chosen.epoch_size == 777
