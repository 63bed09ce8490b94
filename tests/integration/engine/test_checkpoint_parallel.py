"""The parallel executor checkpoints and resumes: every resume gives the uninterrupted run's
output bytes, also in a fresh interpreter; foreign snapshots and unsnapshottable state fail
clearly. These tests start worker processes (no broker)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.checkpoint import EngineSnapshot
from engine.errors import CheckpointError
from engine.executors.batch import BatchExecutor
from engine.executors.parallel import ParallelExecutor
from engine.log import InMemorySource, TopicTable
from engine.output import canonical_bytes, collect
from engine.pipeline import Pipeline
from engine.planner import plan
from tests.support.budget import examples
from tests.support.checkpoints import (
    EpochSink,
    FromPosition,
    MemoryStore,
    check_resumes,
    every,
    order_revealing,
    small_social,
    spam_with_timers,
    table_of,
)
from tests.support.engine_logs import LogSpec, logs, pipelines

ROOT = Path(__file__).resolve().parents[3]


def _parallel(workers: int, size: int) -> Any:
    return lambda: ParallelExecutor(workers=workers, epoch_size=size)


def _order_source(parts: list[list[int]]) -> Any:
    return lambda: InMemorySource.from_tables(
        TopicTable("t", "a", table_of(parts), len(parts)), batch_size=2
    )


@settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pipeline=pipelines(),
    log=logs(max_rows=25),
    workers=st.sampled_from([1, 2, 3]),
    epoch_size=st.sampled_from([3, 7, 20]),
    k=st.integers(2, 4),
)
def test_parallel_resumed_from_any_checkpoint_gives_the_same_bytes(
    pipeline: Pipeline, log: LogSpec, workers: int, epoch_size: int, k: int
) -> None:
    check_resumes(_parallel(workers, epoch_size), lambda: pipeline, log.source, every(k))


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_social_spam_with_windows_and_timers_resumes_byte_for_byte(workers: int) -> None:
    saved = check_resumes(
        _parallel(workers, 1_000), spam_with_timers, small_social(), every(2), chain=workers == 2
    )
    assert [s.position.epoch for s in saved] == [2, 4, 6]
    assert all(len(s.states) == workers and s.executor == "parallel" for s in saved)
    # Each worker owns a share of the keys: its blob is its own.
    if workers > 1:
        assert len(set(saved[-1].states)) == workers


@pytest.mark.parametrize(
    "parts",
    [
        [[100, 50, 60, 5], [100, 40, 70, 6]],
        [[5, 5, 5, 5], [5, 5, 5], [5, 5, 5, 5, 5]],
        [[1, 2, 3, 4, 5, 6], [], [50, 60, 70]],
    ],
)
def test_edge_cases_at_the_checkpoint_boundary(parts: list[list[int]]) -> None:
    saved = check_resumes(_parallel(2, 2), order_revealing, _order_source(parts), every(1))
    assert saved[-1].position.seq == sum(map(len, parts))  # the last epoch too


_RESUME = """
import sys
from pathlib import Path
from engine.checkpoint import EngineSnapshot
from engine.executors.parallel import ParallelExecutor
from engine.output import canonical_bytes
from engine.planner import plan
from tests.support.checkpoints import EpochSink, FromPosition, small_social, spam_with_timers

snap = EngineSnapshot.from_bytes(Path(sys.argv[1]).read_bytes())
sink = EpochSink()
executor = ParallelExecutor(workers=snap.workers, epoch_size=snap.epoch_size)
source = FromPosition(small_social()(), snap.position)
executor.run(plan(spam_with_timers()), source, sink, resume=snap)
out = canonical_bytes(sink.chunks())
Path(sys.argv[2]).write_bytes(repr(sorted(out.items())).encode())
"""


def test_a_fresh_interpreter_resumes_a_checkpoint(tmp_path: Path) -> None:
    # Another process, another hash seed: the plan is rebuilt from code, the timers' lambdas
    # made inside a merge come back from their pickled code.
    plain = EpochSink()
    ParallelExecutor(workers=2, epoch_size=1_000).run(
        plan(spam_with_timers()), small_social()(), plain
    )
    store, sink = MemoryStore(lambda e: e.index == 2), EpochSink()
    ParallelExecutor(workers=2, epoch_size=1_000).run(
        plan(spam_with_timers()), small_social()(), sink, checkpoints=store
    )
    (snap,) = store.saved
    (tmp_path / "snap").write_bytes(snap.to_bytes())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "12345"}
    subprocess.run(
        [sys.executable, "-c", _RESUME, str(tmp_path / "snap"), str(tmp_path / "out")],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
    )
    resumed = (tmp_path / "out").read_bytes()
    rest = [c for i, cs in plain.epochs if i >= 3 for c in cs]
    assert resumed == repr(sorted(canonical_bytes(rest).items())).encode()
    expected = canonical_bytes(plain.chunks())
    assert canonical_bytes(sink.chunks(before=3) + rest) == expected


def _snapshot(workers: int, executor: str = "parallel") -> EngineSnapshot:
    store = MemoryStore(every(2))
    runner: Any = (
        ParallelExecutor(workers=workers, epoch_size=2)
        if executor == "parallel"
        else BatchExecutor(epoch_size=2)
    )
    runner.run(
        plan(order_revealing()), _order_source([[1, 2, 3, 4, 5]])(), collect(), checkpoints=store
    )
    return store.saved[0]


def test_foreign_snapshots_are_refused_before_any_worker_starts() -> None:
    source = _order_source([[1, 2, 3, 4, 5]])
    two = _snapshot(2)
    cases: list[tuple[ParallelExecutor, EngineSnapshot, Pipeline, str]] = [
        (ParallelExecutor(workers=3, epoch_size=2), two, order_revealing(), "3 worker"),
        (ParallelExecutor(workers=2, epoch_size=3), two, order_revealing(), "epoch_size 2"),
        (
            ParallelExecutor(workers=1, epoch_size=2),
            _snapshot(1, "batch"),
            order_revealing(),
            "batch",
        ),
        (ParallelExecutor(workers=2, epoch_size=2), two, spam_with_timers(), "another pipeline"),
        (
            ParallelExecutor(workers=2, epoch_size=2),
            replace(two, states=two.states[::-1]),
            order_revealing(),
            "worker 1 of 2; it cannot be restored into worker 0 of 2",
        ),
    ]
    for executor, snap, pipeline, message in cases:
        with pytest.raises(CheckpointError, match=message):
            executor.run(
                plan(pipeline), FromPosition(source(), snap.position), collect(), resume=snap
            )
        assert executor.worker_pids == []


def test_a_worker_that_cannot_snapshot_fails_the_run_cleanly() -> None:
    p = Pipeline("locks")
    locks = p.table("locks", default=None)
    p.update("lock", on="a", table=locks, key="k", merge=lambda _o, _e, _v: threading.Lock())
    executor = ParallelExecutor(workers=2, epoch_size=2)
    with pytest.raises(CheckpointError, match=r"worker \d: table 'locks'.*lock"):
        executor.run(
            plan(p),
            _order_source([[1, 2, 3, 4, 5, 6]])(),
            collect(),
            checkpoints=MemoryStore(every(1)),
        )
    for pid in executor.worker_pids:
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "zombie" in status.read_text()
    assert executor.run_dir is not None and not executor.run_dir.exists()


def test_checkpoint_figures_are_reported() -> None:
    store = MemoryStore(every(1))
    stats = ParallelExecutor(workers=2, epoch_size=2).run(
        plan(order_revealing()), _order_source([[1, 2, 3, 4]])(), collect(), checkpoints=store
    )
    assert len(store.saved) == 2
    assert stats.seconds["snapshot"] > 0 and stats.seconds["checkpoint"] > 0
