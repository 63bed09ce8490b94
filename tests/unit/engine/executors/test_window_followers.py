"""Sliding tables written identically share one history (a leader and its followers): the
output must not change, whatever the kind, key, condition, lengths, epochs and reads."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.executors.batch import BatchExecutor
from engine.executors.runtime import EpochRuntime
from engine.executors.serial import SerialExecutor
from engine.output import canonical_bytes, collect
from engine.pipeline import Pipeline
from engine.planner import plan
from engine.state.windowed import WindowedTable
from engine.windows import Hopping, Sliding
from tests.support.budget import examples
from tests.support.checkpoints import check_resumes, every
from tests.support.engine_logs import LogSpec, edge_family, edge_log, families, logs


def _bytes(executor: Any, pipeline: Pipeline, log: LogSpec) -> dict[str, bytes]:
    sink = collect()
    executor.run(plan(pipeline), log.source(), sink)
    return canonical_bytes(sink.chunks)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family=families(), log=logs(), epoch_size=st.sampled_from([1, 3, 10, 10_000]))
@example(family=edge_family(), log=edge_log(), epoch_size=1)
@example(family=edge_family(), log=edge_log(), epoch_size=3)
def test_followers_answer_like_tables_of_their_own(
    family: tuple[Pipeline, int], log: LogSpec, epoch_size: int
) -> None:
    pipeline, followers = family
    runtime = EpochRuntime(plan(pipeline))
    assert len(runtime._leaders) == followers
    assert all(isinstance(runtime.vector[f], WindowedTable) for f in runtime._leaders)
    expected = _bytes(SerialExecutor(), pipeline, log)
    assert _bytes(BatchExecutor(epoch_size=epoch_size), pipeline, log) == expected


def test_tables_with_different_writes_do_not_share() -> None:
    p = Pipeline("apart")
    flag = p.derive(
        "flag", on="a", dtype="bool", fn=lambda e, _v: e.v > 0, batch_fn=lambda c: c["v"] > 0
    )
    p.count("all_1", on="a", key="k1", window=Sliding(5))
    p.count("all_9", on="a", key="k1", window=Sliding(9))  # follows all_1
    p.count("some", on="a", key="k1", where=flag, window=Sliding(9))  # a condition
    p.count("by_k2", on="a", key="k2", window=Sliding(9))  # another key
    p.count("of_b", on="b", key="k1", window=Sliding(9))  # another kind
    p.sum("total", on="a", key="k1", value="v", window=Sliding(9))  # another kind of table
    p.count("hop", on="a", key="k1", window=Hopping(10, 5))  # panes, not records
    assert EpochRuntime(plan(p))._leaders == {"all_9": "all_1"}


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family=families(), log=logs(), k=st.sampled_from([1, 2]))
@example(family=edge_family(), log=edge_log(), k=1)
def test_followers_resume_from_any_checkpoint(
    family: tuple[Pipeline, int], log: LogSpec, k: int
) -> None:
    pipeline, _ = family
    check_resumes(lambda: BatchExecutor(epoch_size=3), lambda: pipeline, log.source, every(k))
