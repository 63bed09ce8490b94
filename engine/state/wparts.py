"""Window geometry for windowed tables: time keys, and the time order of an epoch's writes.

Time keys (``tk``) turn both window types into "tk in (a, b]": a sliding window uses the
timestamp itself, (r - length, r]; a hopping window uses the pane ``t // g`` (g = gcd(size,
slide)), and its panes [start/g, end/g) are (start/g - 1, end/g - 1].

Within an epoch a read sees a prefix (its first ``j`` writes) of its key's *segment* (the key's
epoch writes in seq order). With timestamps that go backwards those of its members (a < tk <=
b) are not a contiguous run, so the tables rank each segment's writes by time key
(:func:`time_ranks`) and the compiled kernels (:mod:`engine.state.winkernels`) walk the
segment once with Fenwick and segment trees: O(log n) per read, however far back times go.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

import numpy as np

from engine.state.epoch import EpochWrites
from engine.state.packing import sort_pairs
from engine.windows import Hopping, Sliding, Window

__all__ = ["EpochPart", "TimeKeys", "subtract_saturated", "time_order", "time_ranks"]

_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1


def subtract_saturated(x: np.ndarray, k: int) -> np.ndarray:
    """``x - k`` for int64 ``x`` and any int ``k >= 0``, with int64 min wherever the
    difference would be below it (instead of wrapping around)."""
    out = np.asarray(x, dtype=np.int64)
    while k > 0:
        step = min(k, _I64_MAX)
        limit = _I64_MIN + step  # the smallest x that survives this step
        out = np.where(out >= limit, np.maximum(out, limit) - step, _I64_MIN)
        k -= step
    return out


class TimeKeys:
    """Maps timestamps to time keys and reader times to windows (a, b] over time keys."""

    def __init__(self, window: Window) -> None:
        self.sliding = isinstance(window, Sliding)
        if isinstance(window, Sliding):
            self.length = window.length
            self.pane = 1
        else:
            assert isinstance(window, Hopping)
            self.size, self.slide = window.size, window.slide
            self.pane = gcd(window.size, window.slide)

    def of(self, ts: np.ndarray) -> np.ndarray:
        return ts if self.pane == 1 else np.floor_divide(ts, self.pane)

    def horizon_floor(
        self, stream: np.ndarray, lateness: int, keep_back: int | None = None
    ) -> np.ndarray:
        """The time key at or below which nothing is kept at stream times ``stream``: the
        lower edge ``a`` of a read at ``stream - lateness`` (see :mod:`engine.windows`).
        A sliding table may keep further back (``keep_back``: lateness + length of its
        laxest follower). Where the edge would fall below int64 it is int64 min, which cuts
        nothing, as the oracle's unbounded integers do."""
        if self.sliding:
            return subtract_saturated(
                stream, self.length + lateness if keep_back is None else keep_back
            )
        x = subtract_saturated(stream, lateness)
        # bounds() rounds down to a slide and subtracts the size: keep it inside int64.
        low = _I64_MIN + self.size + self.slide
        safe = x >= low if low <= _I64_MAX else np.zeros(len(x), dtype=bool)
        edge = self.bounds(np.where(safe, x, 0))[0]
        return np.where(safe, edge, _I64_MIN)

    def bounds(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(a, b)``: members have a < tk <= b."""
        if self.sliding:
            return r - self.length, r
        end = np.floor_divide(r, self.slide) * self.slide + self.slide
        start = end - self.size
        return start // self.pane - 1, end // self.pane - 1


@dataclass(frozen=True, slots=True)
class EpochPart:
    """Per read lane, its members among its key's epoch writes (see
    :func:`engine.state.winkernels.epoch_windows`): how many, their value sum, their extreme
    value and the grouped position of the first or last of them in write order (-1: none)."""

    count: np.ndarray
    total: np.ndarray
    ext: np.ndarray
    pos: np.ndarray


def time_order(ep: EpochWrites, gtk: np.ndarray) -> np.ndarray:
    """Grouped positions of an epoch's writes in time order within each segment (stable:
    equal time keys keep write order); the identity when no segment's time keys drop."""
    n = ep.n
    seg = ep.grouped_seg
    down = np.flatnonzero(gtk[1:] < gtk[:-1]) + 1
    if n == 0 or not bool(np.any(seg[down] == seg[down - 1])):
        return np.arange(n, dtype=np.int64)
    order: np.ndarray = sort_pairs(seg, np.asarray(gtk, dtype=np.int64))
    return order


def time_ranks(ep: EpochWrites, gtk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(stk, rank)`` for an epoch's grouped time keys ``gtk``: each segment's time keys in
    ascending order (laid out like the segments), and each grouped write's place among them
    (stable: equal time keys keep write order)."""
    n = ep.n
    by_time = time_order(ep, gtk)
    within = np.arange(n, dtype=np.int64) - ep.seg_start[ep.grouped_seg] if n else by_time
    rank = np.empty(n, dtype=np.int64)
    rank[by_time] = within
    return np.ascontiguousarray(gtk[by_time], dtype=np.int64), rank
