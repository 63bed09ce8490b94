"""Errors raised by the engine.

Every error the engine raises on purpose derives from :class:`EngineError`::

    EngineError
    ├── PipelineError          the pipeline definition is wrong (bad operator or table declaration)
    │   └── PlanError          the planner cannot order the operators (a cycle, a table written
    │                          from two phases)
    ├── UndeclaredReadError    an operator touched a table it did not declare
    ├── LogError               the input log is malformed (columns of different lengths, unsorted
    │                          offsets within a partition)
    ├── CheckpointError        state cannot be checkpointed, or a snapshot does not fit the run
    │                          that should resume from it (another pipeline, executor, workers)
    ├── ExecutionError         an operator raised while processing an event; carries the ``seq``
    ├── SharedMemoryError      a run's shared-memory directory (``/dev/shm``) is full or unwritable
    └── StallError             a process of the run made no progress within the stall timeout
                               (a stopped or hung worker); names it, its pid, epoch and seqs

Messages say what was wrong and what to do about it.
"""

from __future__ import annotations


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""


class PipelineError(EngineError):
    """The pipeline definition is invalid."""


class PlanError(PipelineError):
    """The planner cannot assign phases to the operators."""


class UndeclaredReadError(EngineError):
    """An operator read or wrote a table that it did not declare."""


class LogError(EngineError):
    """The input log is malformed."""


class CheckpointError(EngineError):
    """A run's state cannot be checkpointed, or a snapshot cannot be resumed by this run."""


class ExecutionError(EngineError):
    """An operator failed while processing the event at position ``seq`` of the log."""

    def __init__(self, message: str, *, seq: int | None = None, operator: str | None = None):
        super().__init__(message)
        self.seq = seq
        self.operator = operator


class SharedMemoryError(EngineError):
    """A run's shared-memory directory has no room, or cannot be written."""


class StallError(EngineError):
    """A process of the run (``process``: ``"worker 1"``) made no progress for ``seconds``
    while the coordinator waited for it, during epoch ``epoch`` (events ``seq_start`` up to
    ``seq_end``, exclusive) when known."""

    def __init__(
        self,
        message: str,
        *,
        process: str,
        pid: int | None,
        seconds: float,
        epoch: int | None = None,
        seq_start: int | None = None,
        seq_end: int | None = None,
    ):
        super().__init__(message)
        self.process = process
        self.pid = pid
        self.seconds = seconds
        self.epoch = epoch
        self.seq_start = seq_start
        self.seq_end = seq_end
