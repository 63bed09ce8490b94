"""A log, a pipeline, breaking sources and a signal to one process of a run, for the parallel and
Ray executors' failure and lifecycle tests; also imported by the scripts those tests run in a
fresh interpreter."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.log import (
    InMemorySource,
    PartitionBatch,
    PartitionSpec,
    Source,
    SourcePart,
    TopicTable,
)
from engine.pipeline import Pipeline, Record


def slow_log(n: int = 200_000) -> InMemorySource:
    """``n`` events of kind ``a`` on two partitions, 1,000 keys, one per millisecond."""
    rng = np.random.default_rng(1)
    table = TopicTable(
        "t",
        "a",
        {
            "partition": rng.integers(0, 2, n),
            "ts": np.arange(n, dtype=np.int64),
            "k1": rng.integers(0, 1000, n),
        },
    )
    return InMemorySource.from_tables(table, batch_size=4096)


def fragile_pipeline(fail_at: int | None = None, sleep: float = 0.0) -> Pipeline:
    """A running count per key that raises at seq ``fail_at`` and sleeps ``sleep`` s an event."""
    p = Pipeline("fragile")
    total = p.table("total", default=0)

    def merge(old: int, e: Any, _view: Any) -> int:
        if e.seq == fail_at:
            raise ValueError("bad event")
        if sleep:
            time.sleep(sleep)
        return old + 1

    p.update("total", on="a", table=total, key="k1", merge=merge)
    seen = p.lookup("seen", on="a", table=total, key="k1")
    out = p.output("o", key="k1")
    p.emit(
        "show", on="a", output=out, inputs=[seen], fn=lambda e, _v: [Record(e.k1, {"n": e.seen})]
    )
    return p


class _Breaking:
    """A source that delivers ``after`` batches of ``inner``, then raises."""

    def __init__(self, inner: Source, after: int) -> None:
        self._inner = inner
        self._after = after

    def partitions(self) -> Sequence[PartitionSpec]:
        return self._inner.partitions()

    def batches(self) -> Iterator[PartitionBatch]:
        for i, batch in enumerate(self._inner.batches()):
            if i == self._after:
                raise ValueError("the disk is on fire")
            yield batch


@dataclass(frozen=True)
class BreakingPart:
    """A share whose source raises after ``after`` batches (picklable, for a reader actor)."""

    inner: SourcePart
    after: int

    def partitions(self) -> Sequence[PartitionSpec]:
        return self.inner.partitions()

    def open(self) -> Source:
        return _Breaking(self.inner.open(), self.after)


@dataclass(frozen=True)
class BreakingSource:
    """``inner`` split as usual, except that the last share's source raises after ``after``
    batches: a reader whose reading fails."""

    inner: InMemorySource
    after: int

    def partitions(self) -> Sequence[PartitionSpec]:
        return self.inner.partitions()

    def batches(self) -> Iterator[PartitionBatch]:
        return self.inner.batches()

    def split(self, parts: int) -> list[SourcePart]:
        shares: list[SourcePart] = list(self.inner.split(parts))
        shares[-1] = BreakingPart(shares[-1], self.after)
        return shares

    def absorb(self, report: object) -> None:
        """Nothing to take."""


def signal_when_up(
    pids: Callable[[], Sequence[int]], index: int, sig: signal.Signals
) -> list[float]:
    """From a thread, send ``sig`` to process ``pids()[index]`` half a second after the run
    started it (``pids`` lists a run's processes once they are all up: an executor's workers,
    actors or readers), so that it dies or stops in the middle of the run. The returned list
    gets the ``time.monotonic()`` of the signal once it is sent."""
    sent: list[float] = []

    def send() -> None:
        while len(pids()) <= index:
            time.sleep(0.01)
        time.sleep(0.5)
        os.kill(pids()[index], sig)
        sent.append(time.monotonic())

    threading.Thread(target=send, daemon=True).start()
    return sent
