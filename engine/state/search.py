"""Batched searches over per-key sorted ranges of one array."""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["gallop_ranges", "search_ranges"]


def search_ranges(
    array: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    x: np.ndarray,
    side: Literal["left", "right"] = "right",
) -> np.ndarray:
    """Per lane, the first index in ``[lo, hi)`` whose value is > x (``right``) or >= x
    (``left``), or ``hi``; ``array`` must be sorted within each range.

    A vectorised binary search: each round halves every unresolved lane's range, and lanes
    drop out as they finish, so a batch costs about the sum of log2(range length).
    """
    lo = np.array(lo, dtype=np.int64)
    hi = np.array(hi, dtype=np.int64)
    active = np.flatnonzero(lo < hi)
    while len(active):
        left, right, want = lo[active], hi[active], x[active]
        mid = (left + right) >> 1
        value = array[mid]
        up = value <= want if side == "right" else value < want
        left = np.where(up, mid + 1, left)
        right = np.where(up, right, mid)
        lo[active] = left
        hi[active] = right
        active = active[left < right]
    return lo


def gallop_ranges(
    array: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    hint: np.ndarray,
    x: np.ndarray,
    side: Literal["left", "right"] = "right",
) -> np.ndarray:
    """:func:`search_ranges` starting from a guess ``hint`` in [lo, hi] per lane: it probes
    hint, hint +- 1, +- 3, +- 7, ... before bisecting, so it costs about 2*log2 of the
    distance from the guess to the answer instead of log2 of the range."""
    lo = np.array(lo, dtype=np.int64)
    hi = np.array(hi, dtype=np.int64)
    h = np.clip(hint, lo, hi)

    def beyond(at: np.ndarray, want: np.ndarray) -> np.ndarray:
        value = array[at]
        out: np.ndarray = value > want if side == "right" else value >= want
        return out

    # The answer is >= h when the element before h is not beyond x.
    below = h > lo
    prev_ok = np.ones(len(h), dtype=bool)
    idx = np.flatnonzero(below)
    prev_ok[idx] = ~beyond(h[idx] - 1, x[idx])
    left, right = lo.copy(), hi.copy()
    up = np.flatnonzero(prev_ok)
    left[up] = h[up]
    down = np.flatnonzero(~prev_ok)
    right[down] = h[down] - 1  # h - 1 is beyond x: the answer is <= h - 1
    step = 1
    lanes = up[h[up] < hi[up]]
    while len(lanes):  # upwards: find a probe beyond x, or run out of range
        probe = left[lanes] + step - 1
        inside = probe < hi[lanes]
        hit = np.zeros(len(lanes), dtype=bool)
        hit[inside] = beyond(probe[inside], x[lanes][inside])
        right[lanes[hit]] = probe[hit]
        grow_ok = inside & ~hit
        left[lanes[grow_ok]] = probe[grow_ok] + 1
        lanes = lanes[grow_ok]
        step *= 2
    step = 1
    lanes = down[right[down] > lo[down]]
    while len(lanes):  # downwards: find a probe not beyond x, or reach lo
        probe = right[lanes] - step
        inside = probe >= lo[lanes]
        ok = np.zeros(len(lanes), dtype=bool)
        ok[inside] = ~beyond(probe[inside], x[lanes][inside])
        left[lanes[ok]] = probe[ok] + 1
        right[lanes[inside & ~ok]] = probe[inside & ~ok]
        lanes = lanes[inside & ~ok]
        step *= 2
    return search_ranges(array, left, right, x, side)
