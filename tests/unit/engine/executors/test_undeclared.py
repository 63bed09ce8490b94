"""Reading a table or column that the operator did not declare fails, naming it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine.errors import ExecutionError, UndeclaredReadError
from engine.log import InMemorySource, TopicTable
from engine.output import collect
from engine.pipeline import Pipeline, Record
from engine.planner import plan
from tests.support.executors import ExecutorMaker


def _source() -> InMemorySource:
    table = TopicTable(
        "t",
        "a",
        {"partition": np.zeros(3, dtype=np.int64), "ts": np.arange(3), "k": np.array([1, 2, 1])},
    )
    return InMemorySource.from_tables(table)


def _count(old: int, _e: Any, _v: Any) -> int:
    return old + 1


def test_undeclared_table_read_names_the_table(executor: ExecutorMaker) -> None:
    p = Pipeline("sneaky")
    seen = p.table("seen", default=0)
    p.update("count", on="a", table=seen, key="k", merge=_count)
    out = p.output("o", key="k")
    p.emit(
        "peek", on="a", output=out, fn=lambda e, view: [Record(e.k, {"n": view.get("seen", e.k)})]
    )
    with pytest.raises(UndeclaredReadError, match=r"'peek' read table 'seen' without declaring"):
        executor(epoch_size=2).run(plan(p), _source(), collect())


def test_undeclared_column_read_names_the_column(executor: ExecutorMaker) -> None:
    p = Pipeline("sneaky")
    n = p.count("n", on="a", key="k")
    looked = p.lookup("n_now", on="a", table=n, key="k")
    out = p.output("o", key="k")
    doubled = p.derive("doubled", on="a", inputs=[looked], fn=lambda e, _v: 2 * e.n_now)
    # Runs after n_now exists (it waits for `doubled`), but never declared n_now itself.
    p.emit(
        "undeclared",
        on="a",
        output=out,
        inputs=[doubled],
        fn=lambda e, _v: [Record(e.k, {"n": e.n_now})],
    )
    with pytest.raises(UndeclaredReadError, match=r"column 'n_now' was read but not declared"):
        executor(epoch_size=2).run(plan(p), _source(), collect())


def test_reading_a_column_not_yet_derived_says_to_declare_it(executor: ExecutorMaker) -> None:
    p = Pipeline("sneaky")
    n = p.count("n", on="a", key="k")
    p.lookup("n_now", on="a", table=n, key="k")
    out = p.output("o", key="k")
    # No inputs: planned in the first phase, before the lookup has run.
    p.emit("too_early", on="a", output=out, fn=lambda e, _v: [Record(e.k, {"n": e.n_now})])
    with pytest.raises(ExecutionError, match=r"declare it in the operator's `inputs`"):
        executor(epoch_size=2).run(plan(p), _source(), collect())
