"""Window geometry for windowed tables: time keys, and the members of a read among the
epoch's writes of its key.

Time keys (``tk``) turn both window types into "tk in (a, b]": a sliding window uses the
timestamp itself, (r - length, r]; a hopping window uses the pane ``t // g`` (g = gcd(size,
slide)), and its panes [start/g, end/g) are (start/g - 1, end/g - 1].

Within an epoch a read sees a prefix (its first ``j`` writes) of its key's *segment* (the key's
epoch writes in seq order). With per-segment running maxima ``PM`` and suffix minima ``SM`` of
tk (both non-decreasing), ``L(x)`` = the first i < j with PM_i > x and ``H(x)`` = the first
i < j with SM_i > x (or j): every write before L(x) has tk <= x, every write from H(x) on has
tk > x. So the members (a < tk <= b) are the *core* [H(a), L(b)) plus members of the zones
[L(a), H(a)) and [max(L(b), H(a)), H(b)), which are tested one by one. When a key's
timestamps never go backwards within the epoch, L = H and the zones are empty; with jitter
they hold a few writes; only big jumps back make them long.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

import numpy as np

from engine.state.epoch import EpochWrites
from engine.state.packing import expand_ranges
from engine.state.search import search_ranges
from engine.state.segscan import segment_extreme_scan
from engine.windows import Hopping, Sliding, Window

__all__ = [
    "EpochGeometry",
    "EpochPart",
    "Members",
    "TimeKeys",
    "pick_extreme",
    "subtract_saturated",
    "time_ranks",
]

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
    :func:`engine.state.winkernels.epoch_window`): how many, their value sum, their extreme
    value and the grouped position of the first or last of them in write order (-1: none)."""

    count: np.ndarray
    total: np.ndarray
    ext: np.ndarray
    pos: np.ndarray


def time_ranks(ep: EpochWrites, gtk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(stk, rank)`` for an epoch's grouped time keys ``gtk``: each segment's time keys in
    ascending order (laid out like the segments), and each grouped write's place among them
    (stable: equal time keys keep write order)."""
    n = ep.n
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    seg = ep.grouped_seg
    down = np.flatnonzero(gtk[1:] < gtk[:-1]) + 1
    within = np.arange(n, dtype=np.int64) - ep.seg_start[seg]
    if not bool(np.any(seg[down] == seg[down - 1])):
        return np.ascontiguousarray(gtk, dtype=np.int64), within
    by_time = np.lexsort((gtk, seg))
    rank = np.empty(n, dtype=np.int64)
    rank[by_time] = within
    return np.ascontiguousarray(gtk[by_time], dtype=np.int64), rank


@dataclass(slots=True)
class Members:
    """A read's members among its key's epoch writes, as positions in the grouped order.

    ``core_lo``/``core_hi``: the core range (absolute grouped positions; empty when lo >= hi).
    ``zone_at``/``zone_owner``: zone writes that are members, and the read each belongs to.
    """

    core_lo: np.ndarray
    core_hi: np.ndarray
    zone_at: np.ndarray
    zone_owner: np.ndarray


class EpochGeometry:
    """Per-segment tk, running max and suffix min of an epoch's writes (grouped order)."""

    def __init__(self, ep: EpochWrites, tk: np.ndarray) -> None:
        self.ep = ep
        n = ep.n
        self.gtk = gtk = tk[ep.order]
        self.seg = seg = np.repeat(np.arange(len(ep.seg_start)), ep.seg_len)
        down = np.flatnonzero(gtk[1:] < gtk[:-1]) + 1
        down = down[seg[down] == seg[down - 1]]
        self.ordered = np.ones(len(ep.seg_start), dtype=bool)  # per segment: tk never drops
        self.ordered[seg[down]] = False
        self.pm = self.sm = gtk
        if len(down):
            self._tangle(ep, gtk)
        # (segment, tk - segment minimum + 1) packed: searches become sorted merges.
        self.low = self.sm[ep.seg_start] if n else np.zeros(0, dtype=np.int64)
        top = self.pm[ep.seg_start + ep.seg_len - 1]
        span = int((top.view(np.uint64) - self.low.view(np.uint64)).max()) + 2 if n else 1
        self.vb = span.bit_length()
        self.packed = n > 0 and self.vb + max(1, len(ep.seg_start).bit_length()) <= 62
        if self.packed:
            base = (seg << self.vb) - self.low[seg] + 1
            self.cpm = base + self.pm
            self.csm = base + self.sm if len(down) else self.cpm

    def _tangle(self, ep: EpochWrites, gtk: np.ndarray) -> None:
        # Running max / suffix min, computed over the segments whose time keys drop.
        tangled = np.flatnonzero(~self.ordered)
        at, owner = expand_ranges(ep.seg_start[tangled], ep.seg_len[tangled])
        sub = gtk[at]
        starts = np.cumsum(ep.seg_len[tangled]) - ep.seg_len[tangled]
        self.pm = gtk.copy()
        self.pm[at] = segment_extreme_scan(sub, starts, owner, largest=True)
        k = len(tangled) - 1
        rev_start = len(sub) - starts[::-1] - ep.seg_len[tangled][::-1]
        back = segment_extreme_scan(sub[::-1], rev_start, k - owner[::-1], largest=False)
        self.sm = gtk.copy()
        self.sm[at] = back[::-1]

    def members(self, seg: np.ndarray, seen: np.ndarray, a: np.ndarray, b: np.ndarray) -> Members:
        """Members of reads that see the first ``seen`` writes of segment ``seg`` (> 0)."""
        s0 = self.ep.seg_start[seg]
        top = s0 + seen
        peak, floor = self.pm[top - 1], self.sm[s0]
        la, ha = self._edges(seg, s0, top, peak, floor, a)
        lb, hb = self._edges(seg, s0, top, peak, floor, b)
        core_lo, core_hi = ha, np.maximum(lb, ha)
        if not (la != ha).any() and not (lb != hb).any():
            empty = np.zeros(0, dtype=np.int64)
            return Members(core_lo, core_hi, empty, empty)
        zones_lo = np.concatenate([la, np.maximum(lb, ha)])
        zones_hi = np.concatenate([ha, hb])
        owner2 = np.concatenate([np.arange(len(seg)), np.arange(len(seg))])
        at, which = expand_ranges(zones_lo, zones_hi - zones_lo)
        owner = owner2[which]
        tk = self.gtk[at]
        keep = (tk > a[owner]) & (tk <= b[owner])
        return Members(core_lo, core_hi, at[keep], owner[keep])

    def _edges(
        self,
        seg: np.ndarray,
        s0: np.ndarray,
        top: np.ndarray,
        peak: np.ndarray,
        floor: np.ndarray,
        x: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(L(x), H(x)) as absolute grouped positions in [segment start, top]; ``peak`` is
        the largest time key seen, ``floor`` the segment's smallest."""
        above = x >= peak
        low = np.where(above, top, s0)
        high = low.copy()
        todo = np.flatnonzero(~above & (x >= floor))
        if len(todo) == 0:
            return low, high
        sg, tp, xs = seg[todo], top[todo], x[todo]
        tangled = np.flatnonzero(~self.ordered[sg])
        if self.packed:
            needles = (sg << self.vb) + (xs - self.low[sg] + 1)
            found = np.minimum(np.searchsorted(self.cpm, needles, "right"), tp)
            low[todo] = high[todo] = found
            if len(tangled):
                back = np.searchsorted(self.csm, needles[tangled], "right")
                high[todo[tangled]] = np.minimum(back, tp[tangled])
            return low, high
        found = search_ranges(self.pm, s0[todo], tp, xs, "right")
        low[todo] = high[todo] = found
        if len(tangled):
            t = todo[tangled]
            high[t] = search_ranges(self.sm, s0[t], top[t], x[t], "right")
        return low, high


def pick_extreme(
    lanes: int, owner: np.ndarray, key: np.ndarray, largest: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per lane: whether it owns any element, and the index of the element with the smallest
    (largest) key, the first one on ties. ``owner`` must be sorted."""
    found = np.zeros(lanes, dtype=bool)
    index = np.zeros(lanes, dtype=np.int64)
    if len(owner) == 0:
        return found, index
    starts = np.flatnonzero(np.diff(owner, prepend=-1) != 0)
    run = np.repeat(np.arange(len(starts)), np.diff(starts, append=len(owner)))
    best = (np.maximum if largest else np.minimum).reduceat(key, starts)
    hits = np.flatnonzero(key == best[run])
    first = hits[np.diff(run[hits], prepend=-1) != 0]
    lane = owner[starts]
    found[lane] = True
    index[lane] = first
    return found, index
