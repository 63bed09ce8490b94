"""The parallel executor against the serial oracle, and how it fails.

These tests start worker processes (no broker).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import EngineError, ExecutionError, StallError
from engine.executors.parallel import ParallelExecutor
from engine.executors.serial import SerialExecutor
from engine.output import canonical_bytes, collect
from engine.pipeline import Pipeline, Record
from engine.planner import plan
from engine.testing import assert_executors_agree
from tests.support.budget import examples
from tests.support.engine_logs import LogSpec, families, logs, pipelines
from tests.support.procs import running
from tests.support.slow_runs import fragile_pipeline, signal_when_up, slow_log


def _bytes(executor: Any, pipeline: Pipeline, log: LogSpec) -> dict[str, bytes]:
    sink = collect()
    executor.run(plan(pipeline), log.source(), sink)
    return canonical_bytes(sink.chunks)


@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pipeline=pipelines(),
    log=logs(),
    workers=st.sampled_from([1, 2, 3]),
    epoch_size=st.sampled_from([1, 4, 1000]),
)
def test_parallel_equals_serial_on_random_pipelines(
    pipeline: Pipeline, log: LogSpec, workers: int, epoch_size: int
) -> None:
    expected = _bytes(SerialExecutor(), pipeline, log)
    got = _bytes(ParallelExecutor(workers=workers, epoch_size=epoch_size), pipeline, log)
    assert got == expected


def _no_leftovers(executor: ParallelExecutor) -> None:
    for pid in executor.worker_pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        # A zombie (exited, not yet reaped) is gone for our purposes.
        status = Path(f"/proc/{pid}/status").read_text() if Path(f"/proc/{pid}").exists() else ""
        assert "zombie" in status, f"worker {pid} outlived the run"
    assert executor.run_dir is not None and not executor.run_dir.exists()


def test_worker_error_fails_the_run_with_the_seq() -> None:
    executor = ParallelExecutor(workers=2, epoch_size=1000)
    with pytest.raises(ExecutionError) as err:
        executor.run(plan(fragile_pipeline(fail_at=12_345)), slow_log(20_000), collect())
    assert err.value.seq == 12_345
    assert "ValueError: bad event" in str(err.value)
    assert "seq 12345" in str(err.value)
    _no_leftovers(executor)


@pytest.mark.parametrize("victim", [0, 1])
def test_sigkilled_worker_fails_fast_and_leaves_nothing_behind(victim: int) -> None:
    executor = ParallelExecutor(workers=2, epoch_size=500)
    killed = signal_when_up(lambda: executor.worker_pids, victim, signal.SIGKILL)
    with pytest.raises(
        ExecutionError,
        match=rf"worker {victim} \(pid \d+\) was killed by SIGKILL \(out of memory\? its peak "
        r"RSS was at least [\d,]+ MiB.*\) while processing epoch \d+ \(seq \d+\.\.\d+\)",
    ):
        executor.run(plan(fragile_pipeline(sleep=0.0001)), slow_log(), collect())
    assert killed and time.monotonic() - killed[0] < 5.0
    _no_leftovers(executor)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
@pytest.mark.parametrize("victim", [0, 1])
def test_a_stopped_worker_fails_the_run_within_the_stall_timeout(victim: int) -> None:
    """SIGSTOP on one worker: the others wait for it at a phase barrier and the coordinator
    for all of them; the watchdog names the stopped one, not the one it was waiting for."""
    executor = ParallelExecutor(workers=2, epoch_size=500, stall_timeout=2.0)
    stopped = signal_when_up(lambda: executor.worker_pids, victim, signal.SIGSTOP)
    with pytest.raises(StallError) as err:
        executor.run(plan(fragile_pipeline(sleep=0.0001)), slow_log(), collect())
    took = time.monotonic() - stopped[0]
    # The silence may have begun just before the stop (a phase in progress).
    assert 1.0 <= took < 2.0 + 3.0, took
    pid = executor.worker_pids[victim]
    assert err.value.process == f"worker {victim}" and err.value.pid == pid
    assert err.value.epoch is not None and err.value.seq_start is not None
    assert re.search(
        rf"^worker {victim} \(pid {pid}\) made no progress for 2 s in epoch {err.value.epoch} "
        rf"\(seq {err.value.seq_start}\.\.{err.value.seq_end - 1}\), .*it is stopped \(SIGSTOP\?\)",
        str(err.value),
    ), str(err.value)
    _no_leftovers(executor)


def _slow_phases(phases: int, seconds: float) -> Pipeline:
    """``phases`` derived columns, each from the one before (a phase each), whose vectorised
    form sleeps ``seconds`` once per batch: a phase of a parallel worker takes that long
    however loaded the machine (a sleep, not work), and the serial oracle (per event, no
    sleep) stays quick."""
    p = Pipeline("slow-phases")
    prev: list[Any] = []
    for i in range(phases):

        def batch(c: Any, i: int = i) -> np.ndarray:
            time.sleep(seconds)
            return np.full(len(c["k1"]), i, dtype=np.int64)

        prev = [
            p.derive(
                f"d{i}",
                on="a",
                fn=lambda _e, _v, i=i: i,
                batch_fn=batch,
                dtype="int64",
                inputs=prev,
            )
        ]
    out = p.output("o", key="k1")
    p.emit("show", on="a", output=out, inputs=prev, fn=lambda e, _v: [Record(e.k1, {"n": e.d5})])
    return p


def test_workers_that_keep_reporting_are_no_stall() -> None:
    """The watchdog measures silence, not work: a run whose epochs each take longer than the
    stall timeout finishes, since every phase is a sign of life."""
    pipeline = _slow_phases(6, 0.5)
    assert plan(pipeline).phases >= 6
    serial, parallel = collect(), collect()
    SerialExecutor().run(plan(pipeline), slow_log(4_000), serial)
    # Phases of 0.5 s (a quarter of the timeout), epochs of 3 s (one and a half).
    executor = ParallelExecutor(workers=2, epoch_size=2_000, stall_timeout=2.0)
    started = time.perf_counter()
    stats = executor.run(plan(pipeline), slow_log(4_000), parallel)
    assert canonical_bytes(parallel.chunks) == canonical_bytes(serial.chunks)
    assert stats.epochs == 2 and time.perf_counter() - started > 2 * 2.0


def test_run_directory_is_removed_after_success() -> None:
    executor = ParallelExecutor(workers=2, epoch_size=1000)
    sink = collect()
    executor.run(plan(fragile_pipeline()), slow_log(5_000), sink)
    assert sum(len(c) for c in sink.chunks) == 5_000
    assert len(executor.peak_rss) == 3
    _no_leftovers(executor)


_COORDINATOR = """
import sys, time
from engine.executors.parallel import ParallelExecutor
from engine.examples.social.data import generate_social
from engine.examples.social.source import social_source
from engine.examples.social.spam import build_spam_pipeline
from engine.planner import plan
from engine.testing import assert_executors_agree

class Sink:
    def __init__(self, executor):
        self.executor = executor
    def write(self, chunks, epoch):
        print(" ".join(map(str, self.executor.worker_pids)), flush=True)
        time.sleep(600)

executor = ParallelExecutor(workers=2, epoch_size=500)
data = generate_social(users=200, events=3000, days=2, partitions=2)
executor.run(plan(build_spam_pipeline()), social_source(data), Sink(executor))
"""


def test_workers_die_with_a_sigkilled_coordinator() -> None:
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", _COORDINATOR], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    os.kill(proc.pid, signal.SIGKILL)  # the coordinator alone, not its process group
    proc.wait(10)
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in pids if running(p)]
        time.sleep(0.05)
    assert alive == [], f"workers {alive} outlived their coordinator"


_INTERRUPTED = """
from tests.support.slow_runs import fragile_pipeline, slow_log
from engine.executors.parallel import ParallelExecutor
from engine.planner import plan
from engine.testing import assert_executors_agree

class Sink:
    def __init__(self, executor):
        self.executor = executor
        self.told = False
    def write(self, chunks, epoch):
        if not self.told:
            self.told = True
            print(" ".join(map(str, self.executor.worker_pids)), self.executor.run_dir, flush=True)

executor = ParallelExecutor(workers=2, epoch_size=500)
executor.run(plan(fragile_pipeline(sleep=0.001)), slow_log(200_000), Sink(executor))
"""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_ctrl_c_stops_the_run_and_every_worker() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    proc = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTED], stdout=subprocess.PIPE, text=True, cwd=root
    )
    assert proc.stdout is not None
    *pids, run_dir = proc.stdout.readline().split()
    assert len(pids) == 2 and Path(run_dir).is_dir()
    interrupted = time.monotonic()
    proc.send_signal(signal.SIGINT)  # as Ctrl-C does to the foreground process
    proc.wait(15)
    assert time.monotonic() - interrupted < 10
    assert proc.returncode != 0  # KeyboardInterrupt, not a finished run
    deadline = time.monotonic() + 10
    alive = [int(p) for p in pids]
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if running(p)]
        time.sleep(0.05)
    assert alive == [], f"workers {alive} outlived an interrupted run"
    assert not Path(run_dir).exists()


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="needs POSIX priorities")
def test_the_coordinator_runs_behind_its_workers_and_the_caller_keeps_its_priority() -> None:
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: list[tuple[str, int]] = []

    class Sink:
        def write(self, chunks: Any, epoch: Any) -> None:
            tid = threading.get_native_id()
            seen.append((threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, tid)))

    ParallelExecutor(workers=2, epoch_size=1000, coordinator_nice=5).run(
        plan(fragile_pipeline()), slow_log(3_000), Sink()
    )
    assert seen and {name for name, _ in seen} == {"restream-coordinator"}
    assert {nice for _, nice in seen} == {min(caller + 5, 19)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller
    plain: list[str] = []

    class Here:
        def write(self, chunks: Any, epoch: Any) -> None:
            plain.append(threading.current_thread().name)

    ParallelExecutor(workers=2, epoch_size=1000, coordinator_nice=0).run(
        plan(fragile_pipeline()), slow_log(3_000), Here()
    )
    assert set(plain) == {threading.current_thread().name}


@pytest.mark.parametrize("nice", [-1, 20])
def test_coordinator_nice_is_validated(nice: int) -> None:
    with pytest.raises(EngineError, match=r"coordinator_nice must be in 0\.\.19, got"):
        ParallelExecutor(workers=2, coordinator_nice=nice)


def test_workers_started_ahead_run_the_next_run_of_their_plan() -> None:
    pipeline = plan(fragile_pipeline())
    expected = collect()
    SerialExecutor(epoch_size=1000).run(pipeline, slow_log(20_000), expected)
    with ParallelExecutor(workers=2, epoch_size=1000) as executor:
        executor.start(pipeline)
        started = list(executor.worker_pids)
        with pytest.raises(EngineError, match="already started"):
            executor.start(pipeline)
        got = collect()
        executor.run(pipeline, slow_log(20_000), got)
    assert executor.worker_pids == started
    assert canonical_bytes(got.chunks) == canonical_bytes(expected.chunks)
    _no_leftovers(executor)


def test_workers_started_for_another_plan_are_replaced() -> None:
    executor = ParallelExecutor(workers=2, epoch_size=1000)
    executor.start(plan(fragile_pipeline()))
    stale = list(executor.worker_pids)
    executor.run(plan(fragile_pipeline()), slow_log(5_000), collect())
    assert not set(stale) & set(executor.worker_pids)
    for pid in stale:
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "zombie" in status.read_text()
    _no_leftovers(executor)


def test_close_stops_workers_that_no_run_used() -> None:
    executor = ParallelExecutor(workers=3)
    executor.start(plan(fragile_pipeline()))
    assert executor.run_dir is not None and executor.run_dir.exists()
    executor.close()
    executor.close()  # idempotent
    _no_leftovers(executor)


@settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family=families(), log=logs(), workers=st.sampled_from([2, 3]))
def test_parallel_followers_equal_serial(
    family: tuple[Pipeline, int], log: LogSpec, workers: int
) -> None:
    pipeline, _ = family
    expected = _bytes(SerialExecutor(), pipeline, log)
    assert _bytes(ParallelExecutor(workers=workers, epoch_size=4), pipeline, log) == expected


def test_a_python_read_of_an_unseen_key_leaves_the_shared_key_ids_alone() -> None:
    """Operator code runs on a worker's home rows only. Had its ``view.get`` of a key that no
    column brought interned that key, that worker's codec alone would have moved on, and the
    string keys of later epochs would have got other ids there: rows owned by no worker (a
    missing record), or by two."""
    p = Pipeline("probe")
    seen = p.count("seen", on="x", key="user")  # read by operator code: replicated
    per_key = p.count("per_key", on="x", key="key")  # string keys, partitioned
    n = p.lookup("n", on="x", table=per_key, key="key")
    out = p.output("o", key="i")
    p.emit(
        "show",
        on="x",
        output=out,
        reads=[seen],
        inputs=[n],
        fn=lambda e, v: [Record(e.i, {"probe": v.get(seen, f"absent{e.i}"), "n": e.n})],
    )
    rows = 40
    events = {
        "x": {
            "ts": list(range(rows)),
            "i": list(range(rows)),
            "user": [f"u{i % 3}" for i in range(rows)],
            "key": [f"k{i % (rows // 2)}" for i in range(rows)],
        }
    }
    got = assert_executors_agree(
        p, events, executors=("serial", "parallel"), workers=2, epoch_size=4
    )
    assert len(got["o"]) == rows
