"""The suite's Hypothesis profile: examples vary from run to run, in CI too, and every failure
can be replayed.

Hypothesis loads its own ``ci`` profile when it sees ``CI`` set (``.ci/run`` sets it): that
profile is derandomized and has no example database, so every CI run would try the same
examples. The suite's profile therefore never inherits from whatever profile is loaded; it
starts from Hypothesis' ``default`` (random, with the example database of
``tests/support/budget.py``'s note) and in CI takes only the ``ci`` profile's tolerance of slow
machines (no deadline, no too-slow health check) and its ``@reproduce_failure`` blobs.

A CI run has no database to keep its failures in (a fresh clone), so it draws one seed for
the whole session and prints it in the header and the summary: ``pytest --hypothesis-seed=N``
(with ``RESTREAM_THOROUGH=1``, as CI runs) gives every property test the same examples again.
"""

from __future__ import annotations

import secrets

from hypothesis import HealthCheck, settings

from tests.support.budget import examples

__all__ = ["PROFILE", "session_seed", "suite_settings"]

PROFILE = "restream"


def suite_settings(*, ci: bool) -> settings:
    """The suite's profile. Property tests without an explicit count get the budget of an
    explicit ``examples(100)``: 100 when thorough, 5 at a prompt."""
    base = settings.get_profile("default")  # Hypothesis' own: random, with a database
    if not ci:
        return settings(base, max_examples=examples(100), derandomize=False)
    return settings(
        base,
        max_examples=examples(100),
        derandomize=False,
        database=base.database,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )


def session_seed(given: str | None, *, ci: bool) -> int | None:
    """The seed to force on every property test of this session: none when the user gave one
    (``--hypothesis-seed``, which Hypothesis applies itself) or outside CI (where each test
    draws its own and the database replays failures first); in CI a fresh random one."""
    if given is not None or not ci:
        return None
    return secrets.randbelow(2**32)
