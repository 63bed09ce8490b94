"""Vectorised windowed distinct counts (sliding and hopping).

History: one record per write (sliding) or per (pane, value) (hopping), values as dense ids,
in a :class:`RegionStore` sorted by time key. For a batch of reads, each key's relevant
history records and epoch writes are laid out in time order ("Z order"); every read's window
is then a contiguous range [A, B) of Z, and sorted by their window end the reads' ranges only
move forward. Over such a chain of ranges, element i is the first of its value in range q iff
A_q <= i < B_q and its previous same-value element is < A_q: for each element that holds for a
contiguous run of reads, so one difference array gives every read's distinct count of its
range at once.

A range also holds epoch writes the read cannot see yet (later in the log, earlier in time):
for each such write that is the first of its value in the range, the read loses that value
when none of the value's later elements in the range is visible; those chains are short
unless timestamps jump far back.

With an allowed lateness (:mod:`engine.windows`) a read's lower edge is raised to its horizon.
A late read's range can then start after that of a read with a later window end, which breaks
the chain. The reads whose lower edge is their window's still form one chain; those whose
lower edge is the horizon form a second one as long as their horizons grow with their window
ends (the stream time only grows, so with steady disorder they do); any other read is counted
one by one over its range, at a cost of the range's length. Writes below their
writer's horizon are not stored, and the store expires records below the horizon at each
epoch's end.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.state.clock import NO_TIME, EpochClock
from engine.state.epoch import EpochWrites
from engine.state.keyindex import KeyIndex
from engine.state.packing import expand_ranges, pack_order, sort_pairs
from engine.state.regions import RegionStore
from engine.state.search import search_ranges
from engine.state.spec import AggregateSpec
from engine.state.wparts import EpochGeometry, TimeKeys

__all__ = ["DistinctWindowedTable"]

_I64 = np.dtype(np.int64)


class DistinctWindowedTable:
    """The vectorised table for a windowed distinct count."""

    # Class-level defaults, so that tables pickled before lateness existed still load.
    _lateness: int | None = None
    _now = int(NO_TIME)
    _clock: EpochClock | None = None

    def __init__(self, spec: AggregateSpec) -> None:
        assert spec.window is not None and spec.kind == "distinct"
        self.spec = spec
        self._tk = TimeKeys(spec.window)
        self._index = KeyIndex()
        self._values = KeyIndex()
        if self._tk.sliding:
            self._store = RegionStore({"tk": _I64, "v": _I64})
        else:
            self._store = RegionStore({"tk": _I64, "v": _I64}, (), {}, ("tk", "v"))
        self._ep: EpochWrites | None = None
        self._geo: EpochGeometry | None = None
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
        slots = self._index.register(np.asarray(keys, dtype=np.int64))
        self._store.ensure_slots(self._index.n_slots)
        vids = self._values.register(np.asarray(values, dtype=np.int64))
        ep = self._ep = EpochWrites(slots, np.asarray(seqs, dtype=np.int64))
        tk = self._tk.of(np.asarray(ts, dtype=np.int64))
        geo = self._geo = EpochGeometry(ep, tk)
        order = ep.order
        self._g = {"tk": geo.gtk, "v": vids[order]}
        if bool(geo.ordered.all()):
            self._by_time = np.arange(ep.n, dtype=np.int64)
        else:  # stable: write order among equal time keys
            self._by_time = np.lexsort((geo.gtk, geo.seg))
        # Time keys of each segment in time order, packed (segment, tk - segment min + 1) so
        # a batch of rank lookups is one sorted merge.
        stk = self._stk = geo.gtk[self._by_time]
        self._smin = stk[ep.seg_start]
        self._smax = stk[ep.seg_start + ep.seg_len - 1]
        spans = self._smax.view(np.uint64) - self._smin.view(np.uint64)
        span = int(spans.max()) + 2 if ep.n else 2
        self._vb = span.bit_length()
        self._packed = self._vb + max(1, len(ep.seg_start).bit_length()) <= 62
        if self._packed:
            self._cstk = (geo.seg << self._vb) + (stk - self._smin[geo.seg] + 1)
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
        self._ep = self._geo = None
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
        recs = {name: g[name][self._by_time] for name in ("tk", "v")}
        floor = self._floor(ep.seqs)
        if floor is not None:
            # Writes already below their horizon: no read can see them again.
            keep = recs["tk"] > floor[ep.order][self._by_time]
            slots = slots[keep]
            recs = {name: column[keep] for name, column in recs.items()}
        if self._tk.sliding:
            self._store.add(slots, recs)
            return
        o = np.lexsort((recs["v"], recs["tk"], slots))
        slots, tk, v = slots[o], recs["tk"][o], recs["v"][o]
        keep = np.ones(len(o), dtype=bool)
        keep[1:] = (slots[1:] != slots[:-1]) | (tk[1:] != tk[:-1]) | (v[1:] != v[:-1])
        self._store.add(slots[keep], {"tk": tk[keep], "v": v[keep]})

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
        # Per key in log order: rank lookups become merges, and windows come in chain order.
        perm = sort_pairs(slots + 1, cut)
        slots, latest, r = slots[perm], latest[perm], r[perm]
        a, b = self._tk.bounds(r)
        floor = self._floor(np.asarray(seqs, dtype=np.int64)[perm])
        late = np.zeros(m, dtype=bool)
        if floor is not None:
            late = floor > a  # the horizon, not the window, bounds these reads
            a = np.where(late, floor, a)
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
        q = np.flatnonzero((hb > ha) | (eb > ea))
        if len(q):
            qs, qb = slots[q], b[q]
            if bool(np.any((qs[1:] == qs[:-1]) & (qb[1:] < qb[:-1]))):
                q = q[np.lexsort((qb, qs))]
            values[q] = self._chain(q, slots, seg, seen, a, b, ha, hb, ea, eb, late)
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

    def _chain(
        self,
        q: np.ndarray,
        slots: np.ndarray,
        seg: np.ndarray,
        seen: np.ndarray,
        a: np.ndarray,
        b: np.ndarray,
        ha: np.ndarray,
        hb: np.ndarray,
        ea: np.ndarray,
        eb: np.ndarray,
        late: np.ndarray,
    ) -> np.ndarray:
        """Distinct counts of reads ``q`` (sorted by slot, then window end); the ``late``
        ones (cut by the horizon) are counted off the chain."""
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
        ztk[dst] = store.cols["tk"][at]
        zv[dst] = store.cols["v"][at]
        n_ep = ep.n if ep is not None else 0
        zpos_of = np.full(n_ep, -1, dtype=np.int64)
        if ep is not None and n_ep:
            base = np.where(gseg >= 0, ep.seg_start[np.maximum(gseg, 0)], 0) + emin
            at, own = expand_ranges(base, elen)
            grouped = self._by_time[at]
            dst = zstart[own] + hlen[own] + (at - base[own])
            ztk[dst] = self._g["tk"][grouped]
            zv[dst] = self._g["v"][grouped]
            zrank[dst] = ep.rank[ep.order[grouped]]
            zpos_of[grouped] = dst
        zgroup = np.repeat(np.arange(len(first)), hlen + elen)
        if total > 1:
            down = np.flatnonzero(ztk[1:] < ztk[:-1])
            if len(down) and bool(np.any(zgroup[down] == zgroup[down + 1])):
                o = np.lexsort((ztk, zgroup))  # stable: history first among equal time keys
                where = np.empty(total, dtype=np.int64)
                where[o] = np.arange(total)
                ztk, zv, zrank = ztk[o], zv[o], zrank[o]
                zpos_of = np.where(zpos_of >= 0, where[np.maximum(zpos_of, 0)], -1)
        lo = zstart[grp] + (ha[q] - hmin[grp]) + (ea[q] - emin[grp])
        hi = zstart[grp] + (hb[q] - hmin[grp]) + (eb[q] - emin[grp])
        prev, nxt = _neighbours(zv)

        # The chain needs lo non-decreasing too. A window's lower edge grows with its end,
        # so only reads whose lower edge is the horizon can break that (see the module
        # docstring). They form a second chain as far as their own lower edges keep
        # growing (a horizon grows with the log, so usually all of them); the rest of them
        # are counted directly.
        def chain(c: slice | np.ndarray) -> np.ndarray:
            counts = _chain_distinct(lo[c], hi[c], prev, total)
            if n_ep:
                counts -= self._hidden(
                    q[c], seg, seen, a, b, lo[c], hi[c], prev, nxt, zrank, zpos_of
                )
            return counts

        late_q = late[q]
        if not late_q.any():
            return chain(slice(None))
        counts = np.empty(len(q), dtype=np.int64)
        on_time = np.flatnonzero(~late_q)
        cut = np.flatnonzero(late_q)
        rising = lo[cut] >= np.maximum.accumulate(lo[cut])
        for c in (on_time, cut[rising]):
            if len(c):
                counts[c] = chain(c)
        d = cut[~rising]
        if len(d):
            counts[d] = _count_directly(lo[d], hi[d], seen[q[d]], zv, zrank)
        return counts

    def _hidden(
        self,
        q: np.ndarray,
        seg: np.ndarray,
        seen: np.ndarray,
        a: np.ndarray,
        b: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        prev: np.ndarray,
        nxt: np.ndarray,
        zrank: np.ndarray,
        zpos_of: np.ndarray,
    ) -> np.ndarray:
        """Per read, values of its range whose every element there is invisible to it."""
        ep, geo = self._ep, self._geo
        assert ep is not None and geo is not None
        lanes = np.flatnonzero(seg[q] >= 0)
        out = np.zeros(len(q), dtype=np.int64)
        if len(lanes) == 0:
            return out
        r = q[lanes]
        s0 = ep.seg_start[seg[r]]
        s1 = s0 + ep.seg_len[seg[r]]
        first_hidden = s0 + seen[r]
        # Writes the read cannot see with tk <= b: all before the first position whose
        # suffix minimum exceeds b (usually the very first: later writes are later in time).
        end = first_hidden.copy()
        some = np.flatnonzero(first_hidden < s1)
        some = some[geo.sm[first_hidden[some]] <= b[r][some]]
        if len(some):
            end[some] = search_ranges(geo.sm, first_hidden[some], s1[some], b[r][some], "right")
        at, own = expand_ranges(first_hidden, end - first_hidden)
        tk = geo.gtk[at]
        keep = (tk > a[r][own]) & (tk <= b[r][own])
        at, own = at[keep], own[keep]
        lane = lanes[own]
        z = zpos_of[at]
        canonical = prev[z] < lo[lane]
        z, lane = z[canonical], lane[canonical]
        limit, horizon = hi[lane], seen[q[lane]]
        counted = np.zeros(len(z), dtype=bool)
        cur = nxt[z]
        todo = np.arange(len(z))
        while len(todo):
            c = cur[todo]
            gone = (c < 0) | (c >= limit[todo])
            counted[todo[gone]] = True
            c_ok = np.maximum(c, 0)
            visible = ~gone & ((zrank[c_ok] < 0) | (zrank[c_ok] < horizon[todo]))
            todo = todo[~gone & ~visible]
            cur[todo] = nxt[cur[todo]]
        np.add.at(out, lane[counted], 1)
        return out


def _neighbours(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the previous / next element with the same value (-1 if none)."""
    n = len(values)
    prev = np.full(n, -1, dtype=np.int64)
    nxt = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return prev, nxt
    shift = values - values.min()
    by_value = pack_order(shift)  # stable: ascending position within a value
    same = shift[by_value[1:]] == shift[by_value[:-1]]
    prev[by_value[1:][same]] = by_value[:-1][same]
    nxt[by_value[:-1][same]] = by_value[1:][same]
    return prev, nxt


def _count_directly(
    lo: np.ndarray, hi: np.ndarray, seen: np.ndarray, zv: np.ndarray, zrank: np.ndarray
) -> np.ndarray:
    """Distinct values among the visible elements of each range [lo_q, hi_q) of Z: history
    records (``zrank`` -1) and the epoch writes that the read sees (rank < ``seen``)."""
    at, owner = expand_ranges(lo, np.maximum(hi - lo, 0))
    visible = (zrank[at] < 0) | (zrank[at] < seen[owner])
    at, owner = at[visible], owner[visible]
    pairs = np.unique(np.stack([owner, zv[at]], axis=1), axis=0)
    return np.bincount(pairs[:, 0], minlength=len(lo)).astype(np.int64)


def _chain_distinct(lo: np.ndarray, hi: np.ndarray, prev: np.ndarray, total: int) -> np.ndarray:
    """Distinct values in each range [lo_q, hi_q) of a chain (lo and hi non-decreasing)."""
    m = len(lo)
    upto_lo = np.cumsum(np.bincount(lo, minlength=total + 1))  # reads with lo <= i
    upto_hi = np.cumsum(np.bincount(hi, minlength=total + 1))  # reads with hi <= i
    i = np.arange(total)
    start = np.maximum(upto_hi[i], np.where(prev >= 0, upto_lo[np.maximum(prev, 0)], 0))
    stop = upto_lo[i]
    ok = start < stop
    delta = np.bincount(start[ok], minlength=m + 1) - np.bincount(stop[ok], minlength=m + 1)
    return np.cumsum(delta)[:m]
