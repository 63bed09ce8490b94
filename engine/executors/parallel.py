"""The parallel executor: a coordinator and W worker processes over a partitioned store.

How a run goes (DESIGN.md §3):

* The **coordinator** merges the log into epochs and writes each epoch once to shared memory
  (:mod:`engine.executors.arena`); every worker maps it without copying. It keeps at most
  ``max_in_flight`` epochs ahead of the slowest worker (back-pressure, bounded memory), so
  reading and sequencing epoch e+1 and sinking epoch e-1 overlap with computing epoch e.
* Each **worker** runs :class:`~engine.executors.runtime.EpochRuntime` with its
  :class:`~engine.executors.sharding.Shard`: it owns the keys that hash to it in every table,
  applies their writes in ``seq`` order and answers reads of them (lookups are routed to the
  owner of the looked-up key, so pair keys, reversed pairs and tables keyed unlike the event
  all work); stateless per-event work (derived columns, emits) is split by row ranges. After
  each phase the workers swap their shares of the new derived columns through shared memory
  and wait at a barrier, so phase p+1 sees all of phase p.
* Tables that operator code reads with ``view.get`` (any key, unknown in advance) are
  replicated: every worker applies all their writes. Lookups keep tables partitioned.
* Output: each worker emits for its rows; the coordinator merges the shares by ``seq`` (all
  records of one event come from one worker, in order) and hands the sink serial order.

Failure: a worker that raises reports its error and the event ``seq``; a worker that dies is
noticed through its process sentinel. Either way the coordinator breaks the barrier, stops the
other workers and raises :class:`~engine.errors.ExecutionError` within seconds. The run
directory is removed whatever happens.

The interface a distributed engine would host (workers as its actors) is exactly this
module's protocol: ``EpochRuntime(plan, shard=Shard(i, W), exchange=...)`` per actor,
``runtime.process(epoch)`` per epoch, and an ``exchange(parts) -> all parts`` barrier between
phases; the planner and operators are untouched.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import resource
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import EngineError, ExecutionError, LogError
from engine.executors.arena import RunDir, load, store
from engine.executors.base import RunStats
from engine.executors.runtime import EpochRuntime, Part
from engine.executors.sharding import Shard
from engine.log import Epoch, Source, merge_log
from engine.output import OutputChunk, Sink
from engine.planner import Plan

__all__ = ["ParallelExecutor"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Done:
    epoch: int
    path: str
    seconds: dict[str, float]


@dataclass(frozen=True, slots=True)
class _Failed:
    worker: int
    message: str
    seq: int | None
    operator: str | None


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


def _worker_main(
    index: int, count: int, plan: Plan, run_dir: Path, conn: Connection, barrier: Any
) -> None:
    # The coordinator decides when to stop; Ctrl-C reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rd = RunDir(run_dir)
    shard = Shard(index, count)
    exchange = _ShmExchange(rd, shard, barrier)
    # A single worker owns everything: nothing to swap.
    runtime = EpochRuntime(plan, shard=shard, exchange=exchange if count > 1 else None)
    current = None
    failed = False
    try:
        while True:
            msg = conn.recv()
            if msg is None:
                break
            number, path = msg
            t0 = time.perf_counter()
            epoch: Epoch = load(Path(path))
            current = epoch
            stats = RunStats("parallel")
            stats.add_time("move", time.perf_counter() - t0)
            chunks = runtime.process(epoch, stats)
            t0 = time.perf_counter()
            out = rd.file(f"out{number}-w{index}")
            store(out, chunks)
            stats.add_time("move", time.perf_counter() - t0)
            conn.send(_Done(number, str(out), stats.seconds))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        conn.send(("peak", peak))
    except threading.BrokenBarrierError:
        failed = True  # another worker failed; the coordinator reports that one
    except ExecutionError as exc:
        failed = True
        conn.send(_Failed(index, str(exc), exc.seq, exc.operator))
    except BaseException as exc:
        failed = True
        seq = None if current is None else current.seq_start
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        conn.send(_Failed(index, f"worker {index}: {detail}", seq, None))
    finally:
        conn.close()
    if failed:
        raise SystemExit(1)


class ParallelExecutor:
    """MVPS across processes: see the module docstring."""

    name = "parallel"

    def __init__(
        self,
        *,
        workers: int | None = None,
        epoch_size: int = 100_000,
        max_in_flight: int = 2,
        shm_dir: Path | None = None,
    ) -> None:
        workers = (os.cpu_count() or 1) if workers is None else workers
        if workers < 1:
            raise EngineError(f"workers must be >= 1, got {workers}")
        if epoch_size < 1:
            raise LogError(f"epoch_size must be >= 1, got {epoch_size}")
        if max_in_flight < 1:
            raise EngineError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.workers = workers
        self.epoch_size = epoch_size
        self.max_in_flight = max_in_flight
        self.shm_dir = shm_dir
        #: Peak RSS of every process of the last run, bytes (coordinator first).
        self.peak_rss: list[int] = []
        #: Pids of the last run's workers (for tests that check nothing outlives a run).
        self.worker_pids: list[int] = []
        self.run_dir: Path | None = None

    def run(self, plan: Plan, source: Source, sink: Sink) -> RunStats:
        """Run ``plan`` over ``source`` into ``sink`` with ``self.workers`` processes."""
        stats = RunStats(self.name)
        started = time.perf_counter()
        # fork: workers inherit the plan, whose operators may be lambdas and closures.
        ctx = mp.get_context("fork")
        run_dir = RunDir.create(self.shm_dir)
        self.run_dir = run_dir.path
        barrier = ctx.Barrier(self.workers)
        conns: list[Connection] = []
        procs: list[Any] = []
        clean = False
        try:
            for w in range(self.workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(
                    target=_worker_main,
                    name=f"restream-worker-{w}",
                    args=(w, self.workers, plan, run_dir.path, child, barrier),
                    daemon=True,
                )
                proc.start()
                child.close()
                conns.append(parent)
                procs.append(proc)
            self.worker_pids = [p.pid for p in procs]
            self._drive(
                merge_log(source, epoch_size=self.epoch_size),
                run_dir,
                conns,
                procs,
                barrier,
                sink,
                stats,
            )
            for conn in conns:
                conn.send(None)
            peaks = [self._receive(conns, procs, barrier, w, None) for w in range(self.workers)]
            clean = True
            self.peak_rss = [
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                *[int(p[1]) for p in peaks],
            ]
        finally:
            self._shutdown(procs, conns, barrier, clean=clean)
            run_dir.remove()
        stats.wall_seconds = time.perf_counter() - started
        return stats

    def _drive(
        self,
        epochs: Iterator[Epoch],
        run_dir: RunDir,
        conns: list[Connection],
        procs: list[Any],
        barrier: Any,
        sink: Sink,
        stats: RunStats,
    ) -> None:
        in_flight: deque[tuple[Epoch, Path]] = deque()
        exhausted = False
        while True:
            while not exhausted and len(in_flight) < self.max_in_flight:
                t0 = time.perf_counter()
                epoch = next(epochs, None)
                stats.add_time("read", time.perf_counter() - t0)
                if epoch is None:
                    exhausted = True
                    break
                t0 = time.perf_counter()
                path = run_dir.file(f"epoch{epoch.index}")
                store(path, epoch)
                for w, conn in enumerate(conns):
                    try:
                        conn.send((epoch.index, str(path)))
                    except OSError:
                        procs[w].join(1.0)
                        raise ExecutionError(
                            _death_message(w, procs[w].exitcode or -9, epoch), seq=epoch.seq_start
                        ) from None
                stats.add_time("move", time.perf_counter() - t0)
                in_flight.append((epoch, path))
            if not in_flight:
                return
            epoch, path = in_flight.popleft()
            shares: list[list[OutputChunk]] = []
            for w in range(self.workers):
                done = self._receive(conns, procs, barrier, w, epoch)
                assert isinstance(done, _Done) and done.epoch == epoch.index
                for what, secs in done.seconds.items():
                    stats.add_time(what, secs)
                t0 = time.perf_counter()
                shares.append(load(Path(done.path)))
                stats.add_time("move", time.perf_counter() - t0)
            path.unlink()
            t0 = time.perf_counter()
            chunks = _merge_shares(shares)
            stats.add_time("merge", time.perf_counter() - t0)
            for w in range(self.workers):
                with contextlib.suppress(FileNotFoundError):
                    run_dir.file(f"out{epoch.index}-w{w}").unlink()
            t0 = time.perf_counter()
            sink.write(chunks)
            stats.add_time("sink", time.perf_counter() - t0)
            stats.count_epoch(epoch, chunks)

    def _receive(
        self, conns: list[Connection], procs: list[Any], barrier: Any, w: int, epoch: Epoch | None
    ) -> Any:
        """The next message of worker ``w``; fail fast if any worker fails or dies."""
        while True:
            ready = wait([conns[w], *(p.sentinel for p in procs)], timeout=1.0)
            if conns[w] in ready:
                try:
                    msg = conns[w].recv()
                except (EOFError, OSError):
                    # Its end of the pipe closed without a word: the worker died.
                    procs[w].join(1.0)
                    raise ExecutionError(
                        _death_message(w, procs[w].exitcode or -signal.SIGKILL, epoch),
                        seq=None if epoch is None else epoch.seq_start,
                    ) from None
                if isinstance(msg, _Failed):
                    raise ExecutionError(msg.message, seq=msg.seq, operator=msg.operator)
                return msg
            dead = [i for i, p in enumerate(procs) if p.exitcode not in (None, 0)]
            # Prefer a worker's own report of its error to the news that some worker exited.
            for i in range(len(procs)) if dead else ():
                with contextlib.suppress(EOFError, OSError):
                    while conns[i].poll():
                        msg = conns[i].recv()
                        if isinstance(msg, _Failed):
                            raise ExecutionError(msg.message, seq=msg.seq, operator=msg.operator)
            for i, proc in enumerate(procs):
                code = proc.exitcode
                if code is None or code == 0:
                    continue
                # A worker may have reported its failure just before exiting.
                if conns[i].poll():
                    with contextlib.suppress(EOFError, OSError):
                        msg = conns[i].recv()
                        if isinstance(msg, _Failed):
                            raise ExecutionError(msg.message, seq=msg.seq, operator=msg.operator)
                raise ExecutionError(
                    _death_message(i, code, epoch),
                    seq=None if epoch is None else epoch.seq_start,
                )

    # The coordinator never calls barrier.abort(): a worker killed while holding the barrier's
    # internal lock would make it block forever. Terminating the workers ends their waits.
    def _shutdown(
        self, procs: list[Any], conns: list[Connection], barrier: Any, *, clean: bool = False
    ) -> None:
        if clean:
            # The workers were told to stop and are exiting on their own.
            deadline = time.monotonic() + 5
            for proc in procs:
                proc.join(max(0.0, deadline - time.monotonic()))
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + 5
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in conns:
            conn.close()


def _death_message(worker: int, exitcode: int, epoch: Epoch | None) -> str:
    how = (
        f"was killed by {signal.Signals(-exitcode).name}"
        if exitcode < 0
        else f"exited with code {exitcode}"
    )
    where = (
        ""
        if epoch is None
        else f" while processing epoch {epoch.index} (seq {epoch.seq_start}..{epoch.seq_end - 1})"
    )
    return f"worker {worker} {how}{where}; the run was stopped, its output is incomplete"


def _merge_shares(shares: list[list[OutputChunk]]) -> list[OutputChunk]:
    """Each worker's chunks of one epoch -> one chunk per stream in serial order."""
    by_name: dict[str, list[OutputChunk]] = {}
    for chunks in shares:
        for chunk in chunks:
            by_name.setdefault(chunk.output, []).append(chunk)
    out = []
    for name, all_parts in by_name.items():
        # A worker with no records for a stream may not even know its columns.
        parts = [p for p in all_parts if len(p)] or all_parts[:1]
        if len(parts) == 1:
            out.append(parts[0])
            continue
        seq = np.concatenate([p.seq for p in parts])
        # Stable: all records of one event come from one worker, already in order.
        order = np.argsort(seq, kind="stable")
        keys = _concat([p.keys for p in parts])[order]
        names = list(dict.fromkeys(n for p in parts for n in p.columns))
        columns = {n: _concat([_column_or_none(p, n) for p in parts])[order] for n in names}
        out.append(OutputChunk(name, seq[order], keys, columns))
    return out


def _column_or_none(chunk: OutputChunk, name: str) -> np.ndarray:
    col = chunk.columns.get(name)
    return np.full(len(chunk), None, dtype=object) if col is None else col


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    if any(p.dtype == object for p in parts) and not all(p.dtype == object for p in parts):
        out = np.empty(sum(len(p) for p in parts), dtype=object)
        i = 0
        for p in parts:
            out[i : i + len(p)] = p.tolist()
            i += len(p)
        return out
    return np.concatenate(parts)
