"""The executor interface.

An executor runs a :class:`~engine.planner.Plan` over a :class:`~engine.log.Source` and hands
each epoch's output, in serial order, to a :class:`~engine.output.Sink`::

    stats = executor.run(plan, source, sink)

Every executor must produce, for every output stream, exactly the records (values, order) of
the serial executor on the same plan and source. That is the only contract; how an executor
gets there (one event at a time, an epoch at a time, across processes or machines) is its own
business. A distributed executor (workers as actors of an existing engine) implements this
same method and reuses the planner and the operators unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from engine.log import Source
from engine.output import Sink
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

    def add_time(self, what: str, seconds: float) -> None:
        """Accumulate time spent on ``what``."""
        self.seconds[what] = self.seconds.get(what, 0.0) + seconds


class Executor(Protocol):
    """Runs a plan over a source into a sink; see the module docstring for the contract."""

    name: str

    def run(self, plan: Plan, source: Source, sink: Sink) -> RunStats:
        """Run to the end of the source; return what was done."""
        ...
