"""How hard the property tests try: thorough in CI, quick at a developer's prompt.

``make test`` (and so CI) sets ``RESTREAM_THOROUGH=1``: every property test runs the number of
examples written at its decorator. A plain ``pytest tests/unit`` runs a fortieth of them (at
least 2), check_resumes resumes from a few checkpoints, not all, and tests/conftest.py
spreads the run over every core (pytest-xdist), so the edit-test loop stays under 45 s on a
2-core machine. Examples are random in every run, CI included
(tests/support/hypothesis_profiles.py): at a prompt, failures are kept in Hypothesis' example
database and replayed first; a CI run (a fresh clone, no database) prints its seed.
"""

from __future__ import annotations

import os

__all__ = ["THOROUGH", "examples", "size"]

THOROUGH = os.environ.get("RESTREAM_THOROUGH", "") not in ("", "0")


def examples(n: int) -> int:
    """``n`` examples when thorough, else a fortieth of them (at least 2)."""
    return n if THOROUGH else max(2, n // 40)


def size(thorough: int, quick: int) -> int:
    """A scenario test's data size: ``thorough`` in CI, ``quick`` at a prompt."""
    return thorough if THOROUGH else quick
