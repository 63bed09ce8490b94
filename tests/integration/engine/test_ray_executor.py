"""The ray executor against the serial oracle, how it fails, and how it resumes.

Every test runs on the session's local two-node Ray cluster (tests/support/ray_cluster.py),
with actors of half a CPU so that three fit on two one-CPU nodes. Each run places and starts
its actors afresh (a couple of seconds), so the property tests draw few examples.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.benchmark import score_digest
from engine.checkpoint import EngineSnapshot
from engine.errors import ExecutionError, StallError
from engine.examples.social.data import generate_social
from engine.examples.social.source import social_source
from engine.examples.social.spam import SCORE_FIELDS, build_spam_pipeline
from engine.executors.ray_executor import RayExecutor
from engine.executors.serial import SerialExecutor
from engine.log import Epoch
from engine.output import OutputChunk, canonical_bytes, collect
from engine.pipeline import Pipeline
from engine.planner import plan
from tests.support.budget import examples
from tests.support.checkpoints import (
    EpochSink,
    FromPosition,
    MemoryStore,
    check_resumes,
    every,
    small_social,
    spam_with_timers,
)
from tests.support.engine_logs import LogSpec, logs, pipelines
from tests.support.ray_cluster import RayCluster
from tests.support.ray_cluster import ray_executor as _ray
from tests.support.slow_runs import fragile_pipeline, signal_when_up, slow_log

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _bytes(executor: Any, pipeline: Pipeline, log: LogSpec) -> dict[str, bytes]:
    sink = collect()
    executor.run(plan(pipeline), log.source(), sink)
    return canonical_bytes(sink.chunks)


def _gone(pids: list[int], within: float = 10.0) -> None:
    """Every pid (actors on this machine's nodes) exits within ``within`` seconds."""
    deadline = time.monotonic() + within
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _alive(p)]
        time.sleep(0.1)
    assert not alive, f"actors outlived the run: {alive}"


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "zombie" not in status


def test_the_cluster_has_two_nodes_and_the_actors_spread_over_them(
    ray_cluster: RayCluster,
) -> None:
    assert ray_cluster.nodes == 2
    executor = _ray(2, 1_000)
    sink = collect()
    stats = executor.run(plan(fragile_pipeline()), slow_log(5_000), sink)
    assert sum(len(c) for c in sink.chunks) == 5_000 and stats.epochs == 5
    assert len({p.node for p in executor.placed}) == 2
    assert len(executor.peak_rss) == 3
    _gone(executor.worker_pids)


@settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pipeline=pipelines(),
    log=logs(),
    workers=st.sampled_from([2, 3]),
    epoch_size=st.sampled_from([1, 4, 1000]),
)
def test_ray_equals_serial_on_random_pipelines(
    pipeline: Pipeline, log: LogSpec, workers: int, epoch_size: int
) -> None:
    expected = _bytes(SerialExecutor(), pipeline, log)
    assert _bytes(_ray(workers, epoch_size), pipeline, log) == expected


def _spam_digest(executor: Any, data: Any) -> str:
    sink = collect()
    executor.run(plan(build_spam_pipeline()), social_source(data), sink)
    cols = {
        name: np.concatenate([np.asarray(c.columns[name].tolist()) for c in sink.chunks])
        for name in SCORE_FIELDS
    }
    return score_digest(cols)


@pytest.fixture(scope="module")
def spam_small() -> tuple[Any, str]:
    """A small social data set and the serial oracle's digest of its spam scores."""
    data = generate_social(users=2_000, events=20_000, days=10, seed=3, jitter_ms=3_000)
    return data, _spam_digest(SerialExecutor(), data)


@pytest.mark.parametrize("workers", [2, 3])
def test_the_spam_backtest_equals_the_oracle(workers: int, spam_small: tuple[Any, str]) -> None:
    data, oracle = spam_small
    assert _spam_digest(_ray(workers, 5_000), data) == oracle


def test_more_workers_than_the_cluster_can_place_fail_the_start_saying_so() -> None:
    executor = RayExecutor(workers=5, epoch_size=1_000, start_timeout=2.0)
    with pytest.raises(ExecutionError, match=r"cannot place 5 workers of 1 CPU each within 2 s"):
        executor.run(plan(fragile_pipeline()), slow_log(100), collect())


def test_an_actor_error_fails_the_run_naming_worker_node_and_seq() -> None:
    executor = _ray(2, 1_000)
    with pytest.raises(ExecutionError) as err:
        executor.run(plan(fragile_pipeline(fail_at=12_345)), slow_log(20_000), collect())
    assert err.value.seq == 12_345
    message = str(err.value)
    assert "ValueError: bad event" in message and "seq 12345" in message
    assert re.search(r"worker [01] \(node [\w.:]+, pid \d+\)", message), message
    _gone(executor.worker_pids)


@pytest.mark.parametrize("victim", [0, 1])
def test_a_killed_actor_fails_the_run_within_seconds(victim: int) -> None:
    executor = _ray(2, 500)
    killed = signal_when_up(lambda: executor.worker_pids, victim, signal.SIGKILL)
    with pytest.raises(
        ExecutionError,
        match=rf"^worker {victim} \(node [\w.:]+, pid \d+\) died while processing epoch \d+ "
        r"\(seq \d+\.\.\d+\)",
    ) as err:
        executor.run(plan(fragile_pipeline(sleep=0.0001)), slow_log(), collect())
    assert killed and time.monotonic() - killed[0] < 10.0
    assert err.value.seq is not None
    _gone(executor.worker_pids)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="stops an actor with SIGSTOP by its pid")
def test_a_stopped_actor_fails_the_run_within_the_stall_timeout() -> None:
    executor = _ray(2, 500, stall_timeout=2.0)
    stopped = signal_when_up(lambda: executor.worker_pids, 1, signal.SIGSTOP)
    with pytest.raises(StallError) as err:
        executor.run(plan(fragile_pipeline(sleep=0.0001)), slow_log(), collect())
    assert 1.0 <= time.monotonic() - stopped[0] < 2.0 + 5.0
    assert err.value.process == "worker 1" and err.value.pid == executor.placed[1].pid
    assert "does not answer" in str(err.value) and err.value.epoch is not None
    _gone(executor.worker_pids)


def test_resumed_from_any_checkpoint_gives_the_same_bytes() -> None:
    saved = check_resumes(lambda: _ray(2, 1_000), spam_with_timers, small_social(), every(3))
    assert [s.position.epoch for s in saved] == [3, 6]
    assert all(len(s.states) == 2 and s.executor == "ray" for s in saved)
    assert len(set(saved[-1].states)) == 2


class _KillingSink(EpochSink):
    """Takes epochs like :class:`EpochSink` and SIGKILLs one actor once epoch ``at`` is in."""

    def __init__(self, executor: RayExecutor, at: int) -> None:
        super().__init__()
        self.executor = executor
        self.at = at

    def write(self, chunks: Sequence[OutputChunk], epoch: Epoch) -> None:
        super().write(chunks, epoch)
        if epoch.index == self.at:
            os.kill(self.executor.placed[1].pid, signal.SIGKILL)


def test_a_killed_run_resumed_from_its_checkpoint_equals_an_uninterrupted_run() -> None:
    source = small_social()
    plain = EpochSink()
    _ray(2, 1_000).run(plan(spam_with_timers()), source(), plain)
    expected = canonical_bytes(plain.chunks())

    store = MemoryStore(every(2))
    executor = _ray(2, 1_000)
    sink = _KillingSink(executor, at=4)
    with pytest.raises(ExecutionError, match="died"):
        executor.run(plan(spam_with_timers()), source(), sink, checkpoints=store)
    last: EngineSnapshot = store.saved[-1]
    assert last.position.epoch == 4
    resumed = EpochSink()
    _ray(2, 1_000).run(
        plan(spam_with_timers()), FromPosition(source(), last.position), resumed, resume=last
    )
    assert canonical_bytes(sink.chunks(before=4) + resumed.chunks()) == expected
