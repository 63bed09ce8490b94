"""The executor interface.

An executor runs a :class:`~engine.planner.Plan` over a :class:`~engine.log.Source` and hands
each epoch's output, in serial order, to a :class:`~engine.output.Sink`::

    stats = executor.run(plan, source, sink)          # or pass stats=RunStats(...) to watch it live
    executor.run(plan, source, sink, checkpoints=store)               # snapshot when store.due()
    executor.run(plan, source_from_position, sink, resume=snapshot)   # continue after a snapshot

Every executor must produce, for every output stream, exactly the records (values, order) of
the serial executor on the same plan and source. That is the only contract; how an executor
gets there (one event at a time, an epoch at a time, across processes or machines) is its own
business. A distributed executor (workers as actors of an existing engine) implements this
same method and reuses the planner and the operators unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from engine.checkpoint import CheckpointStore, EngineSnapshot
from engine.log import Epoch, Source
from engine.output import OutputChunk, Sink
from engine.planner import Plan

__all__ = ["Executor", "RunStats"]


@dataclass(slots=True)
class RunStats:
    """What a run did and where its time went."""

    executor: str
    events: int = 0
    epochs: int = 0
    outputs: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    wall_seconds: float = 0.0
    #: Seconds spent per activity ("read", "phase 0", "phase 1", ..., "sink").
    seconds: dict[str, float] = field(default_factory=dict)

    def count_epoch(self, epoch: Epoch, chunks: Sequence[OutputChunk]) -> None:
        """Account for one finished epoch and the output it produced."""
        self.events += len(epoch)
        self.epochs += 1
        self.outputs += sum(len(c) for c in chunks)
        if len(epoch):
            lo, hi = int(epoch.ts.min()), int(epoch.ts.max())
            self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)
            self.last_ts = hi if self.last_ts is None else max(self.last_ts, hi)

    def add_time(self, what: str, seconds: float) -> None:
        """Accumulate time spent on ``what``."""
        self.seconds[what] = self.seconds.get(what, 0.0) + seconds


class Executor(Protocol):
    """Runs a plan over a source into a sink; see the module docstring for the contract."""

    name: str

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
        """Run to the end of the source; return what was done.

        ``stats``, when given, is filled in as the run goes (a caller may read it between
        epochs, e.g. from the sink, to report progress) and returned.

        ``checkpoints`` asks for snapshots after the epochs it says are due; ``resume``
        continues a run from such a snapshot, given a source that starts at its position
        (see :mod:`engine.checkpoint`). An executor that cannot checkpoint raises
        :class:`~engine.errors.CheckpointError` when either is given.
        """
        ...
