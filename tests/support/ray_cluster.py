"""The ``ray_cluster`` fixture: a local Ray cluster of two nodes, one per session.

Two ``ray start --block`` processes on this machine (``--head``, then ``--address`` of the
head): two raylets of one CPU each, so that a placement group spread over nodes really puts
actors on different nodes. Each runs in a session of its own, with its own temporary
directory, every port the cluster would otherwise take at a fixed number chosen free (other
helpers' clusters may run on the same machine), no dashboard, and a small object store.
The test process connects to it as a Ray driver once; Ray executors in the tests find it
connected and reuse it.

At the end the driver disconnects, both ``ray start`` processes get SIGTERM (they stop their
node's processes), anything left in their sessions gets SIGKILL, and the fixture asserts that
no process of those sessions and no new ``/dev/shm`` entry is left. ``ray stop`` is not used:
it stops every Ray process of the user on the machine, not only this cluster's.

Registered for the whole suite by ``pytest_plugins`` in ``tests/conftest.py``; only tests that
ask for it start a cluster. :func:`ray_executor` makes executors whose actors fit it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.executors.ray_executor import RayExecutor

__all__ = ["RayCluster", "ray_cluster", "ray_executor"]

_RAY = Path(sys.executable).with_name("ray")
_SHM = Path("/dev/shm")
#: Object store per node: the tests' epochs are small.
_STORE_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class RayCluster:
    """A running local cluster: the head's address and how long the cluster took to start."""

    address: str
    nodes: int
    start_seconds: float


def ray_executor(workers: int, epoch_size: int, **kw: Any) -> RayExecutor:
    """A Ray executor for this cluster: actors of half a CPU, so that three fit on its two
    one-CPU nodes; ``kw`` as :class:`RayExecutor` takes them."""
    return RayExecutor(workers=workers, epoch_size=epoch_size, worker_cpus=0.5, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _session_pids(sessions: set[int]) -> list[int]:
    """Processes whose session is one of ``sessions`` (read from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command (which may hold spaces), from its closing parenthesis.
        fields = stat[stat.rindex(")") + 2 :].split()
        state, sid = fields[0], int(fields[3])
        if sid in sessions and state != "Z":
            pids.append(int(entry.name))
    return pids


def _shm_entries() -> set[str]:
    return set(os.listdir(_SHM)) if _SHM.is_dir() else set()


def _start_node(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    # No token authentication: the driver here would need the token too, and a token file
    # that a local ``ray.init()`` left in ~/.ray would otherwise switch it on.
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(_RAY), "start", "--block", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def _wait_for_port(port: int, head: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start --head exited: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the Ray head did not listen on {port} in time: {log.read_text()[-2000:]}")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM the ``ray start`` processes, then SIGKILL whatever is left of their sessions."""
    sessions = {p.pid for p in procs}
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 10
    while (left := _session_pids(sessions)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in _session_pids(sessions):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (left := _session_pids(sessions)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes of the Ray cluster outlived it: {left}"


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A local two-node Ray cluster, and this process connected to it as its driver."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install .[ray]")
    if ray.is_initialized():
        raise RuntimeError("Ray is already initialised in the test process")
    shm_before = _shm_entries()
    # Short: Ray's unix sockets live under it (108 bytes at most for a socket path).
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    port = _free_port()
    common = [
        "--num-cpus=1",
        "--node-ip-address=127.0.0.1",
        f"--object-store-memory={_STORE_BYTES}",
        "--disable-usage-stats",
    ]
    started = time.monotonic()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            _start_node(
                [
                    "--head",
                    f"--port={port}",
                    f"--temp-dir={temp}",
                    "--include-dashboard=false",
                    f"--dashboard-port={_free_port()}",
                    f"--ray-client-server-port={_free_port()}",
                    f"--dashboard-agent-listen-port={_free_port()}",
                    *common,
                ],
                temp / "head.log",
            )
        )
        _wait_for_port(port, procs[0], temp / "head.log", time.monotonic() + 60)
        address = f"127.0.0.1:{port}"
        procs.append(
            _start_node(
                [
                    f"--address={address}",
                    f"--dashboard-agent-listen-port={_free_port()}",
                    *common,
                ],
                temp / "node.log",
            )
        )
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        deadline = time.monotonic() + 60
        while sum(1 for n in ray.nodes() if n["Alive"]) < 2:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(
                    "the second Ray node did not join: " + (temp / "node.log").read_text()[-2000:]
                )
            time.sleep(0.2)
        yield RayCluster(address, 2, time.monotonic() - started)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        _stop(procs)
        shutil.rmtree(temp, ignore_errors=True)
        # Other runs' directories (parallel executors') and semaphores (multiprocessing's)
        # may come and go meanwhile.
        new = {e for e in _shm_entries() - shm_before if not e.startswith(("restream-", "sem."))}
        assert not new, f"the Ray cluster left /dev/shm entries: {sorted(new)}"
