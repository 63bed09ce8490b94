"""Executors: running a plan over a log (DESIGN.md §3).

The map of this folder:

- ``base.py`` the :class:`Executor` protocol, :class:`RunStats`, the automatic epoch size.
- ``serial.py`` the oracle: one event at a time; ``batch.py`` one process, epoch by epoch;
  ``parallel.py`` a coordinator and W forked worker processes; ``ray_executor.py`` the same
  coordinator as a Ray driver, with W Ray actors (``ray_actors.py``) spread over a cluster's
  nodes (Ray is imported only when it runs: not by ``import engine``).
- ``runtime.py`` one epoch through every phase (shared by batch and the parallel workers);
  ``columns.py`` an epoch's columns as the runtime sees them and the parts workers swap;
  ``followers.py`` which windowed tables share a leader's history.
- ``worker.py`` a parallel worker's loop and messages; ``placement.py`` which worker runs
  what and which columns cross; ``sharding.py`` which worker owns a key (by hash, balanced from
  the first epoch so that heavy keys do not pile up on one worker); ``arena.py``
  shared-memory transport; ``snapshot.py`` pickled state for checkpoints.
- ``factory.py`` :func:`make_executor`: an executor by name (``serial``, ``batch``,
  ``parallel``, ``ray``), for callers that choose one at run time.

This package exports the executors, their protocol and the factory; the other modules are
the executors' internals.
"""

from __future__ import annotations

from engine.executors.base import Executor, RunStats, auto_epoch_size
from engine.executors.batch import BatchExecutor
from engine.executors.factory import EXECUTOR_NAMES, ExecutorName, make_executor
from engine.executors.parallel import ParallelExecutor
from engine.executors.serial import SerialExecutor

__all__ = [
    "BatchExecutor",
    "EXECUTOR_NAMES",
    "Executor",
    "ExecutorName",
    "ParallelExecutor",
    "RunStats",
    "SerialExecutor",
    "auto_epoch_size",
    "make_executor",
]
