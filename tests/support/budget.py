"""How hard the property tests try: thorough in CI, quick at a developer's prompt.

``make test`` (and so CI) sets ``RESTREAM_THOROUGH=1``: every property test runs the number of
examples written at its decorator. A plain ``pytest tests/unit`` runs a twentieth of them (at
least 3), so the edit-test loop stays under a minute. Examples are random in every run, CI
included (tests/support/hypothesis_profiles.py): at a prompt, failures are kept in Hypothesis'
example database and replayed first; a CI run (a fresh clone, no database) prints its seed.
"""

from __future__ import annotations

import os

__all__ = ["THOROUGH", "examples", "size"]

THOROUGH = os.environ.get("RESTREAM_THOROUGH", "") not in ("", "0")


def examples(n: int) -> int:
    """``n`` examples when thorough, else a twentieth of them (at least 3)."""
    return n if THOROUGH else max(3, n // 20)


def size(thorough: int, quick: int) -> int:
    """A scenario test's data size: ``thorough`` in CI, ``quick`` at a prompt."""
    return thorough if THOROUGH else quick
