"""Per-key history of a windowed table: records kept in one region of arrays per slot.

A region holds one key's records sorted by time key ``tk`` (then by write order ``o``, or, in
*combine* mode, unique per ``tk`` or per ``(tk, v)``), so a window is a range of the region
found by two searches. Regions have spare capacity: a new epoch's records are usually
appended (timestamps mostly increase); a region that outgrows its capacity moves to the end
of the arrays with double the room, and the arrays are compacted once moved-out space exceeds
the live space, so upkeep is amortised O(1) per record. Records that arrive with an older
time key than the region's last are merged in by rewriting the region's tail from the
insertion point (cheap for small disorder, linear in the tail for large jumps back).

*Prefix* columns hold running sums / minima / maxima from the region's start, so a range sum
is a difference and an extreme over a range starting at the region's start is one lookup.

Tables with an allowed lateness :meth:`~RegionStore.expire` records below their horizon. A
region is rebuilt (its survivors moved to its start, prefixes recomputed) only once at least
half of it has expired, which keeps that upkeep amortised O(1) per record too; until then
readers skip the expired records by their time keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from engine.state.colnames import ORDER, TIME_KEY, WRITE_POS
from engine.state.jit import jit, register_warm_up
from engine.state.packing import expand_ranges, sort_pairs
from engine.state.rangeindex import RangeIndex
from engine.state.search import gallop_ranges, search_ranges
from engine.state.segscan import grow, segment_cumsum, segment_extreme_scan

__all__ = ["Prefix", "RegionStore"]

CombineOp = Literal["sum", "min", "max", "first", "last"]
_I64 = np.iinfo(np.int64)


@jit
def _gallop_right(tk: np.ndarray, lo: int, hi: int, h: int, x: int) -> int:
    """The first index in ``[lo, hi)`` with ``tk > x`` (or ``hi``), searched from ``h``:
    probes h, h +- 1, +- 3, +- 7, ... before bisecting (about 2 log2 of the distance)."""
    h = min(max(h, lo), hi)
    if h > lo and tk[h - 1] > x:  # the answer is at most h - 1
        right = h - 1
        left = lo
        step = 1
        while right - step >= lo:
            probe = right - step
            if tk[probe] > x:
                right = probe
                step *= 2
            else:
                left = probe + 1
                break
    else:  # the answer is at least h
        left = h
        right = hi
        step = 1
        while left + step - 1 < hi:
            probe = left + step - 1
            if tk[probe] > x:
                right = probe
                break
            left = probe + 1
            step *= 2
    while left < right:
        mid = (left + right) >> 1
        if tk[mid] <= x:
            left = mid + 1
        else:
            right = mid
    return left


@jit
def _rank2(
    tk: np.ndarray,
    start: np.ndarray,
    length: np.ndarray,
    tmin: np.ndarray,
    tmax: np.ndarray,
    hint: np.ndarray,
    slots: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`RegionStore.rank2` lane by lane: ``a``'s rank galloping from the slot's hint
    (then the hint moves there), ``b``'s from ``a``'s."""
    m = len(slots)
    ra = np.zeros(m, dtype=np.int64)
    rb = np.zeros(m, dtype=np.int64)
    for i in range(m):
        s = slots[i]
        if s < 0:
            continue
        n = length[s]
        if n == 0:
            continue
        st = start[s]
        x = a[i]
        if x >= tmax[s]:
            r = n
        elif x < tmin[s]:
            r = 0
        else:
            r = _gallop_right(tk, st, st + n, st + hint[s], x) - st
            hint[s] = r
        ra[i] = r
        y = b[i]
        if y >= tmax[s]:
            q = n
        elif y < tmin[s]:
            q = 0
        else:
            q = _gallop_right(tk, st, st + n, st + r, y) - st
        rb[i] = max(q, r)
    return ra, rb


@jit
def _copy_ranges(
    out: np.ndarray, src: np.ndarray, start: np.ndarray, to: np.ndarray, length: np.ndarray
) -> None:
    """``out[to[i] : to[i] + length[i]] = src[start[i] : start[i] + length[i]]`` per range i:
    one memory copy a region, where gathering and scattering every row by index cost
    several times as much (moves were a tenth of the 30-day count's upkeep)."""
    for i in range(len(start)):
        n = length[i]
        if n > 0:
            out[to[i] : to[i] + n] = src[start[i] : start[i] + n]


@register_warm_up
def _warm() -> None:
    one = np.zeros(1, dtype=np.int64)
    _rank2(one, one, one + 1, one, one + 1, one, one, one, one)
    _copy_ranges(one, one, one, one, one)


@dataclass(frozen=True, slots=True)
class Prefix:
    """Column ``name`` = running ``op`` of column ``source`` from the region's start."""

    name: str
    source: str
    op: Literal["sum", "min", "max"]


class RegionStore:
    """Records per slot, sorted by time key; see the module docstring."""

    # Format-4 snapshots taken before range indexes existed (d25da5c) lack it; the windowed
    # table attaches one on first use, so the class default stays.
    index: RangeIndex | None = None
    #: How many times larger the arrays get when a moving region needs more rows.
    growth = 4

    def __init__(
        self,
        columns: dict[str, np.dtype],
        prefixes: tuple[Prefix, ...] = (),
        combine: dict[str, CombineOp] | None = None,
        unique: tuple[str, ...] = (TIME_KEY,),
        index: RangeIndex | None = None,
    ) -> None:
        self.cols = {name: np.zeros(64, dtype=dtype) for name, dtype in columns.items()}
        for p in prefixes:
            self.cols[p.name] = np.zeros(64, dtype=np.int64)
        self.prefixes = prefixes
        self.combine = combine  # None: insert mode, every record kept, ordered by (tk, o)
        self.unique = unique
        self.start = np.zeros(16, dtype=np.int64)
        self.length = np.zeros(16, dtype=np.int64)
        self.cap = np.zeros(16, dtype=np.int64)
        self.disp = np.zeros(16, dtype=np.int64)  # max |position - wp| (with a "wp" column)
        self.tmin = np.zeros(16, dtype=np.int64)  # first and last time key of each region
        self.tmax = np.zeros(16, dtype=np.int64)
        self.hint = np.zeros(16, dtype=np.int64)  # where the slot's last lower edge fell
        self.top = 0  # store rows in use (live regions, spare room, moved-out space)
        self.garbage = 0
        # Compact once moved-out rows exceed both the floor and this share of the rows.
        self.compact_floor = 1 << 16
        self.compact_share = 0.5
        self.index = index  # range arg-extreme over one column, kept in step with the rows

    def range_best(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Per range [lo, hi) of store rows: the row whose indexed column is smallest
        (largest), -1 for an empty range. Needs the store built with an ``index``."""
        assert self.index is not None, "this store keeps no range index"
        return self.index.query(self.cols[self.index.column], lo, hi)

    def _indexed(self, rows: np.ndarray) -> None:
        if self.index is not None:
            self.index.update(self.cols[self.index.column], rows)

    def __getstate__(self) -> dict[str, object]:
        """Pickled (checkpoints) with only what a later read can reach: each region's
        records, back to back, without the spare room of regions, the rows that moved out
        (up to half of the arrays until a compaction) or the arrays' unused tail (they grow
        by doubling); about a third of the rows in a store that grew by appends.

        A read never depends on where a region lies: ranks and hints are relative to the
        region's start, and prefix columns are copied as they are, not recomputed (a float
        running sum recomputed from another start could differ in its last bits). A restored
        store gives every region exactly the room it fills: its next write moves it to the
        end with room to grow, as any full region's does."""
        state = dict(self.__dict__)
        live = np.flatnonzero(self.length > 0)
        length = self.length[live]
        base = np.cumsum(length) - length
        src, _owner = expand_ranges(self.start[live], length)
        top = int(length.sum())
        cols = {}
        for name, array in self.cols.items():
            # At least 64 rows, as a new or compacted store has: readers may look at row 0.
            packed = np.zeros(max(64, top), dtype=array.dtype)
            packed[:top] = array[src]
            cols[name] = packed
        state["cols"] = cols
        start = np.zeros_like(self.start)
        start[live] = base
        cap = np.zeros_like(self.cap)
        cap[live] = length
        state.update(start=start, cap=cap, top=top, garbage=0)
        return state

    def nbytes(self) -> int:
        per_slot = sum(a.nbytes for a in (self.start, self.length, self.cap, self.disp))
        per_slot += self.tmin.nbytes + self.tmax.nbytes
        # The rows in use: the arrays' tails are untouched zero pages (they grow fourfold),
        # which cost address space, not memory.
        return per_slot + sum(a.itemsize * self.top for a in self.cols.values())

    def ensure_slots(self, n: int) -> None:
        self.start = grow(self.start, n)
        self.length = grow(self.length, n)
        self.cap = grow(self.cap, n)
        self.disp = grow(self.disp, n)
        self.tmin = grow(self.tmin, n)
        self.tmax = grow(self.tmax, n)
        self.hint = grow(self.hint, n)

    def records(self) -> int:
        return int(self.length.sum())

    # ------------------------------------------------------------------ reading

    def rank(self, slots: np.ndarray, x: np.ndarray, side: Literal["left", "right"]) -> np.ndarray:
        """Per lane: records of the slot with tk <= x (``right``) or < x (``left``).

        Fastest when lanes come grouped by slot with x ascending within a slot: each run of
        lanes of one slot then costs two searches plus one merge with the records between
        its smallest and largest x.
        """
        known = slots >= 0
        at = np.maximum(slots, 0)
        n = np.where(known, self.length[at], 0)
        first, last = self.tmin[at], self.tmax[at]
        if side == "right":
            everything, nothing = x >= last, x < first
        else:
            everything, nothing = x > last, x <= first
        out = np.where(everything, n, 0)
        todo = np.flatnonzero((n > 0) & ~everything & ~nothing)
        if len(todo):
            out[todo] = self._rank_runs(at[todo], x[todo], side)
        return out

    def rank2(
        self, slots: np.ndarray, a: np.ndarray, b: np.ndarray, hints: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(rank(a), max(rank(b), rank(a)))`` with ``right`` ranks: a window (a, b].

        ``hints`` (per slot, updated) is where each slot's lower edge fell last time; readers
        with different window lengths over one store keep their own (default: the store's).
        """
        hint = self.hint if hints is None else hints
        # A compiled loop: the vectorised version (grouping lanes into runs per slot, a
        # galloping search per run, a merge for runs of several lanes) took 0.4 us a read.
        return _rank2(
            self.cols[TIME_KEY],
            self.start,
            self.length,
            self.tmin,
            self.tmax,
            hint,
            np.ascontiguousarray(slots, dtype=np.int64),
            np.ascontiguousarray(a, dtype=np.int64),
            np.ascontiguousarray(b, dtype=np.int64),
        )

    def _rank_runs(
        self, slots: np.ndarray, x: np.ndarray, side: Literal["left", "right"]
    ) -> np.ndarray:
        tk = self.cols[TIME_KEY]
        out: np.ndarray
        runs = np.flatnonzero(np.diff(slots, prepend=-1) != 0)
        size = np.diff(runs, append=len(slots))
        run_of = np.repeat(np.arange(len(runs)), size)
        st = self.start[slots[runs]]
        end = st + self.length[slots[runs]]
        low = np.minimum.reduceat(x, runs)
        high = np.maximum.reduceat(x, runs)
        lo = search_ranges(tk, st, end, low, side)
        out = lo[run_of] - st[run_of]
        multi = np.flatnonzero((size > 1) & (high > low))
        if len(multi) == 0:
            return out
        lo_m, low_m, st_m = lo[multi], low[multi], st[multi]
        hi_m = gallop_ranges(tk, lo_m, end[multi], lo_m, high[multi], side)
        width = int((high[multi].view(np.uint64) - low_m.view(np.uint64)).max()) + 2
        rb = max(1, width.bit_length())
        rank_of = np.full(len(runs), -1, dtype=np.int64)
        rank_of[multi] = np.arange(len(multi))
        lanes = np.flatnonzero(rank_of[run_of] >= 0)
        r = rank_of[run_of[lanes]]
        if rb + max(1, len(multi).bit_length()) > 62:  # too wide to pack: search each lane
            out[lanes] = search_ranges(tk, lo_m[r], hi_m[r], x[lanes], side) - st_m[r]
            return out
        # Records between the run's extremes, packed as (run, tk - low + 1), merged with x.
        at, which = expand_ranges(lo_m, hi_m - lo_m)
        elements = (which << rb) | (tk[at] - low_m[which] + 1)
        needles = (r << rb) | (x[lanes] - low_m[r] + 1)
        pos = np.searchsorted(elements, needles, side)
        offset = np.cumsum(hi_m - lo_m) - (hi_m - lo_m)
        out[lanes] = lo_m[r] - st_m[r] + pos - offset[r]
        return out

    # ------------------------------------------------------------------ expiry

    def expire(self, x: int) -> np.ndarray:
        """Drop the records with ``tk <= x`` from every region where they are at least half
        of the records; return the slots rebuilt (ascending).

        A ``wp`` column (write position, see :meth:`_write`) is renumbered to the survivors'
        order by ``o``, so that the caller's next write position for a rebuilt slot is its
        new length.
        """
        live = np.flatnonzero((self.length > 0) & (self.tmin <= x))
        if len(live) == 0:
            return live
        dead = self.rank(live, np.full(len(live), x, dtype=np.int64), "right")
        rebuild = 2 * dead >= self.length[live]
        u, dead = live[rebuild], dead[rebuild]
        if len(u) == 0:
            return u
        keep = self.length[u] - dead
        at, owner = expand_ranges(self.start[u] + dead, keep)
        derived = {p.name for p in self.prefixes}
        recs = {name: col[at] for name, col in self.cols.items() if name not in derived}
        slots = u[owner]
        if WRITE_POS in recs:
            by_write = np.lexsort((recs[ORDER], slots))
            first = np.cumsum(keep) - keep
            wp = np.empty(len(slots), dtype=np.int64)
            wp[by_write] = np.arange(len(slots)) - first[owner[by_write]]
            recs[WRITE_POS] = wp
        self.length[u] = 0
        self.disp[u] = 0
        self.hint[u] = 0
        # Give back the room of regions that shrank a lot; compaction reclaims it.
        room = np.maximum(8, 2 * keep)
        shrink = np.flatnonzero(self.cap[u] > 2 * room)
        if len(shrink):
            self.garbage += int((self.cap[u[shrink]] - room[shrink]).sum())
            self.cap[u[shrink]] = room[shrink]
        self.add(slots, recs)
        return u

    # ------------------------------------------------------------------ writing

    def add(self, slots: np.ndarray, recs: dict[str, np.ndarray]) -> None:
        """Merge new records, grouped by ascending slot and sorted within a slot."""
        if len(slots) == 0:
            return
        firsts = np.flatnonzero(np.diff(slots, prepend=-1) != 0)
        u = slots[firsts]
        cnt = np.diff(firsts, append=len(slots))
        self.ensure_slots(int(u[-1]) + 1)
        old = self.length[u]
        tk = self.cols[TIME_KEY]
        new_first = recs[TIME_KEY][firsts]
        last_old = self.tmax[u]
        if self.combine is None:
            fast = (old == 0) | (last_old <= new_first)
        else:
            fast = (old == 0) | (last_old < new_first)
        p = old.copy()
        slow = np.flatnonzero(~fast)
        if len(slow):
            st = self.start[u[slow]]
            side: Literal["left", "right"] = "right" if self.combine is None else "left"
            p[slow] = search_ranges(tk, st, st + old[slow], new_first[slow], side) - st
        self._make_room(u, old, old + cnt)
        group = np.repeat(np.arange(len(u)), cnt)
        if len(slow) == 0:
            tail, tail_group = recs, group
        else:
            tail, tail_group = self._merge_tail(u, p, old, group, recs)
        tail_len = np.bincount(tail_group, minlength=len(u))
        self._write(u, p, tail_len, tail, tail_group)
        self.length[u] = p + tail_len
        tk = self.cols[TIME_KEY]
        self.tmin[u] = tk[self.start[u]]
        self.tmax[u] = tk[self.start[u] + self.length[u] - 1]
        if self.garbage > max(self.compact_floor, self.top * self.compact_share):
            self._compact()

    def _merge_tail(
        self,
        u: np.ndarray,
        p: np.ndarray,
        old: np.ndarray,
        group: np.ndarray,
        recs: dict[str, np.ndarray],
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The old records from each insertion point on, merged with the new ones."""
        at, owner = expand_ranges(self.start[u] + p, old - p)
        names = [n for n in recs]
        tail = {n: np.concatenate([self.cols[n][at], recs[n]]) for n in names}
        tail_group = np.concatenate([owner, group])
        if self.combine is None:
            keys = [TIME_KEY, ORDER] if ORDER in tail else [TIME_KEY]
        else:
            keys = list(self.unique)
        # Both sorts are stable: an old record stays before a new one with the same keys.
        if len(keys) == 1:
            order = sort_pairs(tail_group, tail[keys[0]])
        else:
            order = np.lexsort((*(tail[k] for k in reversed(keys)), tail_group))
        tail = {n: a[order] for n, a in tail.items()}
        tail_group = tail_group[order]
        if self.combine is not None:
            tail, tail_group = self._combine(tail, tail_group)
        return tail, tail_group

    def _combine(
        self, tail: dict[str, np.ndarray], group: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        assert self.combine is not None
        n = len(group)
        new_run = np.empty(n, dtype=bool)
        new_run[:1] = True
        same = group[1:] == group[:-1]
        for k in self.unique:
            same &= tail[k][1:] == tail[k][:-1]
        new_run[1:] = ~same
        starts = np.flatnonzero(new_run)
        ends = np.append(starts[1:], n) - 1
        out: dict[str, np.ndarray] = {}
        for name, values in tail.items():
            op = self.combine.get(name, "first")
            if op == "sum":
                out[name] = np.add.reduceat(values, starts)
            elif op == "min":
                out[name] = np.minimum.reduceat(values, starts)
            elif op == "max":
                out[name] = np.maximum.reduceat(values, starts)
            else:
                out[name] = values[starts if op == "first" else ends]
        return out, group[starts]

    def _make_room(self, u: np.ndarray, old: np.ndarray, need: np.ndarray) -> None:
        """Move regions that would overflow to the end of the store, with spare room."""
        moving = np.flatnonzero(need > self.cap[u])
        if len(moving) == 0:
            return
        slots = u[moving]
        cap = np.maximum(8, 2 * need[moving])
        base = self.top + np.cumsum(cap) - cap
        self._reserve(self.top + int(cap.sum()))
        start, length = self.start[slots], old[moving]
        for array in self.cols.values():
            # Into the fresh end of the same array: the ranges never overlap their sources.
            _copy_ranges(array, array, start, base, length)
        if self.index is not None:
            self._indexed(expand_ranges(base, length)[0])
        self.garbage += int(self.cap[slots].sum())
        self.start[slots] = base
        self.cap[slots] = cap
        self.top += int(cap.sum())

    def _reserve(self, rows: int) -> None:
        for name, array in self.cols.items():
            if len(array) < rows:
                # Fourfold: the new rows are untouched zero pages (address space, not memory)
                # until regions move there, and each growth copies every row, moved-out ones
                # included; doubling copied the 30-day count's 17M rows eight times at 4M
                # events, a tenth of its upkeep.
                self.cols[name] = grow(array, max(rows, self.growth * len(array)))

    def _write(
        self,
        u: np.ndarray,
        p: np.ndarray,
        tail_len: np.ndarray,
        tail: dict[str, np.ndarray],
        group: np.ndarray,
    ) -> None:
        at = self.start[u] + p
        seg_start = np.cumsum(tail_len) - tail_len
        for name, values in tail.items():
            column = self.cols[name]
            rows = np.ascontiguousarray(values, dtype=column.dtype)
            _copy_ranges(column, rows, seg_start, at, tail_len)
        if self.index is None and not self.prefixes and WRITE_POS not in tail:
            return
        owner = np.repeat(np.arange(len(u), dtype=np.int64), tail_len)
        dst = None
        if self.index is not None or WRITE_POS in tail:
            dst = expand_ranges(at, tail_len)[0]
            self._indexed(dst)
        live = tail_len > 0
        for spec in self.prefixes:
            column = self.cols[spec.name]
            before = at - 1
            if spec.op == "sum":
                base = np.where(p > 0, column[np.maximum(before, 0)], 0)
                running = base[owner] + segment_cumsum(tail[spec.source], seg_start[live], owner)
            else:
                identity = _I64.max if spec.op == "min" else _I64.min
                base = np.where(p > 0, column[np.maximum(before, 0)], identity)
                pick = np.minimum if spec.op == "min" else np.maximum
                vals = tail[spec.source].copy()
                first = seg_start[live]
                vals[first] = pick(vals[first], base[live])
                running = segment_extreme_scan(vals, seg_start, owner, largest=spec.op == "max")
            running = np.ascontiguousarray(running, dtype=column.dtype)
            _copy_ranges(column, running, seg_start, at, tail_len)
        if WRITE_POS in tail:
            assert dst is not None
            offset = (dst - at[owner] + p[owner]) - tail[WRITE_POS]
            worst = np.zeros(len(u), dtype=np.int64)
            np.maximum.at(worst, owner, np.abs(offset))
            self.disp[u] = np.maximum(self.disp[u], worst)

    def _compact(self) -> None:
        live = np.flatnonzero(self.length > 0)
        cap = np.zeros(len(self.cap), dtype=np.int64)
        cap[live] = np.maximum(8, self.length[live] + self.length[live] // 4)
        base = np.cumsum(cap) - cap
        top = int(cap.sum())
        start, length, to = self.start[live], self.length[live], base[live]
        for name, array in self.cols.items():
            # Room to grow into (untouched zero pages): the next region to move would
            # otherwise copy every array again at once.
            fresh = np.zeros(max(64, 2 * top), dtype=array.dtype)
            _copy_ranges(fresh, array, start, to, length)
            self.cols[name] = fresh
        if self.index is not None:
            self.index.rebuild(self.cols[self.index.column])
        self.start = base
        self.cap = cap
        self.top = top
        self.garbage = 0
