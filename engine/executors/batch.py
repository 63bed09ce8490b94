"""The batch executor: one process, epoch by epoch, phase by phase, vectorised tables.

It runs the same plan as the serial executor and must give the same output bytes; it gets its
speed from the built-in tables, which compute a whole epoch's versions at once in numpy, and
from batch bodies (``batch_fn``) of derived columns and emits.

It can checkpoint (see :mod:`engine.checkpoint`): after each epoch that the store says is due,
and after the sink took that epoch's output, it hands the store the log position and a snapshot
of its one runtime; given such a snapshot it resumes right after that epoch.
"""

from __future__ import annotations

import time

from engine.checkpoint import CheckpointStore, EngineSnapshot, PositionTracker, check_resume
from engine.errors import LogError
from engine.executors.base import RunStats, auto_epoch_size
from engine.executors.runtime import EpochRuntime
from engine.log import Source
from engine.merge import merge_log
from engine.output import Sink
from engine.planner import Plan
from engine.state.jit import warm_up

__all__ = ["BatchExecutor"]


class BatchExecutor:
    """Single-process MVPS: versioned tables within an epoch, collapsed after it."""

    name = "batch"

    def __init__(self, *, epoch_size: int | None = None) -> None:
        """``epoch_size``: events per epoch; by default :func:`auto_epoch_size` of one worker."""
        epoch_size = auto_epoch_size(1) if epoch_size is None else epoch_size
        if epoch_size < 1:
            raise LogError(f"epoch_size must be >= 1, got {epoch_size}")
        self.epoch_size = epoch_size

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
        """Run ``plan`` over ``source`` into ``sink`` (see the module docstring for
        ``checkpoints`` and ``resume``)."""
        stats = RunStats(self.name) if stats is None else stats
        started = time.perf_counter()
        compiled = warm_up()
        if compiled:
            stats.add_time("compile", compiled)
        runtime = EpochRuntime(plan)
        start = None
        if resume is not None:
            check_resume(resume, executor=self.name, workers=1, epoch_size=self.epoch_size)
            t0 = time.perf_counter()
            runtime.restore(resume.states[0])
            stats.add_time("restore", time.perf_counter() - t0)
            start = resume.position
        tracker = PositionTracker(start) if checkpoints is not None else None
        epochs = merge_log(source, epoch_size=self.epoch_size, start=start)
        following = (0, 0) if start is None else (start.epoch, start.seq)
        while True:
            t0 = time.perf_counter()
            stats.reading = following
            epoch = next(epochs, None)
            stats.reading = None
            stats.add_time("read", time.perf_counter() - t0)
            if epoch is None:
                break
            following = (epoch.index + 1, epoch.seq_end)
            due = checkpoints is not None and checkpoints.due(epoch)
            chunks = runtime.process(epoch, stats)
            t0 = time.perf_counter()
            sink.write(chunks, epoch)
            stats.add_time("sink", time.perf_counter() - t0)
            stats.count_epoch(epoch, chunks)
            if tracker is not None and checkpoints is not None:
                t0 = time.perf_counter()
                tracker.advance(epoch)
                if due:
                    checkpoints.save(
                        EngineSnapshot(
                            tracker.position,
                            self.name,
                            1,
                            self.epoch_size,
                            (runtime.snapshot(),),
                        )
                    )
                stats.add_time("checkpoint", time.perf_counter() - t0)
        stats.wall_seconds = time.perf_counter() - started
        return stats
