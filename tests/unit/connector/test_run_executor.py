"""Which executor a run config builds, and the warning for epochs too small for its workers."""

from __future__ import annotations

import logging

import pytest

from connector.config import load_config
from connector.run import _executor
from engine.executors.parallel import ParallelExecutor


def test_small_epochs_for_many_workers_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(
        {"executor": "parallel", "workers": "16", "epoch_size": "100000"}, environ={}
    )
    with caplog.at_level(logging.WARNING, logger="connector.run"):
        executor = _executor(config)
    assert isinstance(executor, ParallelExecutor) and executor.workers == 16
    assert "each of 16 workers ~6250 events" in caplog.text
    assert "at least 800000" in caplog.text


def test_large_enough_epochs_and_one_worker_are_not(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="connector.run"):
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
