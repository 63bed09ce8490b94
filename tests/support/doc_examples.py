"""Code examples from the README and from docstrings, extracted so that tests can run them."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["README", "docstring_examples", "readme_python_blocks", "run_example"]

README = Path(__file__).resolve().parents[2] / "README.md"
_FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def readme_python_blocks() -> list[str]:
    """Every fenced ``python`` block of the README, in order."""
    return _FENCE.findall(README.read_text(encoding="utf-8"))


def docstring_examples(doc: str) -> list[str]:
    """The literal blocks (``::`` then an indented block) of a reST docstring."""
    blocks: list[str] = []
    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].rstrip().endswith("::"):
            j = i + 1
            body: list[str] = []
            while j < len(lines) and (not lines[j].strip() or lines[j].startswith(" ")):
                body.append(lines[j])
                j += 1
            blocks.append(textwrap.dedent("\n".join(body)).strip("\n") + "\n")
            i = j
        else:
            i += 1
    return blocks


def run_example(code: str) -> dict[str, Any]:
    """Execute ``code`` in a fresh namespace, then call every ``test_*`` function it defines
    (as pytest would); return the namespace."""
    namespace: dict[str, Any] = {"__name__": "example"}
    exec(compile(code, "<example>", "exec"), namespace)
    tests: list[Callable[[], object]] = [
        fn for name, fn in namespace.items() if name.startswith("test_") and callable(fn)
    ]
    for test in tests:
        test()
    namespace["__tests_run__"] = len(tests)
    return namespace
