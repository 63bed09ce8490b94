"""Every executor against the serial oracle: same plan, same log, same output bytes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.executors import Executor
from engine.executors.batch import BatchExecutor
from engine.executors.serial import SerialExecutor
from engine.output import canonical_bytes, collect
from engine.pipeline import Pipeline
from engine.planner import plan
from tests.support.budget import examples
from tests.support.engine_logs import LogSpec, edge_log, edge_pipeline, logs, pipelines
from tests.support.executors import ExecutorMaker


def run(executor: Executor, pipeline: Pipeline, log: LogSpec) -> dict[str, bytes]:
    sink = collect()
    executor.run(plan(pipeline), log.source(), sink)
    return canonical_bytes(sink.chunks)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipeline=pipelines(), log=logs(), epoch_size=st.sampled_from([1, 2, 5, 17, 10_000]))
@example(pipeline=edge_pipeline(), log=edge_log(), epoch_size=1)
@example(pipeline=edge_pipeline(), log=edge_log(), epoch_size=5)
@example(pipeline=edge_pipeline(), log=edge_log(), epoch_size=10_000)
def test_every_executor_equals_serial_on_random_pipelines(
    executor: ExecutorMaker, pipeline: Pipeline, log: LogSpec, epoch_size: int
) -> None:
    expected = run(SerialExecutor(), pipeline, log)
    assert run(executor(epoch_size=epoch_size), pipeline, log) == expected


@settings(max_examples=examples(40), deadline=None)
@given(pipeline=pipelines(), log=logs(max_rows=25))
@example(pipeline=edge_pipeline(), log=edge_log())
def test_serial_output_does_not_depend_on_its_epoch_size(pipeline: Pipeline, log: LogSpec) -> None:
    assert run(SerialExecutor(epoch_size=1), pipeline, log) == run(
        SerialExecutor(epoch_size=1000), pipeline, log
    )


@pytest.mark.parametrize("epoch_size", [1, 3, 1000])
def test_timer_fires_before_first_later_event_at_or_after_its_time(epoch_size: int) -> None:
    import numpy as np

    from engine.log import InMemorySource, TopicTable
    from engine.pipeline import Record

    p = Pipeline("timers")
    live = p.table("live", default=0)

    def add(old: int, e: object, view: object) -> int:
        view.schedule(e.ts + 10, lambda o: o - 1)  # type: ignore[attr-defined]
        return old + 1

    p.update("add", on="a", table=live, key="k1", merge=add)
    seen = p.lookup("seen", on="a", table=live, key="k1")
    seen_before = p.lookup("seen_before", on="a", table=live, key="k1", before=True)
    out = p.output("o", key="k1")
    p.emit(
        "show",
        on="a",
        output=out,
        inputs=[seen, seen_before],
        fn=lambda e, _v: [Record(e.k1, {"ts": e.ts, "n": e.seen, "b": e.seen_before})],
    )
    # ts goes backwards (25 after 30): a timer due at 20 fires before the 30, not the 25.
    ts = [0, 5, 10, 30, 25, 40]
    table = TopicTable(
        "t.a",
        "a",
        {
            "partition": np.zeros(6, dtype=np.int64),
            "ts": np.array(ts),
            "k1": np.zeros(6, dtype=np.int64),
        },
    )
    sink_s, sink_b = collect(), collect()
    SerialExecutor(epoch_size=epoch_size).run(plan(p), InMemorySource.from_tables(table), sink_s)
    BatchExecutor(epoch_size=epoch_size).run(plan(p), InMemorySource.from_tables(table), sink_b)
    rows = [v for c in sink_s.chunks for _, v in c.records()]
    assert [(r["ts"], r["n"], r["b"]) for r in rows] == [
        (0, 1, 0),
        (5, 2, 1),
        (10, 2, 1),  # timer from ts 0 (due 10) fired before this event, then +1
        (30, 1, 0),  # timers due 15, 20 fired: 2 - 2 + 1
        (25, 2, 1),  # nothing due (40 > 25)
        (40, 1, 0),  # timers due 35, 40 fired: 2 - 2 + 1
    ]
    assert canonical_bytes(sink_b.chunks) == canonical_bytes(sink_s.chunks)
