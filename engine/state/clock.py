"""Stream time for tables with an allowed lateness (see :mod:`engine.windows`).

The stream time at an event is the largest timestamp of the log's events up to and including
it. It depends only on the log, so the serial executor (event by event) and every worker of
the parallel one (each sees every epoch's timestamps) compute the same value for each seq.
A table keeps the stream time of the epochs before the current one itself, in its state, so
that it survives checkpoints; the runtime hands it an :class:`EpochClock` per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["EpochClock", "NO_TIME", "ScalarBounded", "VectorBounded"]

NO_TIME = np.iinfo(np.int64).min  # the stream time before the first event


@dataclass(frozen=True, slots=True)
class EpochClock:
    """The running maximum of one epoch's timestamps, by seq (not counting earlier epochs).

    ``times[i]`` is the largest timestamp of the epoch's events ``seq_start .. seq_start + i``.
    """

    seq_start: int
    times: np.ndarray

    @classmethod
    def of(cls, seq_start: int, ts: np.ndarray) -> EpochClock:
        """The clock of an epoch whose events (every kind, in seq order) have times ``ts``."""
        times = np.maximum.accumulate(np.asarray(ts, dtype=np.int64)) if len(ts) else ts
        return cls(seq_start, np.asarray(times, dtype=np.int64))

    def at(self, seqs: np.ndarray, carried: int) -> np.ndarray:
        """Stream time at each of ``seqs`` (events of this epoch), given the stream time
        ``carried`` at the end of the previous epochs."""
        if len(self.times) == 0:
            return np.full(len(seqs), carried, dtype=np.int64)
        at = np.asarray(seqs, dtype=np.int64) - self.seq_start
        out: np.ndarray = np.maximum(self.times[at], carried)
        return out

    def end(self, carried: int) -> int:
        """Stream time after the epoch's last event."""
        return max(int(self.times[-1]), carried) if len(self.times) else carried


class VectorBounded(Protocol):
    """A vector table with an allowed lateness: it needs the stream time of every event."""

    def set_clock(self, clock: EpochClock) -> None:
        """The clock of the epoch about to be written and read; called before
        ``write_epoch`` in every epoch, including epochs without writes to this table."""


class ScalarBounded(Protocol):
    """A scalar table with an allowed lateness."""

    def set_stream_time(self, stream_time: int) -> None:
        """The stream time at the event about to read or write (never decreases)."""
