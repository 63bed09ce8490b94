"""A worker process of the parallel executor, and the messages it exchanges with the coordinator.

The coordinator sends, in order: at most one :class:`RestoreTask` (start from a snapshot,
before any epoch), :class:`EpochTask` s (an epoch to process), :class:`SnapshotTask` s
(snapshot the state as of the end of the epoch before), and ``None`` (stop). The worker handles
them strictly in order and answers each task: :class:`Ready`, :class:`Done`, :class:`Saved`,
and on stop ``("peak", rss_bytes)``. While it processes an epoch it also sends a
:class:`Progress` after each phase: the coordinator's watchdog measures a worker's silence
from its last message. Any failure is answered with :class:`Failed`, after which the worker
exits.
"""

from __future__ import annotations

import contextlib
import resource
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NoReturn

from engine.errors import CheckpointError, EngineError, ExecutionError
from engine.executors.arena import ReceivedObjects, RunDir, load, store
from engine.executors.base import RunStats
from engine.executors.columns import Part
from engine.executors.runtime import EpochRuntime
from engine.executors.sharding import Shard
from engine.log import Epoch
from engine.parentdeath import die_with_parent
from engine.planner import Plan

__all__ = [
    "Done",
    "EpochTask",
    "Failed",
    "Progress",
    "Ready",
    "RestoreTask",
    "Saved",
    "SnapshotTask",
    "raise_failure",
    "worker_main",
]


@dataclass(frozen=True, slots=True)
class EpochTask:
    """Process the epoch stored at ``path``."""

    epoch: int
    path: str


@dataclass(frozen=True, slots=True)
class RestoreTask:
    """Replace the (empty) state with this worker's snapshot blob stored at ``path``."""

    path: str


@dataclass(frozen=True, slots=True)
class SnapshotTask:
    """Write a snapshot of the state after epoch ``epoch`` to ``path``."""

    epoch: int
    path: str


@dataclass(frozen=True, slots=True)
class Ready:
    """The worker restored its snapshot."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Done:
    """Epoch ``epoch`` is processed; its output share is stored at ``path``."""

    epoch: int
    path: str
    seconds: dict[str, float]


@dataclass(frozen=True, slots=True)
class Progress:
    """Phase ``phase`` of epoch ``epoch`` is done (not an answer: a sign of life)."""

    epoch: int
    phase: int


@dataclass(frozen=True, slots=True)
class Saved:
    """The snapshot after epoch ``epoch`` (``nbytes`` long) is at ``path``."""

    epoch: int
    path: str
    nbytes: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Failed:
    """The worker failed; ``checkpoint`` says it failed to snapshot or restore its state."""

    worker: int
    message: str
    seq: int | None
    operator: str | None
    checkpoint: bool = False


def raise_failure(failed: Failed) -> NoReturn:
    """Raise what a worker reported: :class:`CheckpointError` for a snapshot or restore,
    else :class:`ExecutionError` with its ``seq`` and operator."""
    if failed.checkpoint:
        raise CheckpointError(failed.message)
    raise ExecutionError(failed.message, seq=failed.seq, operator=failed.operator)


class _ShmExchange:
    """Swaps derived-column parts between workers through the run directory."""

    def __init__(self, run_dir: RunDir, shard: Shard, barrier: Any) -> None:
        self.run_dir = run_dir
        self.shard = shard
        self.barrier = barrier
        self.round = 0
        self.previous: Path | None = None

    def __call__(self, parts: list[Part]) -> list[Part]:
        me = self.run_dir.file(f"x{self.round}-w{self.shard.index}")
        store(me, parts)
        self.barrier.wait()
        # Everyone has read the previous round's files before reaching this barrier.
        if self.previous is not None:
            with contextlib.suppress(FileNotFoundError):
                self.previous.unlink()
        self.previous = me
        out: list[Part] = []
        for w in range(self.shard.count):
            out.extend(load(self.run_dir.file(f"x{self.round}-w{w}")))
        self.round += 1
        return out


def _reporter(conn: Connection, epoch: int) -> Callable[[int], None]:
    """``on_phase`` for the runtime: tell the coordinator each phase of ``epoch`` is done."""

    def report(phase: int) -> None:
        conn.send(Progress(epoch, phase))

    return report


def worker_main(
    index: int,
    count: int,
    plan: Plan,
    run_dir: Path,
    conn: Connection,
    barrier: Any,
) -> None:
    """Serve the coordinator's tasks until told to stop (the target of a worker process)."""
    die_with_parent()
    # The coordinator decides when to stop (and kills a worker it gives up on): Ctrl-C and a
    # SIGTERM sent to the whole process group are its to handle, never a fork's copy of its
    # handlers (a service's SIGTERM handler would run here, log as the service and keep the
    # worker alive).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    rd = RunDir(run_dir)
    shard = Shard(index, count)
    exchange = _ShmExchange(rd, shard, barrier)
    received = ReceivedObjects(rd)
    # A single worker owns everything: nothing to swap.
    runtime = EpochRuntime(plan, shard=shard, exchange=exchange if count > 1 else None)
    current = None
    failed = False
    try:
        while True:
            msg = conn.recv()
            if msg is None:
                break
            if isinstance(msg, RestoreTask):
                t0 = time.perf_counter()
                runtime.restore(Path(msg.path).read_bytes())
                conn.send(Ready(time.perf_counter() - t0))
                continue
            if isinstance(msg, SnapshotTask):
                t0 = time.perf_counter()
                with open(msg.path, "wb") as f:
                    runtime.snapshot_into(f)
                    size = f.tell()
                conn.send(Saved(msg.epoch, msg.path, size, time.perf_counter() - t0))
                continue
            assert isinstance(msg, EpochTask)
            t0 = time.perf_counter()
            epoch: Epoch = load(Path(msg.path), received)
            current = epoch
            stats = RunStats("parallel")
            stats.add_time("move", time.perf_counter() - t0)
            chunks = runtime.process(epoch, stats, on_phase=_reporter(conn, msg.epoch))
            t0 = time.perf_counter()
            out = rd.file(f"out{msg.epoch}-w{index}")
            store(out, chunks)
            stats.add_time("move", time.perf_counter() - t0)
            conn.send(Done(msg.epoch, str(out), stats.seconds))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        conn.send(("peak", peak))
    except threading.BrokenBarrierError:
        failed = True  # another worker failed; the coordinator reports that one
    except ExecutionError as exc:
        failed = True
        conn.send(Failed(index, str(exc), exc.seq, exc.operator))
    except CheckpointError as exc:
        failed = True
        conn.send(Failed(index, f"worker {index}: {exc}", None, None, checkpoint=True))
    except EngineError as exc:  # the shared-memory directory is full, say
        failed = True
        seq = None if current is None else current.seq_start
        conn.send(Failed(index, f"worker {index}: {exc}", seq, None))
    except BaseException as exc:
        failed = True
        seq = None if current is None else current.seq_start
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        conn.send(Failed(index, f"worker {index}: {detail}", seq, None))
    finally:
        conn.close()
    if failed:
        raise SystemExit(1)
