"""Tests share code only through tests/support: no test module imports another (in its own
imports or in the scripts it runs in a fresh interpreter)."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
_TEST_IMPORT = re.compile(r"^\s*(from|import)\s+tests\.(unit|integration)\b", re.MULTILINE)


def test_no_test_module_imports_another() -> None:
    offenders = [
        f"{path.relative_to(TESTS)}:{text.count(chr(10), 0, m.start()) + 1}"
        for path in sorted(TESTS.rglob("*.py"))
        for text in [path.read_text(encoding="utf-8")]
        for m in _TEST_IMPORT.finditer(text)
    ]
    assert offenders == [], "move what they share to tests/support: " + ", ".join(offenders)
