"""The batch executor: one process, epoch by epoch, phase by phase, vectorised tables.

It runs the same plan as the serial executor and must give the same output bytes; it gets its
speed from the built-in tables, which compute a whole epoch's versions at once in numpy, and
from batch bodies (``batch_fn``) of derived columns and emits.
"""

from __future__ import annotations

import time

from engine.errors import LogError
from engine.executors.base import RunStats
from engine.executors.runtime import EpochRuntime
from engine.log import Source, merge_log
from engine.output import Sink
from engine.planner import Plan

__all__ = ["BatchExecutor"]


class BatchExecutor:
    """Single-process MVPS: versioned tables within an epoch, collapsed after it."""

    name = "batch"

    def __init__(self, *, epoch_size: int = 100_000) -> None:
        if epoch_size < 1:
            raise LogError(f"epoch_size must be >= 1, got {epoch_size}")
        self.epoch_size = epoch_size

    def run(self, plan: Plan, source: Source, sink: Sink) -> RunStats:
        """Run ``plan`` over ``source`` into ``sink``."""
        stats = RunStats(self.name)
        started = time.perf_counter()
        runtime = EpochRuntime(plan)
        epochs = merge_log(source, epoch_size=self.epoch_size)
        while True:
            t0 = time.perf_counter()
            epoch = next(epochs, None)
            stats.add_time("read", time.perf_counter() - t0)
            if epoch is None:
                break
            chunks = runtime.process(epoch, stats)
            t0 = time.perf_counter()
            sink.write(chunks)
            stats.add_time("sink", time.perf_counter() - t0)
            stats.count_epoch(epoch, chunks)
        stats.wall_seconds = time.perf_counter() - started
        return stats
