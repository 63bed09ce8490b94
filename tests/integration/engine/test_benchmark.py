"""``restream bench engine`` end to end on a small data set: rounds, medians, agreement,
and what a SIGTERM leaves behind (nothing)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.benchmark import run_engine_bench
from engine.procmem import child_pids
from tests.support.procs import cmdline, running
from tests.support.ray_cluster import RayCluster


def test_runs_are_interleaved_round_by_round_and_agree() -> None:
    said: list[str] = []
    result = run_engine_bench(
        events=3000,
        users=200,
        days=2,
        epoch_size=500,
        repeat=2,
        only=["wholelog", "batch", "parallel-w2"],
        progress=said.append,
    )
    assert [s.split(":")[0] for s in said] == [
        "wholelog run 1/2",
        "batch run 1/2",
        "parallel-w2 run 1/2",
        "wholelog run 2/2",
        "batch run 2/2",
        "parallel-w2 run 2/2",
    ]
    assert [m.name for m in result.measurements] == ["wholelog", "batch", "parallel-w2"]
    assert all(len(m.seconds) == 2 and m.seconds == sorted(m.seconds) for m in result.measurements)
    assert result.agree()  # every implementation wrote the reference's records
    assert len({m.digest for m in result.measurements}) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_bench_leaves_no_measuring_process_behind(tmp_path: Path, sig: int) -> None:
    # One handwritten run of 2M events takes ~20 s here: a measuring process that survived
    # its parent, or a parent that waited for it, would still be running when the test looks.
    cmd = [sys.executable, "-m", "connector.cli", "bench", "engine", "--events", "2000000"]
    cmd += ["--users", "5000", "--days", "3", "--only", "handwritten", "--repeat", "3"]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    # Output to a file, not a pipe: a surviving child would hold a pipe open, and reading it
    # to the end would wait for that child.
    err_path = tmp_path / "stderr"
    with open(err_path, "w") as err_file:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err_file)
    try:
        deadline = time.monotonic() + 120
        measuring: list[int] = []
        while not measuring:  # the data set is written, a run is going on in a child
            assert proc.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, "no measuring process started"
            time.sleep(0.2)
            measuring = [pid for pid in child_pids(proc.pid) if "spawn_main" in cmdline(pid)]
        assert list(tmp_path.glob("restream-bench-*"))
        time.sleep(1)  # well into the run
        proc.send_signal(sig)
        proc.wait(timeout=10)  # not waiting for the run to end (~18 s more)
    finally:
        proc.kill()
    deadline = time.monotonic() + 3
    while any(running(pid) for pid in measuring) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(running(pid) for pid in measuring)
    if sig == signal.SIGTERM:  # handled as Ctrl-C: the data set is removed too
        assert proc.returncode == 1 and "interrupted" in err_path.read_text()
        assert not list(tmp_path.glob("restream-bench-*"))
    else:
        assert proc.returncode == -signal.SIGKILL


def test_without_an_epoch_size_each_executor_runs_as_restream_run_would() -> None:
    # 3,000 events: restream run cuts them into at least 8 epochs of >= 20,000 events, i.e.
    # one epoch of 20,000; its executors' own default without the length would be 250,000.
    result = run_engine_bench(events=3000, users=200, days=2, repeat=1, only=["batch", "wholelog"])
    sizes = {m.name: m.epoch_size for m in result.measurements}
    assert sizes == {"batch": 20_000, "wholelog": None}


def test_a_ray_run_agrees_and_leaves_the_cluster_it_joined_running(
    ray_cluster: RayCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ray-wN`` on the cluster of RAY_ADDRESS: each run's process connects itself (outside
    the timed run) and disconnects at its end, and the cluster stays up for the next."""
    import ray

    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    # Two actors of one CPU fit the cluster's two one-CPU nodes.
    result = run_engine_bench(
        events=3000, users=200, days=2, epoch_size=500, repeat=2, only=["batch", "ray-w2"]
    )
    assert [m.name for m in result.measurements] == ["batch", "ray-w2"]
    assert result.agree()
    assert sum(1 for n in ray.nodes() if n["Alive"]) == ray_cluster.nodes
    # No actor or placement group left holding a CPU (their release is asynchronous).
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU") != 2.0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU") == 2.0
