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
noticed through its process sentinel. Either way the coordinator stops the other workers and
raises :class:`~engine.errors.ExecutionError` within seconds; a worker killed by SIGKILL is
reported as a possible out-of-memory kill, with the peak RSS last sampled from ``/proc``.
A worker that is alive but silent (stopped, hung) is caught by the watchdog: with
``stall_timeout``, every wait of the coordinator for a worker gives up once that worker has
sent nothing for that long (workers report each phase, so the clock measures silence, not an
epoch's length) and raises :class:`~engine.errors.StallError` naming the worker that holds
the others up, its pid, state, epoch and ``seq`` range. The run directory is removed whatever
happens.

Checkpoints (:mod:`engine.checkpoint`): the coordinator asks the store whether an epoch is
due when it dispatches it, and then sends every worker a snapshot task right behind that epoch;
a worker handles its tasks in order, so it snapshots its state exactly at the end of the epoch,
writes the blob to the run directory and answers. After the sink took the epoch's output, the
coordinator collects the blobs and saves them with the log position it tracked. A resumed run
checks the snapshot against the plan and worker count before it starts any worker, and each
worker restores its blob before its first epoch.

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
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from engine.checkpoint import CheckpointStore, EngineSnapshot, PositionTracker, check_resume
from engine.errors import EngineError, ExecutionError, LogError, StallError
from engine.executors.arena import RunDir, SentObjects, load, store
from engine.executors.base import RunStats, auto_epoch_size
from engine.executors.snapshot import check_header, fingerprint
from engine.executors.worker import (
    Done,
    EpochTask,
    Failed,
    Progress,
    Ready,
    RestoreTask,
    Saved,
    SnapshotTask,
    raise_failure,
    worker_main,
)
from engine.log import Epoch, Source
from engine.merge import merge_log
from engine.output import OutputChunk, Sink, merge_shares
from engine.planner import Plan
from engine.positions import LogPosition
from engine.procmem import Watched, process_state
from engine.state.jit import warm_up

__all__ = ["ParallelExecutor"]

log = logging.getLogger(__name__)


class ParallelExecutor:
    """MVPS across processes: see the module docstring."""

    name = "parallel"

    def __init__(
        self,
        *,
        workers: int | None = None,
        epoch_size: int | None = None,
        max_in_flight: int = 2,
        shm_dir: Path | None = None,
        coordinator_nice: int = 10,
        stall_timeout: float | None = None,
    ) -> None:
        """``workers``: processes (default: the CPUs this process may run on; the engine does
        not read cgroup quotas, the connector passes its count of usable CPUs);
        ``epoch_size``: events per epoch (default:
        :func:`~engine.executors.base.auto_epoch_size` of ``workers``);
        ``stall_timeout``: seconds a worker may stay silent while the coordinator waits for
        it (None: no limit), see the module docstring."""
        workers = _affinity_cpus() if workers is None else workers
        if workers < 1:
            raise EngineError(f"workers must be >= 1, got {workers}")
        epoch_size = auto_epoch_size(workers) if epoch_size is None else epoch_size
        if epoch_size < 1:
            raise LogError(f"epoch_size must be >= 1, got {epoch_size}")
        if max_in_flight < 1:
            raise EngineError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if not 0 <= coordinator_nice <= 19:
            raise EngineError(f"coordinator_nice must be in 0..19, got {coordinator_nice}")
        if stall_timeout is not None and not stall_timeout > 0:
            raise EngineError(f"stall_timeout must be > 0 seconds, got {stall_timeout}")
        self.stall_timeout = stall_timeout
        self.workers = workers
        self.epoch_size = epoch_size
        self.max_in_flight = max_in_flight
        #: How much to lower the CPU priority of the thread that drives the run (Linux
        #: ``nice``; 0 leaves it alone): see :meth:`_drive_behind_workers`.
        self.coordinator_nice = coordinator_nice
        self.shm_dir = shm_dir
        #: Peak RSS of every process of the last run, bytes (coordinator first).
        self.peak_rss: list[int] = []
        #: Pids of the last run's workers (for tests that check nothing outlives a run).
        self.worker_pids: list[int] = []
        self.run_dir: Path | None = None
        #: Seconds this executor spent compiling kernels before forking its workers.
        self.compile_seconds = 0.0
        self._coordinator: threading.Thread | None = None
        self._pool: _Workers | None = None

    def start(self, plan: Plan) -> None:
        """Start the worker processes for ``plan`` now; the next :meth:`run` of ``plan`` uses
        them.

        Workers are forked, so they share (copy-on-write) whatever the calling process holds
        at that moment. A caller about to load a large data set into memory (a benchmark, a
        source that reads ahead) starts the workers first, so that they do not map it too.
        Stop them with :meth:`close` (or use the executor as a context manager) if no run
        follows.
        """
        if self._pool is not None:
            raise EngineError("the workers are already started; run() or close() first")
        self._pool = self._fork(plan)

    def close(self) -> None:
        """Stop workers started by :meth:`start` that no run has used (a no-op otherwise)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            self._shutdown(pool.procs, pool.conns, pool.barrier)
            pool.run_dir.remove()

    def __enter__(self) -> ParallelExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fork(self, plan: Plan) -> _Workers:
        # Compiled kernels first: forked workers inherit the machine code instead of each
        # compiling (or loading) it again.
        self.compile_seconds += warm_up()
        # fork: workers inherit the plan, whose operators may be lambdas and closures.
        ctx = mp.get_context("fork")
        run_dir = RunDir.create(self.shm_dir)
        barrier = ctx.Barrier(self.workers)
        pool = _Workers(plan, run_dir, barrier, [], [], [], [])
        try:
            for w in range(self.workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(
                    target=worker_main,
                    name=f"restream-worker-{w}",
                    args=(w, self.workers, plan, run_dir.path, child, barrier),
                    daemon=True,
                )
                proc.start()
                child.close()
                pool.conns.append(parent)
                pool.procs.append(proc)
                pool.watched.append(Watched(proc.pid))
                pool.progress.append((-1, -1))
                log.debug("worker %d started: pid %d", w, proc.pid)
        except BaseException:
            self._shutdown(pool.procs, pool.conns, barrier)
            run_dir.remove()
            raise
        self.run_dir = run_dir.path
        self.worker_pids = [p.pid for p in pool.procs]
        return pool

    def run(
        self,
        plan: Plan,
        source: Source,
        sink: Sink,
        *,
        stats: RunStats | None = None,
        checkpoints: CheckpointStore | None = None,
        resume: EngineSnapshot | None = None,
    ) -> RunStats:
        """Run ``plan`` over ``source`` into ``sink`` with ``self.workers`` processes (those
        of :meth:`start`, if it was called for this plan).

        ``checkpoints`` and ``resume`` as in :mod:`engine.checkpoint`: the coordinator asks the
        store whether an epoch is due when it dispatches it, and the workers snapshot their
        state right after processing it.
        """
        stats = RunStats(self.name) if stats is None else stats
        started = time.perf_counter()
        pool, self._pool = self._pool, None
        if pool is None:
            self.compile_seconds = 0.0
        clean = False
        try:
            start = None
            if resume is not None:
                check_resume(
                    resume, executor=self.name, workers=self.workers, epoch_size=self.epoch_size
                )
                digest = fingerprint(plan)
                for w, blob in enumerate(resume.states):
                    check_header(blob, digest, shard=w, shards=self.workers)
                start = resume.position
            if pool is not None and pool.plan is not plan:
                self._shutdown(pool.procs, pool.conns, pool.barrier)
                pool.run_dir.remove()
                pool = None
            if pool is None:
                pool = self._fork(plan)
            if resume is not None:
                self._restore(pool, resume, stats)
            self._drive_behind_workers(
                merge_log(source, epoch_size=self.epoch_size, start=start),
                pool,
                sink,
                stats,
                checkpoints,
                PositionTracker(start) if checkpoints is not None else None,
                start,
            )
            for conn in pool.conns:
                conn.send(None)
            peaks = [self._receive(pool, w, None) for w in range(self.workers)]
            clean = True
            self.peak_rss = [
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                *[int(p[1]) for p in peaks],
            ]
        finally:
            if pool is not None:
                self._shutdown(pool.procs, pool.conns, pool.barrier, clean=clean)
            if self._coordinator is not None:
                self._coordinator.join(5)
                self._coordinator = None
            if pool is not None:
                pool.run_dir.remove()
        if self.compile_seconds:
            stats.add_time("compile", self.compile_seconds)
        stats.wall_seconds = time.perf_counter() - started
        return stats

    def _restore(self, pool: _Workers, resume: EngineSnapshot, stats: RunStats) -> None:
        """Have every worker load its blob of ``resume`` before the first epoch."""
        for w, blob in enumerate(resume.states):
            path = pool.run_dir.file(f"restore-w{w}")
            path.write_bytes(blob)
            pool.conns[w].send(RestoreTask(str(path)))
        for w in range(self.workers):
            ready = self._receive(pool, w, None)
            assert isinstance(ready, Ready)
            stats.add_time("restore", ready.seconds)
            pool.run_dir.file(f"restore-w{w}").unlink()

    def _drive_behind_workers(self, *args: Any) -> None:
        """Run :meth:`_drive` in a thread whose CPU priority is below the workers'.

        With one worker per core, the coordinator is one process too many: when it takes a
        worker's core, that worker is late at every phase barrier and all the others wait for
        it. A lower priority lets the coordinator read ahead, store epochs and sink output in
        the time workers spend waiting instead (W=2 on 2 cores, 2M spam events: 3.55 s
        against 3.67 s, medians of 9). Linux ``nice`` is per thread, so only this thread is
        lowered (and it ends with the run), not the caller's; where the priority cannot be
        set the run goes on unchanged. The calling thread waits in short joins, so Ctrl-C
        still reaches it at once.
        """
        if self.coordinator_nice == 0 or not hasattr(os, "setpriority"):
            self._drive(*args)
            return
        failure: list[BaseException] = []

        def drive() -> None:
            try:
                tid = threading.get_native_id()
                with contextlib.suppress(OSError):
                    nice = os.getpriority(os.PRIO_PROCESS, tid) + self.coordinator_nice
                    os.setpriority(os.PRIO_PROCESS, tid, min(nice, 19))
                self._drive(*args)
            except BaseException as exc:  # handed to the calling thread, which raises it
                failure.append(exc)

        thread = threading.Thread(target=drive, name="restream-coordinator", daemon=True)
        # If the wait is interrupted, run() stops the workers, which ends the thread's waits
        # on them, and then joins it, so that it is not left writing to the sink.
        self._coordinator = thread
        thread.start()
        while thread.is_alive():
            thread.join(0.1)
        if failure:
            raise failure[0]

    def _drive(
        self,
        epochs: Iterator[Epoch],
        workers: _Workers,
        sink: Sink,
        stats: RunStats,
        checkpoints: CheckpointStore | None,
        tracker: PositionTracker | None,
        start: LogPosition | None,
    ) -> None:
        run_dir = workers.run_dir
        sent = SentObjects(run_dir)
        # Where the next epoch starts, for reports of a source that stalls while it is read.
        following = (0, 0) if start is None else (start.epoch, start.seq)
        in_flight: deque[tuple[Epoch, list[Path], bool]] = deque()
        exhausted = False
        while True:
            while not exhausted and len(in_flight) < self.max_in_flight:
                t0 = time.perf_counter()
                stats.reading = following
                epoch = next(epochs, None)
                stats.reading = None
                stats.add_time("read", time.perf_counter() - t0)
                if epoch is None:
                    exhausted = True
                    break
                following = (epoch.index + 1, epoch.seq_end)
                due = checkpoints is not None and checkpoints.due(epoch)
                t0 = time.perf_counter()
                path = run_dir.file(f"epoch{epoch.index}")
                store(path, epoch, sent)
                files, sent.written = [path, *sent.written], []
                for w in range(self.workers):
                    self._send(workers, w, EpochTask(epoch.index, str(path)), epoch)
                    if due:
                        # Right behind the epoch: the worker snapshots exactly at its end.
                        snap = run_dir.file(f"snap{epoch.index}-w{w}")
                        self._send(workers, w, SnapshotTask(epoch.index, str(snap)), epoch)
                stats.add_time("move", time.perf_counter() - t0)
                in_flight.append((epoch, files, due))
            if not in_flight:
                return
            epoch, files, due = in_flight.popleft()
            shares: list[list[OutputChunk]] = []
            for w in range(self.workers):
                done = self._receive(workers, w, epoch)
                assert isinstance(done, Done) and done.epoch == epoch.index
                for what, secs in done.seconds.items():
                    stats.add_time(what, secs)
                t0 = time.perf_counter()
                shares.append(load(Path(done.path)))
                stats.add_time("move", time.perf_counter() - t0)
            # Every worker has read the epoch, and with it any object array it named first.
            for path in files:
                path.unlink()
            t0 = time.perf_counter()
            chunks = merge_shares(shares)
            stats.add_time("merge", time.perf_counter() - t0)
            for w in range(self.workers):
                with contextlib.suppress(FileNotFoundError):
                    run_dir.file(f"out{epoch.index}-w{w}").unlink()
            t0 = time.perf_counter()
            sink.write(chunks, epoch)
            stats.add_time("sink", time.perf_counter() - t0)
            stats.count_epoch(epoch, chunks)
            if tracker is not None and checkpoints is not None:
                tracker.advance(epoch)
                if due:
                    self._checkpoint(workers, epoch, tracker, checkpoints, stats)

    def _checkpoint(
        self,
        workers: _Workers,
        epoch: Epoch,
        tracker: PositionTracker,
        checkpoints: CheckpointStore,
        stats: RunStats,
    ) -> None:
        """Collect the workers' snapshots after ``epoch`` and hand them to the store."""
        t0 = time.perf_counter()
        blobs: list[bytes] = []
        for w in range(self.workers):
            saved = self._receive(workers, w, epoch)
            assert isinstance(saved, Saved) and saved.epoch == epoch.index
            stats.add_time("snapshot", saved.seconds)
            path = Path(saved.path)
            blobs.append(path.read_bytes())
            path.unlink()
        checkpoints.save(
            EngineSnapshot(tracker.position, self.name, self.workers, self.epoch_size, tuple(blobs))
        )
        stats.add_time("checkpoint", time.perf_counter() - t0)

    def _send(self, workers: _Workers, w: int, msg: EpochTask | SnapshotTask, epoch: Epoch) -> None:
        try:
            workers.conns[w].send(msg)
        except OSError:
            workers.procs[w].join(1.0)
            # A worker that failed reported why before exiting: prefer that to "it exited".
            for conn in workers.conns:
                with contextlib.suppress(EOFError, OSError):
                    while conn.poll():
                        reply = conn.recv()
                        if isinstance(reply, Failed):
                            raise_failure(reply)
            raise ExecutionError(
                _death_message(workers, w, workers.procs[w].exitcode or -9, epoch),
                seq=epoch.seq_start,
            ) from None

    def _receive(self, workers: _Workers, w: int, epoch: Epoch | None) -> Any:
        """The next answer of worker ``w``; fail fast if any worker fails or dies, or (with a
        ``stall_timeout``) if ``w`` stays silent that long."""
        conns, procs = workers.conns, workers.procs
        heard = time.monotonic()  # the start of the wait, or w's last sign of life
        while True:
            ready = wait([conns[w], *(p.sentinel for p in procs)], timeout=1.0)
            if conns[w] in ready:
                try:
                    msg = conns[w].recv()
                except (EOFError, OSError):
                    # Its end of the pipe closed without a word: the worker died.
                    procs[w].join(1.0)
                    raise ExecutionError(
                        _death_message(workers, w, procs[w].exitcode or -signal.SIGKILL, epoch),
                        seq=None if epoch is None else epoch.seq_start,
                    ) from None
                if isinstance(msg, Failed):
                    raise_failure(msg)
                workers.watched[w].sample()
                if isinstance(msg, Progress):
                    workers.progress[w] = (msg.epoch, msg.phase)
                    heard = time.monotonic()
                    continue
                if isinstance(msg, Done):
                    workers.progress[w] = (msg.epoch, _ALL_PHASES)
                return msg
            dead = [i for i, p in enumerate(procs) if p.exitcode not in (None, 0)]
            # Prefer a worker's own report of its error to the news that some worker exited.
            for i in range(len(procs)) if dead else ():
                with contextlib.suppress(EOFError, OSError):
                    while conns[i].poll():
                        msg = conns[i].recv()
                        if isinstance(msg, Failed):
                            raise_failure(msg)
            for i, proc in enumerate(procs):
                code = proc.exitcode
                if code is None or code == 0:
                    continue
                # A worker may have reported its failure just before exiting.
                if conns[i].poll():
                    with contextlib.suppress(EOFError, OSError):
                        msg = conns[i].recv()
                        if isinstance(msg, Failed):
                            raise_failure(msg)
                raise ExecutionError(
                    _death_message(workers, i, code, epoch),
                    seq=None if epoch is None else epoch.seq_start,
                )
            for watched in workers.watched:
                watched.sample()
            if self.stall_timeout is not None and time.monotonic() - heard > self.stall_timeout:
                raise self._stalled(workers, w, epoch)

    def _stalled(self, workers: _Workers, w: int, epoch: Epoch | None) -> StallError:
        """The error for a wait on worker ``w`` that timed out: it names the worker that
        holds the run up, which need not be ``w`` (``w`` may wait at a phase barrier for
        it). A worker's own report of a failure, if one came meanwhile, is raised instead."""
        for i, conn in enumerate(workers.conns):
            with contextlib.suppress(EOFError, OSError):
                while conn.poll():
                    msg = conn.recv()
                    if isinstance(msg, Failed):
                        raise_failure(msg)
                    if isinstance(msg, Progress):
                        workers.progress[i] = (msg.epoch, msg.phase)
                    elif isinstance(msg, Done):
                        workers.progress[i] = (msg.epoch, _ALL_PHASES)
        pids = [p.pid for p in workers.procs]
        stopped = [i for i, pid in enumerate(pids) if (process_state(pid) or "").startswith("stop")]
        if stopped:
            culprit = stopped[0]
        elif epoch is not None:
            # The one furthest behind in this epoch holds the others at a barrier; among
            # equals, one that is not asleep (waiting at the barrier) is the likelier.
            behind = [
                (
                    workers.progress[i] if workers.progress[i][0] == epoch.index else (-1, -1),
                    process_state(pids[i]) == "sleeping",
                    i,
                )
                for i in range(self.workers)
            ]
            least = min(behind)
            culprit = least[2] if least[0] < (epoch.index, _ALL_PHASES) else w
        else:
            culprit = w
        done_epoch, phase = workers.progress[culprit]
        if epoch is None:
            where = "outside an epoch (restoring its snapshot, or stopping)"
        elif done_epoch == epoch.index and phase != _ALL_PHASES:
            where = f"after phase {phase}"
        else:
            where = "before its first phase"
        span = (
            ""
            if epoch is None
            else f" in epoch {epoch.index} (seq {epoch.seq_start}..{epoch.seq_end - 1})"
        )
        assert self.stall_timeout is not None
        return StallError(
            f"worker {culprit} (pid {pids[culprit]}) made no progress for "
            f"{self.stall_timeout:.0f} s{span}, {where}: "
            f"{workers.watched[culprit].stall()}; the run was stopped, its output is incomplete",
            process=f"worker {culprit}",
            pid=pids[culprit],
            seconds=self.stall_timeout,
            epoch=None if epoch is None else epoch.index,
            seq_start=None if epoch is None else epoch.seq_start,
            seq_end=None if epoch is None else epoch.seq_end,
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
        # Workers ignore SIGTERM (the run's to handle) and hold nothing that outlives them
        # but the run directory, removed by the caller: SIGKILL, which also ends a stopped one.
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        for proc in procs:
            proc.join()
        for conn in conns:
            conn.close()


@dataclass(frozen=True, slots=True)
class _Workers:
    plan: Plan
    run_dir: RunDir
    barrier: Any
    conns: list[Connection]
    procs: list[Any]
    #: Per worker: its last sampled peak RSS and CPU time, for death and stall reports.
    watched: list[Watched]
    #: Per worker: the (epoch, phase) it last reported done (_ALL_PHASES: the whole epoch).
    progress: list[tuple[int, int]]


#: A worker's progress phase once it answered the epoch.
_ALL_PHASES = 1 << 30


def _death_message(workers: _Workers, worker: int, exitcode: int, epoch: Epoch | None) -> str:
    how = workers.watched[worker].death(exitcode)
    where = (
        ""
        if epoch is None
        else f" while processing epoch {epoch.index} (seq {epoch.seq_start}..{epoch.seq_end - 1})"
    )
    pid = workers.procs[worker].pid
    return (
        f"worker {worker} (pid {pid}) {how}{where}; the run was stopped, its output is incomplete"
    )


def _affinity_cpus() -> int:
    """The CPUs this process may run on (its affinity set), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1
