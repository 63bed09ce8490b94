"""An executor by name, for callers (the connector's ``executor`` setting) that choose one at
run time instead of importing its class."""

from __future__ import annotations

from typing import Literal, get_args

from engine.errors import EngineError
from engine.executors.base import Executor
from engine.executors.batch import BatchExecutor
from engine.executors.parallel import ParallelExecutor
from engine.executors.serial import SerialExecutor

__all__ = ["EXECUTOR_NAMES", "ExecutorName", "make_executor"]

#: The executors :func:`make_executor` builds: the oracle, one process epoch by epoch, a
#: coordinator with worker processes, and the same on the actors of a Ray cluster.
ExecutorName = Literal["serial", "batch", "parallel", "ray"]
EXECUTOR_NAMES: tuple[ExecutorName, ...] = get_args(ExecutorName)


def make_executor(
    name: ExecutorName,
    *,
    workers: int | None = None,
    epoch_size: int | None = None,
    stall_timeout: float | None = None,
    ray_address: str = "",
    ray_readers: int = 0,
) -> Executor:
    """The executor called ``name``, with ``epoch_size`` events an epoch (default: the
    :func:`~engine.executors.base.auto_epoch_size` of its workers).

    ``workers`` is the parallel executor's process count (default: the CPUs in the process's
    affinity set), or the ray executor's actor count (default: the Ray cluster's CPU count);
    serial and batch run in the calling process, so for them it must be 1 or left out.
    ``stall_timeout`` is the parallel and ray executors' watchdog (seconds a worker may stay
    silent while the coordinator waits for it; None: no limit); serial and batch wait for no
    other process, so they take none.
    ``ray_address`` is the Ray cluster the ray executor connects to (``""``: ``ray.init``'s
    own choice); the ray executor imports Ray only when it starts, and a missing ``ray``
    package is an :class:`~engine.errors.EngineError` saying how to install it.
    ``ray_readers`` is the ray executor's reader actors for a source that can be split (0: one
    per node of its workers).
    """
    if name == "parallel":
        return ParallelExecutor(workers=workers, epoch_size=epoch_size, stall_timeout=stall_timeout)
    if name == "ray":
        # Imported here: the other executors (and ``import engine``) never load Ray's code.
        from engine.executors.ray_executor import RayExecutor, import_ray

        import_ray()  # fail now, not when the run starts, if the extra is not installed
        return RayExecutor(
            workers=workers,
            epoch_size=epoch_size,
            stall_timeout=stall_timeout,
            address=ray_address,
            readers=ray_readers,
        )
    if name not in EXECUTOR_NAMES:
        raise EngineError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTOR_NAMES)}")
    if workers not in (None, 1):
        raise EngineError(
            f"the {name} executor runs in one process; workers must be 1, got {workers}"
        )
    if name == "serial":
        return SerialExecutor(epoch_size=epoch_size)
    return BatchExecutor(epoch_size=epoch_size)
