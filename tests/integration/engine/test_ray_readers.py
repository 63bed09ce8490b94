"""The ray executor's reader actors (engine.executors.ray_readers) on the session's two-node
Ray cluster: reading spread over readers equals the serial oracle, resumes, and fails fast
naming the reader."""

from __future__ import annotations

import re
import signal
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import ExecutionError, StallError
from engine.executors.serial import SerialExecutor
from engine.log import InMemorySource, Source
from engine.output import canonical_bytes, collect
from engine.pipeline import Pipeline
from engine.planner import plan
from engine.positions import LogPosition
from tests.support.budget import examples
from tests.support.checkpoints import check_resumes, every, small_social, spam_with_timers
from tests.support.engine_logs import LogSpec, logs, pipelines
from tests.support.ray_cluster import ray_executor as _ray
from tests.support.slow_runs import BreakingSource, fragile_pipeline, signal_when_up, slow_log

pytestmark = pytest.mark.usefixtures("ray_cluster")


@settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pipeline=pipelines(),
    log=logs(),
    workers=st.sampled_from([2, 3]),
    readers=st.integers(1, 3),
    epoch_size=st.sampled_from([1, 5, 1000]),
)
def test_readers_equal_serial_on_random_pipelines_and_logs(
    pipeline: Pipeline, log: LogSpec, workers: int, readers: int, epoch_size: int
) -> None:
    want = collect()
    SerialExecutor().run(plan(pipeline), log.source(), want)
    executor = _ray(workers, epoch_size, readers=readers)
    got = collect()
    source = log.source()
    executor.run(plan(pipeline), source, got)
    assert canonical_bytes(got.chunks) == canonical_bytes(want.chunks)
    assert len(executor.reader_placed) == min(readers, len(source.partitions()))


def test_readers_default_to_one_per_node_of_the_workers_when_they_span_several() -> None:
    executor = _ray(2, 1_000)
    sink = collect()
    executor.run(plan(fragile_pipeline()), slow_log(5_000), sink)
    assert sum(len(c) for c in sink.chunks) == 5_000
    # SPREAD placement is best effort: the two workers usually land on the two nodes, but
    # may share one, and then the driver reads.
    nodes = {p.node for p in executor.placed}
    if len(nodes) > 1:
        assert {p.node for p in executor.reader_placed} == nodes
        assert len(executor.reader_placed) == len(nodes)
    else:
        assert executor.reader_placed == []


def test_a_run_with_readers_times_the_driver_s_routing_and_the_readers() -> None:
    executor = _ray(2, 1_000, readers=2)
    sink = collect()
    stats = executor.run(plan(fragile_pipeline()), slow_log(5_000), sink)
    assert sum(len(c) for c in sink.chunks) == 5_000
    assert len(executor.reader_placed) == 2
    # The driver's CPU for the key merge and routing is measured, and the readers' reading.
    assert stats.seconds["route"] > 0 and stats.seconds["reader read"] > 0
    assert stats.seconds["reader piece"] > 0 and stats.seconds["assemble"] > 0


def _resumed(source: Source, position: LogPosition) -> Source:
    assert isinstance(source, InMemorySource)
    return source.resumed(position)


def test_resumed_with_readers_from_any_checkpoint_gives_the_same_bytes() -> None:
    saved = check_resumes(
        lambda: _ray(2, 1_000, readers=2),
        spam_with_timers,
        small_social(),
        every(2),
        restart=_resumed,
    )
    assert [s.position.epoch for s in saved] == [2, 4, 6]


def test_a_reader_that_raises_fails_the_run_naming_it_its_node_and_partitions() -> None:
    executor = _ray(2, 1_000, readers=2)
    with pytest.raises(ExecutionError) as err:
        executor.run(plan(fragile_pipeline()), BreakingSource(slow_log(50_000), 3), collect())
    message = str(err.value)
    assert re.search(
        r"^reader 1 \(node [\w.:]+, pid \d+; partitions t/\d\) failed reading: "
        r"ValueError: the disk is on fire",
        message,
    ), message


@pytest.mark.parametrize("victim", [0, 1])
def test_a_killed_reader_fails_the_run_within_seconds_naming_it(victim: int) -> None:
    executor = _ray(2, 500, readers=2)
    killed = signal_when_up(lambda: [p.pid for p in executor.reader_placed], victim, signal.SIGKILL)
    with pytest.raises(
        ExecutionError,
        match=rf"^reader {victim} \(node [\w.:]+, pid \d+; partitions t/\d\) died",
    ):
        executor.run(plan(fragile_pipeline(sleep=0.0001)), slow_log(), collect())
    assert killed and time.monotonic() - killed[0] < 10.0


def test_a_stopped_reader_fails_the_run_within_the_stall_timeout() -> None:
    executor = _ray(2, 500, readers=2, stall_timeout=2.0)
    stopped = signal_when_up(lambda: [p.pid for p in executor.reader_placed], 1, signal.SIGSTOP)
    with pytest.raises(StallError) as err:
        executor.run(plan(fragile_pipeline(sleep=0.0001)), slow_log(), collect())
    assert stopped and time.monotonic() - stopped[0] < 2.0 + 6.0
    assert err.value.process == "reader 1" and err.value.pid == executor.reader_placed[1].pid
    assert re.search(
        r"^reader 1 \(node [\w.:]+, pid \d+; partitions t/\d\) did not answer for 2 s",
        str(err.value),
    ), str(err.value)
