"""The ``executor`` fixture: each executor in turn, in the manner of bytewax's ``entry_point``.

A test that takes ``executor`` runs once per executor, and gets a maker
``executor(epoch_size=None)`` of a fresh one: serial, batch, and (under tests/integration,
which may start processes) parallel with one and with two workers. Registered for the whole
suite by ``pytest_plugins`` in ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine.executors import Executor, make_executor

__all__ = ["IN_PROCESS", "WITH_WORKERS", "ExecutorMaker", "executor"]

#: Executors that run in the test's process (every test may use them).
IN_PROCESS = ("serial", "batch")
#: The parallel executor with 1 and 2 workers (integration tests only: they fork).
WITH_WORKERS = ("parallel-w1", "parallel-w2")

ExecutorMaker = Callable[..., Executor]


def _parametrized_by_the_test(metafunc: pytest.Metafunc) -> bool:
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if "executor" in (names.replace(" ", "").split(",") if isinstance(names, str) else names):
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A test that parametrizes its own ``executor`` argument (a name, say) keeps it.
    if "executor" in metafunc.fixturenames and not _parametrized_by_the_test(metafunc):
        integration = "integration" in metafunc.definition.path.parts
        names = IN_PROCESS + (WITH_WORKERS if integration else ())
        metafunc.parametrize("executor", names, indirect=True)


@pytest.fixture(scope="session")
def executor(request: pytest.FixtureRequest) -> ExecutorMaker:
    """A maker of the executor named by the parameter: ``executor(epoch_size=...)``."""
    name: str = request.param

    def make(*, epoch_size: int | None = None) -> Executor:
        if name.startswith("parallel-w"):
            workers = int(name.removeprefix("parallel-w"))
            return make_executor("parallel", workers=workers, epoch_size=epoch_size)
        assert name in IN_PROCESS
        return make_executor(name, epoch_size=epoch_size)  # type: ignore[arg-type]

    return make
