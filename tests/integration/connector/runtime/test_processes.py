"""Child processes for parallel writers: answers, failures, deaths (starts processes)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from connector.cli import app as cli
from connector.errors import BrokerError
from connector.runtime.processes import run_in_processes


def _square_and_pid(value: int) -> tuple[int, int]:
    return value * value, os.getpid()


def _fail(value: int) -> int:
    if value == 2:
        raise ValueError("two is not allowed")
    return value


def _die(value: int) -> int:
    if value == 1:
        os._exit(7)
    return value


def test_each_call_runs_in_its_own_process_in_order() -> None:
    results = run_in_processes(_square_and_pid, [(1,), (2,), (3,)], name="test")
    assert [r[0] for r in results] == [1, 4, 9]
    pids = {r[1] for r in results}
    assert len(pids) == 3 and os.getpid() not in pids


def test_a_child_that_raises_fails_the_run_with_its_error() -> None:
    with pytest.raises(
        BrokerError, match=r"test process \d+ failed: ValueError: two is not allowed"
    ):
        run_in_processes(_fail, [(1,), (2,)], name="test")


def test_a_child_that_dies_fails_the_run_with_its_exit_code() -> None:
    with pytest.raises(BrokerError, match="exited with code 7"):
        run_in_processes(_die, [(1,), (2,)], name="test")


def test_a_process_forked_under_the_cli_sigterm_handler_dies_of_sigterm() -> None:
    # The demo and bench commands turn SIGTERM into KeyboardInterrupt for their own cleanup;
    # a child forked meanwhile must not run cleanup of the parent's (a flush, say).
    with cli._terminate_as_interrupt(True):
        pid = os.fork()
        if pid == 0:  # the child: wait to be terminated
            try:
                time.sleep(30)
            finally:
                os._exit(3)  # only reached if SIGTERM became an exception here
        time.sleep(0.2)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
