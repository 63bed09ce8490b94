"""Each built-in table gives the same values as the same table written as a Python merge.

The Python version keeps every write of a key ``(ts, value)`` in a tuple and computes the
aggregate by its definition at the reader's time; both run through the serial executor, and the
built-in one through the batch executor too.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.errors import ExecutionError
from engine.executors.batch import BatchExecutor
from engine.executors.serial import SerialExecutor
from engine.output import canonical_bytes, collect
from engine.pipeline import Pipeline, Record
from engine.planner import plan
from engine.windows import Hopping, Sliding, Tumbling, Window
from tests.support.budget import examples
from tests.support.engine_logs import LogSpec, edge_log, logs

WINDOWS: list[Window | None] = [None, Sliding(1), Sliding(9), Tumbling(10), Hopping(12, 4)]
KINDS = ["count", "sum", "min", "max", "first", "last", "ratio", "since_last", "distinct"]


def _members(window: Window | None, writes: tuple[tuple[int, Any], ...], r: int) -> list[Any]:
    if window is None:
        return list(writes)
    if isinstance(window, Sliding):
        return [w for w in writes if r - window.length < w[0] <= r]
    end = (r // window.slide) * window.slide + window.slide
    start = end - window.size
    return [w for w in writes if start <= w[0] < end]


def by_definition(
    kind: str, window: Window | None, writes: tuple[tuple[int, Any], ...], r: int
) -> Any:
    m = _members(window, writes, r)
    values = [v for _, v in m]
    if kind == "count":
        return len(m)
    if kind == "sum":
        return sum(values)
    if kind == "ratio":
        return (sum(1 for v in values if v), len(values))
    if kind == "distinct":
        return len(set(values))
    if not m:
        return None
    if kind == "min":
        return min(values)
    if kind == "max":
        return max(values)
    if kind == "first":
        return values[0]
    if kind == "last":
        return values[-1]
    assert kind == "since_last"
    return r - m[-1][0]


def pair(kind: str, window: Window | None, before: bool, field: str | None = None) -> Pipeline:
    p = Pipeline(f"{kind}-{window}")
    value: Any = field or {"count": None, "since_last": None, "distinct": "k2"}.get(kind, "v")
    if kind == "ratio":
        value = p.derive(
            "odd",
            on="a",
            dtype="bool",
            fn=lambda e, _v: e.v % 2 == 1,
            batch_fn=lambda c: c["v"] % 2 == 1,
        )
    table = p.builtin("t", kind, on="a", key="k1", value=value, window=window)  # type: ignore[arg-type]
    history = p.table("history", default=())

    def remember(old: tuple[Any, ...], e: Any, _view: Any) -> tuple[Any, ...]:
        if kind in ("count", "since_last"):
            v = None
        elif kind == "ratio":
            v = e.odd
        else:
            v = getattr(e, value)
        return (*old, (e.ts, v))

    p.update(
        "remember",
        on="a",
        table=history,
        key="k1",
        merge=remember,
        inputs=[value] if kind == "ratio" else [],
    )
    out = p.output("o", key="k1")
    for reader in ("a", "b"):
        got = p.lookup(f"got_{reader}", on=reader, table=table, key="k1", before=before)
        hist = p.lookup(f"hist_{reader}", on=reader, table=history, key="k1", before=before)
        p.emit(
            f"show_{reader}",
            on=reader,
            output=out,
            inputs=[got, hist],
            fn=lambda e, _v, r=reader: [
                Record(
                    e.k1,
                    {
                        "builtin": getattr(e, f"got_{r}"),
                        "python": by_definition(kind, window, getattr(e, f"hist_{r}"), e.ts),
                    },
                )
            ],
        )
    return p


@pytest.mark.parametrize("window", WINDOWS, ids=str)
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=examples(12), deadline=None)
@given(log=logs(), before=st.booleans(), epoch_size=st.sampled_from([1, 4, 1000]))
@example(log=edge_log(), before=False, epoch_size=1)
@example(log=edge_log(), before=True, epoch_size=4)
def test_builtin_equals_python_merge(
    kind: str, window: Window | None, log: LogSpec, before: bool, epoch_size: int
) -> None:
    p = pair(kind, window, before)
    sink = collect()
    SerialExecutor().run(plan(p), log.source(), sink)
    for chunk in sink.chunks:
        for _, value in chunk.records():
            assert value["builtin"] == value["python"]
            assert type(value["builtin"]) is type(value["python"])
    batch = collect()
    BatchExecutor(epoch_size=epoch_size).run(plan(p), log.source(), batch)
    assert canonical_bytes(batch.chunks) == canonical_bytes(sink.chunks)


@pytest.mark.parametrize("window", WINDOWS, ids=str)
@settings(max_examples=examples(12), deadline=None)
@given(log=logs(), before=st.booleans(), epoch_size=st.sampled_from([1, 4, 1000]))
def test_distinct_of_strings_equals_python_merge(
    window: Window | None, log: LogSpec, before: bool, epoch_size: int
) -> None:
    """Distinct values of a string field: the oracle takes them as they are (it once failed
    with ``int()``), the vectorised tables count their dictionary codes."""
    p = pair("distinct", window, before, field="s")
    sink = collect()
    SerialExecutor().run(plan(p), log.source(), sink)
    for chunk in sink.chunks:
        for _, value in chunk.records():
            assert value["builtin"] == value["python"]
    batch = collect()
    BatchExecutor(epoch_size=epoch_size).run(plan(p), log.source(), batch)
    assert canonical_bytes(batch.chunks) == canonical_bytes(sink.chunks)


@pytest.mark.parametrize("kind", ["sum", "min", "max", "first", "last"])
def test_numeric_kinds_refuse_strings_alike_in_every_executor(kind: str) -> None:
    """A numeric table over a string field fails the same way in the oracle and in batch,
    naming the operator; no executor quietly aggregates dictionary codes."""
    p = Pipeline(kind)
    table = p.builtin("t", kind, on="a", key="k1", value="s")  # type: ignore[arg-type]
    got = p.lookup("got", on="a", table=table, key="k1")
    out = p.output("o", key="k1")
    p.emit("show", on="a", output=out, inputs=[got], fn=lambda e, _v: [Record(e.k1, {})])
    spec = LogSpec({k: 1 for k in ("a", "b")}, {"a": [(0, 1, 0, 0, 0, "x")], "b": []})
    for executor in (SerialExecutor(), BatchExecutor()):
        with pytest.raises(ExecutionError, match="operator 't' raised ValueError"):
            executor.run(plan(p), spec.source(), collect())
