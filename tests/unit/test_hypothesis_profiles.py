"""The suite's Hypothesis profile varies examples between runs, in CI too, and a CI run's
seed replays them (tests/support/hypothesis_profiles.py)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from tests.support.budget import examples
from tests.support.hypothesis_profiles import PROFILE, session_seed, suite_settings


@pytest.mark.parametrize("ci", [False, True])
def test_the_profile_is_random_with_a_database_whatever_profile_was_loaded(ci: bool) -> None:
    # Hypothesis' own ci profile is derandomized without a database: loaded first, it must
    # not leak into the suite's profile.
    previous = settings.get_current_profile_name()
    settings.load_profile("ci")
    try:
        made = suite_settings(ci=ci)
    finally:
        settings.load_profile(previous)
    assert made.derandomize is False
    assert made.database is not None
    assert made.max_examples == examples(100)
    if ci:
        assert made.deadline is None and made.print_blob is True
        assert HealthCheck.too_slow in made.suppress_health_check


def test_this_session_runs_the_suite_profile() -> None:
    assert settings.get_current_profile_name() == PROFILE
    assert settings.default is not None and settings.default.derandomize is False


def test_ci_sessions_draw_a_fresh_seed_and_a_given_one_wins() -> None:
    seeds = {session_seed(None, ci=True) for _ in range(8)}
    assert None not in seeds and len(seeds) > 1  # 8 draws of 2**32: equal only by a fluke
    assert session_seed("1234", ci=True) is None  # Hypothesis applies --hypothesis-seed
    assert session_seed(None, ci=False) is None  # per-test seeds and the database
