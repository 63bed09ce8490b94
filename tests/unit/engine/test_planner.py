"""The planner: phases from declared reads and writes, and errors that name the culprits."""

from __future__ import annotations

import pytest

from engine.errors import PipelineError, PlanError
from engine.pipeline import Pipeline, Record
from engine.planner import plan


def _merge(old, _e, _v):  # type: ignore[no-untyped-def]
    return old + 1


def test_writers_run_before_readers_and_declaration_order_within_a_phase() -> None:
    p = Pipeline("t")
    a = p.table("a", default=0)
    b = p.table("b", default=0)
    out = p.output("o", key="k")
    p.emit("show", on="x", output=out, reads=[b], fn=lambda e, v: [Record(1, {"b": v.get(b, 1)})])
    p.update("write_b", on="x", table=b, key="k", merge=_merge, reads=[a])
    p.update("write_a", on="x", table=a, key="k", merge=_merge)
    pl = plan(p)
    phases = {op.name: op.phase for op in pl.operators}
    assert phases == {"write_a": 0, "write_b": 1, "show": 2}
    assert pl.phases == 3
    assert [op.name for op in pl.by_kind("x")] == ["write_a", "write_b", "show"]


def test_all_writers_of_a_table_share_a_phase() -> None:
    p = Pipeline("t")
    a = p.table("a", default=0)
    c = p.table("c", default=0)
    p.update("write_a", on="x", table=a, key="k", merge=_merge)
    p.update("c_from_a", on="x", table=c, key="k", merge=_merge, reads=[a])
    p.update("c_plain", on="y", table=c, key="k", merge=_merge)
    pl = plan(p)
    phases = {op.name: op.phase for op in pl.operators}
    assert phases["c_plain"] == phases["c_from_a"] == 1
    # Same phase: declaration order decides.
    assert [op.name for op in pl.in_phase(1)] == ["c_from_a", "c_plain"]


def test_cycle_is_rejected_with_operators_and_tables_named() -> None:
    p = Pipeline("t")
    a = p.table("a", default=0)
    b = p.table("b", default=0)
    p.update("op_a", on="x", table=a, key="k", merge=_merge, reads=[b])
    p.update("op_b", on="x", table=b, key="k", merge=_merge, reads=[a])
    with pytest.raises(PlanError) as err:
        plan(p)
    msg = str(err.value)
    assert "cycle" in msg
    assert "'op_a'" in msg and "'op_b'" in msg
    assert "table a" in msg and "table b" in msg


def test_reading_own_table_is_rejected() -> None:
    p = Pipeline("t")
    a = p.table("a", default=0)
    p.update("op_a", on="x", table=a, key="k", merge=_merge, reads=[a])
    with pytest.raises(PlanError, match=r"'op_a' reads table a .*which it writes itself"):
        plan(p)


def test_write_from_two_phases_in_a_cycle_is_rejected() -> None:
    # w1 and w2 both write t, so they share a phase; r reads t and writes u, which w2 reads:
    # w2 would have to run both before and after r.
    p = Pipeline("t")
    t = p.table("t", default=0)
    u = p.table("u", default=0)
    p.update("w1", on="x", table=t, key="k", merge=_merge)
    p.update("r", on="x", table=u, key="k", merge=_merge, reads=[t])
    p.update("w2", on="x", table=t, key="k", merge=_merge, reads=[u])
    with pytest.raises(PlanError) as err:
        plan(p)
    msg = str(err.value)
    assert "'r'" in msg and "'w2'" in msg and "table t" in msg and "table u" in msg


def test_read_of_table_nobody_writes_is_rejected() -> None:
    p = Pipeline("t")
    a = p.table("a", default=0)
    out = p.output("o", key="k")
    p.emit("show", on="x", output=out, reads=[a], fn=lambda e, v: [])
    with pytest.raises(PlanError, match=r"'show' reads table 'a', but no operator writes it"):
        plan(p)


def test_declaration_errors_name_the_operator() -> None:
    p = Pipeline("t")
    a = p.table("a", default=0)
    with pytest.raises(PipelineError, match="table 'a' is declared twice"):
        p.table("a")
    p.update("op", on="x", table=a, key="k", merge=_merge)
    with pytest.raises(PipelineError, match="operator 'op' is declared twice"):
        p.update("op", on="x", table=a, key="k", merge=_merge)
    with pytest.raises(PipelineError, match="op2: key must be"):
        p.update("op2", on="x", table=a, key=3, merge=_merge)  # type: ignore[arg-type]
    with pytest.raises(PipelineError, match="a count table takes no `value`"):
        p.builtin("c", "count", on="x", key="k", value="v")
    with pytest.raises(PipelineError, match=r"pipeline 'empty' has no operators"):
        plan(Pipeline("empty"))


def test_describe_lists_phases_and_reads() -> None:
    p = Pipeline("demo")
    n = p.count("n", on="x", key="k")
    col = p.lookup("n_seen", on="x", table=n, key="k")
    out = p.output("o", key="k")
    p.emit("show", on="x", output=out, inputs=[col], fn=lambda e, v: [])
    text = plan(p).describe()
    assert "pipeline demo: 3 operators, 3 phases" in text
    assert "phase 0:" in text and "phase 2:" in text
    assert "reads column x.n_seen" in text
    assert "writes table n (count)" in text
