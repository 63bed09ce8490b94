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
from engine.errors import EngineError
from engine.log import Epoch, Source
from engine.output import OutputChunk, Sink
from engine.planner import Plan

__all__ = [
    "AUTO_EPOCH_MAX",
    "AUTO_EPOCH_MIN",
    "AUTO_EPOCH_PER_WORKER",
    "Executor",
    "OPERATOR_PREFIX",
    "RunStats",
    "auto_epoch_size",
]

#: Keys of :attr:`RunStats.seconds` that time one operator (or a table's write and epoch
#: end) start with this; they are a breakdown of the phases' time, not added to it.
OPERATOR_PREFIX = "op "

#: Events of an epoch per worker when the epoch size is left to the executor. Every epoch
#: costs each worker a fixed ~25 ms of Python and numpy dispatch whatever its share of the
#: rows (spam backtest, 2 workers, 2M events: 4.2 s at 50,000-event epochs, 3.0 s at
#: 200,000), so a worker's share has to stay large as workers are added.
AUTO_EPOCH_PER_WORKER = 125_000
#: Smallest automatic epoch: one process gains from large epochs too (batch, 2M events:
#: 4.6 s at 100,000, 4.1 s at 200,000).
AUTO_EPOCH_MIN = 250_000
#: Largest automatic epoch (16 workers' worth): two epochs are in flight, so memory for
#: in-flight columns grows with the epoch, not with the share.
AUTO_EPOCH_MAX = 2_000_000
#: A run of known length gets at least this many epochs, so that reading, computing and
#: writing overlap (epochs are the unit of pipelining): a 200,000-event replay through Kafka
#: as one epoch took twice as long as in epochs of 20,000-50,000.
AUTO_EPOCHS_AT_LEAST = 8
#: ... but no epoch smaller than this: every epoch costs each worker a fixed ~25 ms.
AUTO_EPOCH_SMALL = 20_000


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
    #: Seconds spent per activity ("read", "phase 0", "phase 1", ..., "sink", "compile"), and
    #: per operator within the phases (keys that start with :data:`OPERATOR_PREFIX`).
    seconds: dict[str, float] = field(default_factory=dict)
    #: While the executor reads its next epoch from the source: that epoch's index and first
    #: ``seq`` (a source that stalls can say where the log stands); None otherwise.
    reading: tuple[int, int] | None = None

    def count_epoch(
        self, epoch: Epoch, chunks: Sequence[OutputChunk], *, records: int | None = None
    ) -> None:
        """Account for one finished epoch and the output it produced (``chunks``, or
        ``records`` when the caller never held them)."""
        self.events += len(epoch)
        self.epochs += 1
        self.outputs += sum(len(c) for c in chunks) if records is None else records
        if len(epoch):
            lo, hi = int(epoch.ts.min()), int(epoch.ts.max())
            self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)
            self.last_ts = hi if self.last_ts is None else max(self.last_ts, hi)

    def add_time(self, what: str, seconds: float) -> None:
        """Accumulate time spent on ``what``."""
        self.seconds[what] = self.seconds.get(what, 0.0) + seconds


def auto_epoch_size(workers: int, events: int | None = None) -> int:
    """The epoch size an executor with ``workers`` worker processes uses when none is given:
    :data:`AUTO_EPOCH_PER_WORKER` each, within :data:`AUTO_EPOCH_MIN`..:data:`AUTO_EPOCH_MAX`;
    for a run of (at most) ``events`` events, when known, small enough for
    :data:`AUTO_EPOCHS_AT_LEAST` epochs, but at least :data:`AUTO_EPOCH_SMALL`.

    Epoch size never changes output (every executor equals the serial one at any size); it
    trades memory and output latency for throughput.
    """
    if workers < 1:
        raise EngineError(f"workers must be >= 1, got {workers}")
    size = min(AUTO_EPOCH_MAX, max(AUTO_EPOCH_MIN, AUTO_EPOCH_PER_WORKER * workers))
    if events is not None:
        if events < 0:
            raise EngineError(f"events must be >= 0, got {events}")
        size = min(size, max(AUTO_EPOCH_SMALL, -(-events // AUTO_EPOCHS_AT_LEAST)))
    return size


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
