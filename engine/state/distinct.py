"""Vectorised windowed distinct counts (sliding and hopping).

History: one record per write (sliding) or per (pane, value) (hopping), values as dense ids,
in a :class:`RegionStore` sorted by time key. For a batch of reads, each key's relevant
history records and epoch writes are laid out in time order ("Z order"); every read's window
is then a contiguous range [A, B) of Z. A range also holds epoch writes the read cannot see
yet (later in the log, earlier in time): each element has a time from which it is visible (0
for history, rank + 1 for an epoch write), and the compiled kernel
(:mod:`engine.state.distinctkernel`) counts the distinct visible values of every range in
O(log^2) per element and read, however far timestamps go back.

With an allowed lateness (:mod:`engine.windows`) a read's lower edge is raised to its horizon.
Writes below their writer's horizon are not stored, and the store expires records below the
horizon at each epoch's end.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.state.clock import NO_TIME, EpochClock
from engine.state.colnames import TIME_KEY, VALUE
from engine.state.distinctkernel import distinct_in_ranges
from engine.state.epoch import EpochGrouping, EpochWrites, KeySlots
from engine.state.keyindex import KeyIndex
from engine.state.packing import expand_ranges, sort_pairs
from engine.state.regions import RegionStore
from engine.state.search import search_ranges
from engine.state.spec import AggregateSpec
from engine.state.wparts import TimeKeys, time_order

__all__ = ["DistinctWindowedTable"]

_I64 = np.dtype(np.int64)


class DistinctWindowedTable(KeySlots):
    """The vectorised table for a windowed distinct count."""

    # Class-level defaults, for format-4 snapshots taken before allowed lateness (1a94ee3,
    # after format 4 came in with 37616c9): they load as unbounded tables.
    _lateness: int | None = None
    _now = int(NO_TIME)
    _clock: EpochClock | None = None

    def __init__(self, spec: AggregateSpec) -> None:
        assert spec.window is not None and spec.kind == "distinct"
        self.spec = spec
        self._tk = TimeKeys(spec.window)
        self._index = KeyIndex()
        self._grouping = EpochGrouping()
        self._values = KeyIndex()
        if self._tk.sliding:
            self._store = RegionStore({TIME_KEY: _I64, VALUE: _I64})
        else:
            self._store = RegionStore({TIME_KEY: _I64, VALUE: _I64}, (), {}, (TIME_KEY, VALUE))
        self._ep: EpochWrites | None = None
        self._g: dict[str, np.ndarray] = {}
        self._by_time = np.zeros(0, dtype=np.int64)  # grouped positions, time order per segment
        self._seg_index = np.zeros(16, dtype=np.int64)
        self._lateness = spec.window.lateness
        self._now = int(NO_TIME)  # stream time at the end of the previous epochs
        self._clock = None

    def set_clock(self, clock: EpochClock) -> None:
        """The epoch's stream-time clock (tables with an allowed lateness only)."""
        self._clock = clock

    def _floor(self, seqs: np.ndarray) -> np.ndarray | None:
        """Per event: the time key at or below which it sees nothing (None: no lateness)."""
        if self._lateness is None:
            return None
        assert self._clock is not None, "a bounded table needs set_clock every epoch"
        stream = self._clock.at(seqs, self._now)
        return self._tk.horizon_floor(stream, self._lateness)

    def write_epoch(
        self, keys: np.ndarray, seqs: np.ndarray, ts: np.ndarray, values: np.ndarray | None
    ) -> None:
        slots = self._index.register(keys)
        self._store.ensure_slots(self._index.n_slots)
        vids = self._values.register(np.asarray(values, dtype=np.int64))
        ep = self._ep = self._grouping.of(slots, seqs)
        tk = self._tk.of(np.asarray(ts, dtype=np.int64))
        order = ep.order
        gtk = tk[order]
        self._g = {TIME_KEY: gtk, VALUE: vids[order]}
        seg = ep.grouped_seg
        self._by_time = time_order(ep, gtk)  # stable: write order among equal time keys
        # Time keys of each segment in time order, packed (segment, tk - segment min + 1) so
        # a batch of rank lookups is one sorted merge.
        stk = self._stk = gtk[self._by_time]
        self._smin = stk[ep.seg_start]
        self._smax = stk[ep.seg_start + ep.seg_len - 1]
        spans = self._smax.view(np.uint64) - self._smin.view(np.uint64)
        span = int(spans.max()) + 2 if ep.n else 2
        self._vb = span.bit_length()
        self._packed = self._vb + max(1, len(ep.seg_start).bit_length()) <= 62
        if self._packed:
            self._cstk = (seg << self._vb) + (stk - self._smin[seg] + 1)
        self._seg_index = np.full(max(16, self._index.n_slots), -1, dtype=np.int64)
        self._seg_index[ep.seg_slot] = np.arange(len(ep.seg_slot))

    def __getstate__(self) -> dict[str, Any]:
        """Pickled between epochs (checkpoints), without the last epoch's scratch arrays."""
        state = dict(self.__dict__)
        if self._ep is None:
            for name in ("_stk", "_smin", "_smax", "_vb", "_packed", "_cstk"):
                state.pop(name, None)
            state.update(_g={}, _by_time=self._by_time[:0].copy())
            state["_seg_index"] = np.zeros(16, dtype=np.int64)
        return state

    def end_epoch(self) -> None:
        ep, clock = self._ep, self._clock
        if ep is not None and ep.n:
            self._store_epoch(ep)
        self._ep = None
        self._clock = None
        if clock is not None:
            self._now = clock.end(self._now)
            if self._lateness is not None:
                now = np.array([self._now], dtype=np.int64)
                floor = self._tk.horizon_floor(now, self._lateness)
                self._store.expire(int(floor[0]))

    def _store_epoch(self, ep: EpochWrites) -> None:
        g = self._g
        slots = ep.slots[ep.order][self._by_time]
        recs = {name: g[name][self._by_time] for name in (TIME_KEY, VALUE)}
        floor = self._floor(ep.seqs)
        if floor is not None:
            # Writes already below their horizon: no read can see them again.
            keep = recs[TIME_KEY] > floor[ep.order][self._by_time]
            slots = slots[keep]
            recs = {name: column[keep] for name, column in recs.items()}
        if self._tk.sliding:
            self._store.add(slots, recs)
            return
        o = np.lexsort((recs[VALUE], recs[TIME_KEY], slots))
        slots, tk, v = slots[o], recs[TIME_KEY][o], recs[VALUE][o]
        keep = np.ones(len(o), dtype=bool)
        keep[1:] = (slots[1:] != slots[:-1]) | (tk[1:] != tk[:-1]) | (v[1:] != v[:-1])
        self._store.add(slots[keep], {TIME_KEY: tk[keep], VALUE: v[keep]})

    def state_nbytes(self) -> int:
        return self._store.nbytes() + self._index.nbytes() + self._values.nbytes()

    def read(
        self, keys: np.ndarray, seqs: np.ndarray, ts: np.ndarray, *, before: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        slots = self._index.lookup(np.asarray(keys, dtype=np.int64))
        m = len(slots)
        r = np.asarray(ts, dtype=np.int64)
        ep = self._ep
        cut = np.zeros(m, dtype=np.int64)
        latest = np.full(m, -1, dtype=np.int64)
        if ep is not None and ep.n:
            cut = ep.cutoffs(seqs, before)
            latest = ep.latest(slots, cut)
        # Per key in log order: rank lookups become merges.
        perm = sort_pairs(slots + 1, cut)
        slots, latest, r = slots[perm], latest[perm], r[perm]
        a, b = self._tk.bounds(r)
        floor = self._floor(np.asarray(seqs, dtype=np.int64)[perm])
        if floor is not None:
            a = np.maximum(a, floor)  # the horizon, not the window, bounds late reads
        ha, hb = self._store.rank2(slots, a, b)
        seen = np.zeros(m, dtype=np.int64)
        seg = np.full(m, -1, dtype=np.int64)
        ea, eb = np.zeros(m, dtype=np.int64), np.zeros(m, dtype=np.int64)
        if ep is not None and ep.n:
            seen = np.where(latest >= 0, ep.rank[np.maximum(latest, 0)] + 1, 0)
            known = slots >= 0
            seg = np.where(known, self._seg_index[np.where(known, slots, 0)], -1)
            lanes = np.flatnonzero(seg >= 0)
            ea[lanes] = self._epoch_rank(seg[lanes], a[lanes])
            eb[lanes] = np.maximum(self._epoch_rank(seg[lanes], b[lanes]), ea[lanes])
        values = np.zeros(m, dtype=np.int64)
        q = np.flatnonzero((hb > ha) | (eb > ea))  # grouped by slot, as the lanes are
        if len(q):
            values[q] = self._counts(q, slots, seg, seen, ha, hb, ea, eb)
        out = np.empty(m, dtype=np.int64)
        out[perm] = values
        return out, np.ones(m, dtype=bool)

    def _epoch_rank(self, seg: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Per lane: writes of segment ``seg`` (all of them, seen or not) with tk <= x."""
        ep = self._ep
        assert ep is not None
        s0 = ep.seg_start[seg]
        low, high = self._smin[seg], self._smax[seg]
        out = np.where(x >= high, ep.seg_len[seg], 0)
        todo = np.flatnonzero((x >= low) & (x < high))
        if len(todo) == 0:
            return out
        sg = seg[todo]
        if self._packed:
            needles = (sg << self._vb) + (x[todo] - low[todo] + 1)
            out[todo] = np.searchsorted(self._cstk, needles, "right") - s0[todo]
        else:
            lo = s0[todo]
            out[todo] = search_ranges(self._stk, lo, lo + ep.seg_len[sg], x[todo], "right") - lo
        return out

    def _counts(
        self,
        q: np.ndarray,
        slots: np.ndarray,
        seg: np.ndarray,
        seen: np.ndarray,
        ha: np.ndarray,
        hb: np.ndarray,
        ea: np.ndarray,
        eb: np.ndarray,
    ) -> np.ndarray:
        """Distinct counts of reads ``q`` (grouped by slot): their history ranges [ha, hb)
        and epoch ranges [ea, eb) (time order) merged into one range of Z per read."""
        store = self._store
        ep = self._ep
        qs = slots[q]
        first = np.flatnonzero(np.diff(qs, prepend=-2) != 0)
        grp = np.repeat(np.arange(len(first)), np.diff(first, append=len(q)))
        gslot, gseg = qs[first], seg[q[first]]
        hmin = np.minimum.reduceat(ha[q], first)
        hlen = np.maximum.reduceat(hb[q], first) - hmin
        emin = np.minimum.reduceat(ea[q], first)
        elen = np.maximum.reduceat(eb[q], first) - emin
        zstart = np.cumsum(hlen + elen) - hlen - elen
        total = int((hlen + elen).sum())
        ztk = np.empty(total, dtype=np.int64)
        zv = np.empty(total, dtype=np.int64)
        zrank = np.full(total, -1, dtype=np.int64)  # epoch writes: position in their segment
        hstart = store.start[gslot] + hmin
        at, own = expand_ranges(hstart, hlen)
        dst = zstart[own] + (at - hstart[own])
        ztk[dst] = store.cols[TIME_KEY][at]
        zv[dst] = store.cols[VALUE][at]
        if ep is not None and ep.n:
            base = np.where(gseg >= 0, ep.seg_start[np.maximum(gseg, 0)], 0) + emin
            at, own = expand_ranges(base, elen)
            grouped = self._by_time[at]
            dst = zstart[own] + hlen[own] + (at - base[own])
            ztk[dst] = self._g[TIME_KEY][grouped]
            zv[dst] = self._g[VALUE][grouped]
            zrank[dst] = ep.rank[ep.order[grouped]]
        zgroup = np.repeat(np.arange(len(first)), hlen + elen)
        if total > 1:
            down = np.flatnonzero(ztk[1:] < ztk[:-1])
            if len(down) and bool(np.any(zgroup[down] == zgroup[down + 1])):
                o = sort_pairs(zgroup, ztk)  # stable: history first among equal time keys
                zv, zrank = zv[o], zrank[o]
        lo = zstart[grp] + (ha[q] - hmin[grp]) + (ea[q] - emin[grp])
        hi = zstart[grp] + (hb[q] - hmin[grp]) + (eb[q] - emin[grp])
        vt = np.where(zrank >= 0, zrank + 1, 0)
        zoff = np.append(zstart, total)
        qoff = np.append(first, len(q))
        return distinct_in_ranges(zv, vt, zoff, lo, hi, seen[q], qoff)
