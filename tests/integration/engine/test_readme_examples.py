"""The README's Python blocks run as they are, their test functions included (the testing
example forks the parallel executor's workers, hence an integration test)."""

from __future__ import annotations

from engine import Pipeline
from tests.support.doc_examples import readme_python_blocks, run_example


def test_readme_python_blocks_run() -> None:
    blocks = readme_python_blocks()
    assert len(blocks) >= 2
    results = [run_example(block) for block in blocks]
    assert isinstance(results[0]["p"], Pipeline)  # "Writing a backtest"
    assert sum(r["__tests_run__"] for r in results) >= 2  # "Testing your rules"
