"""Vectorised windowed tables (sliding and hopping; every kind except ``distinct``).

A key's history (writes of earlier epochs) lives in a :class:`RegionStore` sorted by time key:
for a sliding window one record per write, for a hopping window one record per pane (the
pane's aggregate: counts and sums add up, extremes combine, first/last keep their write
order), so a window is the record range [P(a), P(b)) found by two rank searches, and counts,
sums and ratios over it are differences of prefix columns. The epoch's own writes are
answered from their grouped order (see :mod:`engine.state.wparts`). History members all
precede epoch members in log order, which is how first/last/since_last combine the two.

First/last over a sliding history range: when the key's writes were stored in time order
(``disp`` 0) they are the range's ends; when timestamps went backwards, a record sits at
most ``disp`` places from its place in write order, so the earliest (latest) member is among
the first (last) 2*disp + 1 of the range. Min/max over a range from the region's start is
one prefix lookup; over any other range the records are scanned.

With an allowed lateness (:mod:`engine.windows`) each read's lower edge is raised to its
horizon, writes below their writer's horizon are not stored, and the store expires records
below the horizon at each epoch's end. A leader keeps what its followers need too: the lowest
horizon of the group.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.state.clock import NO_TIME, EpochClock
from engine.state.colnames import (
    COUNT,
    EXTREME,
    FIRST_ORDER,
    FIRST_VALUE,
    LAST_ORDER,
    LAST_VALUE,
    ORDER,
    PREFIX_COUNT,
    PREFIX_EXTREME,
    PREFIX_VALUE,
    TIME_KEY,
    VALUE,
    WRITE_POS,
    WRITE_TS,
)
from engine.state.epoch import EpochGrouping, EpochWrites, KeySlots, slots_of_reads
from engine.state.keyindex import KeyIndex
from engine.state.packing import sort_pairs
from engine.state.rangeindex import RangeIndex
from engine.state.regions import Prefix, RegionStore
from engine.state.segscan import grow
from engine.state.spec import AggregateSpec, float_from_order_keys, float_order_keys
from engine.state.winkernels import (
    EXT_MAX,
    EXT_MIN,
    EXT_NONE,
    POS_FIRST,
    POS_LAST,
    POS_NONE,
    any_front,
    epoch_windows,
    front_answers,
)
from engine.state.wparts import EpochPart, TimeKeys, time_ranks

__all__ = ["WindowedTable"]

_I64 = np.dtype(np.int64)


def _store_for(kind: str, sliding: bool) -> RegionStore:
    """Record columns per kind. A sliding record is one write: its count is implicit (a
    range's count is its length) and only first/last need the write order."""
    cols: dict[str, np.dtype] = {TIME_KEY: _I64}
    prefixes: tuple[Prefix, ...] = ()
    combine: dict[str, str] = {}
    if kind in ("count", "ratio") and not sliding:
        cols[COUNT] = _I64
        prefixes += (Prefix(PREFIX_COUNT, COUNT, "sum"),)
        combine[COUNT] = "sum"
    if kind in ("ratio", "sum"):
        cols[VALUE] = _I64
        prefixes += (Prefix(PREFIX_VALUE, VALUE, "sum"),)
        combine[VALUE] = "sum"
    if kind in ("min", "max"):
        cols[EXTREME] = _I64
        prefixes += (Prefix(PREFIX_EXTREME, EXTREME, kind),)  # type: ignore[arg-type]
        combine[EXTREME] = kind
    if kind == "first":
        cols.update({FIRST_ORDER: _I64, FIRST_VALUE: _I64})
        combine.update({FIRST_ORDER: "first", FIRST_VALUE: "first"})
    if kind in ("last", "since_last"):
        cols.update({LAST_ORDER: _I64, LAST_VALUE: _I64})
        combine.update({LAST_ORDER: "last", LAST_VALUE: "last"})
    if sliding and kind in ("first", "last", "since_last"):
        cols[ORDER] = _I64
        cols[WRITE_POS] = _I64
        cols.pop(FIRST_ORDER, None)
        cols.pop(LAST_ORDER, None)
    return RegionStore(
        cols,
        prefixes,
        None if sliding else combine,  # type: ignore[arg-type]
        index=_range_index(kind, sliding),
    )


def _range_index(kind: str, sliding: bool) -> RangeIndex | None:
    """The history's range index of a kind that needs one: the record with the smallest or
    largest value (min, max), or the first or last one written (first, last, since_last)."""
    if kind in ("min", "max"):
        return RangeIndex(EXTREME, largest=kind == "max")
    if kind == "first":
        return RangeIndex(ORDER if sliding else FIRST_ORDER, largest=False)
    if kind in ("last", "since_last"):
        return RangeIndex(ORDER if sliding else LAST_ORDER, largest=True)
    return None


def _ordered_per_slot(gslots: np.ndarray, gtk: np.ndarray) -> bool:
    """Whether the time keys never drop within a slot (records grouped by slot)."""
    down = np.flatnonzero(gtk[1:] < gtk[:-1]) + 1
    return len(down) == 0 or bool(np.all(gslots[down] != gslots[down - 1]))


class WindowedTable(KeySlots):
    """The vectorised table for a windowed :class:`AggregateSpec` other than distinct.

    Sliding tables of one kind fed by identical writes store identical records whatever their
    window lengths (a sliding time key is the timestamp). One of them, the leader, keeps the
    history; the others *follow* it (:meth:`follow`, :meth:`follow_epoch`): they take no
    writes, share its key index, store and epoch arrays, and keep only what depends on their
    length (the lower-edge search hints and the epoch's own-time answers).
    """

    # Class-level defaults. Set lazily (by follow(), by bounded tables, per epoch), so every
    # table, fresh or restored, reads these until then:
    _follows = False
    # A leader's followers and a follower's leader (links, not state: dropped when pickled,
    # made again by follow() after a restore).
    _members: tuple[WindowedTable, ...] = ()
    _lead: WindowedTable | None = None
    _hint: np.ndarray | None = None
    _keep_back: int | None = None
    _front_floor: np.ndarray | None = None
    # Set by __init__ since allowed lateness (1a94ee3), which came after state format 4
    # (37616c9): format-4 snapshots taken in between load without them, as unbounded tables.
    _lateness: int | None = None
    _now = int(NO_TIME)
    _clock: EpochClock | None = None

    def __init__(self, spec: AggregateSpec) -> None:
        assert spec.window is not None and spec.kind != "distinct"
        self.spec = spec
        self._kind = spec.kind
        self._dtype = np.dtype(spec.dtype)
        self._tk = TimeKeys(spec.window)
        self._index = KeyIndex()
        self._grouping = EpochGrouping()
        self._store = _store_for(spec.kind, self._tk.sliding)
        self._writes = np.zeros(16, dtype=np.int64)  # writes so far per slot
        self._order = 0
        self._ep: EpochWrites | None = None
        self._g: dict[str, np.ndarray] = {}  # epoch writes' columns, grouped order
        # The epoch's time keys sorted per segment, and each grouped write's rank there.
        self._stk = self._rank = np.zeros(0, dtype=np.int64)
        self._ts = np.zeros(0, dtype=np.int64)  # the epoch's write times, write order
        self._front: tuple[np.ndarray, np.ndarray] | None = None
        self._lateness = spec.window.lateness
        # How far behind the stream time the stored history must reach (time-key units;
        # sliding only, where a time key is a time): None keeps everything.
        if self._lateness is not None and self._tk.sliding:
            self._keep_back = self._lateness + self._tk.length
        self._now = int(NO_TIME)  # stream time at the end of the previous epochs
        self._clock = None

    # ------------------------------------------------------------------ followers

    def can_follow(self, leader: WindowedTable) -> bool:
        """Whether this table holds the same records as ``leader`` given the same writes."""
        return (
            self._tk.sliding
            and leader._tk.sliding
            and self._kind == leader._kind
            and self._dtype == leader._dtype
        )

    def follow(self, leader: WindowedTable) -> None:
        """From now on, share ``leader``'s history instead of keeping one (see the class
        docstring); the runtime then writes only to the leader and calls
        :meth:`follow_epoch` after each of its writes."""
        assert self.can_follow(leader) and not leader._follows
        if self._keep_back is None or leader._keep_back is None:
            leader._keep_back = None
        else:
            leader._keep_back = max(leader._keep_back, self._keep_back)
        self._follows = True
        self._lead = leader
        if not any(t is self for t in leader._members):
            leader._members = (*leader._members, self)
        self._index = leader._index
        self._store = leader._store
        self._hint = np.zeros(len(self._store.hint), dtype=np.int64)
        self._ep = None

    def follow_epoch(self, leader: WindowedTable) -> None:
        """Take the epoch ``leader`` was just given (its writes are this table's too)."""
        assert self._follows and self._store is leader._store
        self._ep = leader._ep
        self._g, self._ts = leader._g, leader._ts
        self._stk, self._rank = leader._stk, leader._rank
        self._front = None

    def _hints(self) -> np.ndarray | None:
        if not self._follows:
            return None
        hint = self._hint
        assert hint is not None
        if len(hint) < len(self._store.hint):
            hint = self._hint = grow(hint, len(self._store.hint))
        return hint

    # ------------------------------------------------------------------ stream time

    def set_clock(self, clock: EpochClock) -> None:
        """The epoch's stream-time clock (tables with an allowed lateness only)."""
        self._clock = clock

    def _read_floor(self, seqs: np.ndarray) -> np.ndarray | None:
        """Per read: the time key below which it sees nothing (its horizon - 1), or None
        without a lateness."""
        if self._lateness is None:
            return None
        assert self._clock is not None, "a bounded table needs set_clock every epoch"
        stream = self._clock.at(seqs, self._now)
        return self._tk.horizon_floor(stream, self._lateness)

    def _store_floor(self, stream: np.ndarray) -> np.ndarray | None:
        """The time key at or below which no table of the group (this leader and its
        followers) can read history again, at stream times ``stream``."""
        if self._lateness is None or (self._tk.sliding and self._keep_back is None):
            return None
        return self._tk.horizon_floor(stream, self._lateness, self._keep_back)

    # ------------------------------------------------------------------ protocol

    def write_epoch(
        self, keys: np.ndarray, seqs: np.ndarray, ts: np.ndarray, values: np.ndarray | None
    ) -> None:
        slots = self._index.register(keys)
        self._writes = grow(self._writes, self._index.n_slots)
        self._store.ensure_slots(self._index.n_slots)
        ep = self._ep = self._grouping.of(slots, seqs)
        ts = np.asarray(ts, dtype=np.int64)
        tk = self._tk.of(ts)
        order = ep.order
        gtk = tk[order]
        self._stk, self._rank = time_ranks(ep, gtk)
        g: dict[str, np.ndarray] = {TIME_KEY: gtk}
        kind = self._kind
        if kind == "since_last":
            g[WRITE_TS] = ts[order]
        if kind in ("first", "last", "since_last"):
            g[ORDER] = self._order + order
            g[WRITE_POS] = (self._writes[slots] + ep.rank)[order]
        self._order += ep.n
        if kind in ("sum", "ratio", "min", "max", "first", "last"):
            vals = np.asarray(values, dtype=self._dtype)
            if kind in ("min", "max", "first", "last"):
                raw = vals.view(np.int64) if self._dtype.kind == "f" else vals.astype(np.int64)
                if kind in ("min", "max") and self._dtype.kind == "f":
                    raw = float_order_keys(vals)
                g[VALUE] = raw[order]
            else:
                g[VALUE] = vals.astype(np.int64)[order]
        self._g = g
        self._ts = ts
        self._front = None

    def read(
        self, keys: np.ndarray, seqs: np.ndarray, ts: np.ndarray, *, before: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        slots = self._index.lookup(np.asarray(keys, dtype=np.int64))
        r = np.asarray(ts, dtype=np.int64)
        floor = self._read_floor(seqs)
        m = len(slots)
        ep = self._ep
        if ep is None or ep.n == 0:
            return self._sorted_answer(slots, np.zeros(m, np.int64), np.full(m, -1), r, floor)
        cut = ep.cutoffs(seqs, before)
        return self._read_at(slots, cut, ep.latest(slots, cut), r, floor)

    def read_latest(
        self, keys: np.ndarray, latest: np.ndarray, seqs: np.ndarray, ts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`read`, for reads whose latest visible epoch write is already known
        (``latest``: its index among the epoch's writes, -1 for none): no search."""
        latest = np.asarray(latest, dtype=np.int64)
        r = np.asarray(ts, dtype=np.int64)
        floor = self._read_floor(seqs)
        ep = self._ep
        slots = slots_of_reads(self._index, ep, keys, latest)
        if ep is None or ep.n == 0:
            m = len(slots)
            return self._sorted_answer(slots, np.zeros(m, np.int64), np.full(m, -1), r, floor)
        # The latest visible write orders a slot's reads by log position, as a cutoff would.
        return self._read_at(slots, latest + 1, latest, r, floor)

    def _read_at(
        self,
        slots: np.ndarray,
        cut: np.ndarray,
        latest: np.ndarray,
        r: np.ndarray,
        floor: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        ep = self._ep
        assert ep is not None
        # A read whose latest visible write is at its own time (typically: the event that just
        # wrote the key reads it) gets that write's answer, computed once per epoch. With a
        # lateness the two must also share the horizon (they may not: the stream time can
        # move on between two events with the same timestamp).
        latest = np.ascontiguousarray(latest, dtype=np.int64)
        r = np.ascontiguousarray(r, dtype=np.int64)
        if not any_front(latest, r, self._ts):
            return self._sorted_answer(slots, cut, latest, r, floor)
        self._front_answers()
        assert self._front is not None
        if floor is None and self._front[0].dtype == np.int64 and self._front[0].ndim == 1:
            # The usual case (a count, no lateness) in one compiled pass.
            values, present, rest = front_answers(latest, r, self._ts, *self._front)
        else:
            values, present, rest = self._front_at(latest, r, floor)
        if len(rest):
            v, p = self._sorted_answer(
                slots[rest],
                cut[rest],
                latest[rest],
                r[rest],
                None if floor is None else floor[rest],
            )
            values[rest] = v
            present[rest] = p
        return values, present

    def _front_at(
        self, latest: np.ndarray, r: np.ndarray, floor: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`front_answers` in numpy passes, for any value type and a lateness."""
        assert self._front is not None
        at = np.maximum(latest, 0)
        front = (latest >= 0) & (self._ts[at] == r)
        if floor is not None:
            assert self._front_floor is not None
            front &= self._front_floor[at] == floor
        return self._front[0][at], self._front[1][at], np.flatnonzero(~front)

    def _front_answers(self) -> None:
        """Every epoch write's own answer (a read at its time that sees it last), once; for
        this table's whole leader group at once (they share the writes: one kernel pass
        answers every window length)."""
        if self._front is not None:
            return
        ep = self._ep
        assert ep is not None
        group = [t for t in self._group() if t._front is None and t._ep is ep and t._clocked()]
        if self not in group:
            group = [self]
        order = ep.order
        floors: list[np.ndarray | None] = []
        for table in group:
            wfloor = table._read_floor(ep.seqs)
            table._front_floor = wfloor
            floors.append(None if wfloor is None else wfloor[order])
        answers = _answers_of(group, ep.slots[order], order, self._ts[order], floors)
        for table, (values, present) in zip(group, answers, strict=True):
            front = (np.empty_like(values), np.empty(ep.n, dtype=bool))
            front[0][order] = values
            front[1][order] = present
            table._front = front

    def _group(self) -> tuple[WindowedTable, ...]:
        """This table's leader and the leader's followers (just this table when alone)."""
        lead = self._lead if self._follows and self._lead is not None else self
        return (lead, *lead._members)

    def _clocked(self) -> bool:
        """Whether this table can place its reads' horizons now (no lateness, or a clock)."""
        return self._lateness is None or self._clock is not None

    def _sorted_answer(
        self,
        slots: np.ndarray,
        cut: np.ndarray,
        latest: np.ndarray,
        r: np.ndarray,
        floor: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Answers in the given order, computed per key in log order (so that the rank
        searches become merges)."""
        perm = sort_pairs(slots + 1, cut)
        values, present = self._answer(
            slots[perm], latest[perm], r[perm], None if floor is None else floor[perm]
        )
        out = np.empty_like(values)
        out[perm] = values
        shown = np.empty(len(slots), dtype=bool)
        shown[perm] = present
        return out, shown

    def _answer(
        self, slots: np.ndarray, latest: np.ndarray, r: np.ndarray, floor: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Reads of ``slots`` at times ``r`` that see the epoch up to write ``latest``, and
        nothing at or below time key ``floor``."""
        return _answers_of([self], slots, latest, r, [floor])[0]

    def _combine(
        self,
        slots: np.ndarray,
        a: np.ndarray,
        b: np.ndarray,
        lanes: np.ndarray,
        mem: EpochPart | None,
        r: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Answers of windows (``a``, ``b``] from the history and the epoch's members
        ``mem`` of read ``lanes``."""
        m = len(slots)
        ha, hb = self._store.rank2(slots, a, b, self._hints())
        start = self._store.start[np.maximum(slots, 0)]
        kind = self._kind
        if kind in ("count", "sum", "ratio"):
            return self._additive(slots, start, ha, hb, lanes, mem, m)
        if kind in ("min", "max"):
            return self._extreme(slots, start, ha, hb, lanes, mem, m)
        return self._positional(slots, start, ha, hb, lanes, mem, m, r)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled between epochs (checkpoints), without the last epoch's scratch arrays."""
        state = dict(self.__dict__)
        state.pop("_members", None)
        state.pop("_lead", None)
        if self._ep is None:
            empty = self._ts[:0].copy()
            state.update(_g={}, _ts=empty, _stk=empty, _rank=empty, _front=None)
        return state

    def end_epoch(self) -> None:
        ep = self._ep
        clock, self._clock = self._clock, None
        self._ep = None
        self._front_floor = None
        if not self._follows and ep is not None and ep.n:  # a follower's leader stores it
            self._store_epoch(ep, clock)
        if clock is not None:
            self._now = clock.end(self._now)
        if self._follows:
            return
        floor = self._store_floor(np.array([self._now], dtype=np.int64))
        if floor is not None and self._now != NO_TIME:
            rebuilt = self._store.expire(int(floor[0]))
            self._writes[rebuilt] = self._store.length[rebuilt]

    def _store_epoch(self, ep: EpochWrites, clock: EpochClock | None) -> None:
        g = self._g
        gslots = ep.slots[ep.order]
        kind = self._kind
        floor = None if clock is None else self._store_floor(clock.at(ep.seqs, self._now))
        if floor is not None and bool((g[TIME_KEY] <= floor[ep.order]).any()):
            # Writes already below the group's horizon: no read can see them again.
            keep = np.flatnonzero(g[TIME_KEY] > floor[ep.order])
            g = {name: column[keep] for name, column in g.items()}
            gslots = gslots[keep]
            if WRITE_POS in g:  # write positions among the kept records only
                first = np.flatnonzero(np.diff(gslots, prepend=-1) != 0)
                size = np.diff(first, append=len(gslots))
                rank = np.arange(len(gslots)) - np.repeat(first, size)
                g[WRITE_POS] = self._writes[gslots] + rank
            kept = np.bincount(gslots, minlength=len(self._writes))
            self._writes += kept[: len(self._writes)]
            if len(gslots) == 0:
                return
        else:
            self._writes[ep.seg_slot] += ep.seg_len
        recs: dict[str, np.ndarray] = {TIME_KEY: g[TIME_KEY]}
        if self._tk.sliding:
            cols = self._store.cols
            if ORDER in cols:
                recs[ORDER] = g[ORDER]
                recs[WRITE_POS] = g[WRITE_POS]
            if VALUE in cols:
                recs[VALUE] = g[VALUE]
            if EXTREME in cols:
                recs[EXTREME] = g[VALUE]
            if FIRST_VALUE in cols:
                recs[FIRST_VALUE] = g[VALUE]
            if LAST_VALUE in cols:
                recs[LAST_VALUE] = g[WRITE_TS if kind == "since_last" else VALUE]
            # Within a slot: by time key, then write order (grouped order is write order).
            if not _ordered_per_slot(gslots, g[TIME_KEY]):
                o = sort_pairs(gslots, g[TIME_KEY])  # stable: write order on ties
                recs = {k: v[o] for k, v in recs.items()}
                gslots = gslots[o]
            self._store.add(gslots, recs)
            return
        self._store.add(*self._panes(gslots, g))

    def state_nbytes(self) -> int:
        if self._follows and self._hint is not None:
            return self._hint.nbytes  # the rest is the leader's
        return self._store.nbytes() + self._writes.nbytes + self._index.nbytes()

    # ------------------------------------------------------------------ epoch -> records

    def _panes(
        self, gslots: np.ndarray, g: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One record per (slot, pane) of the epoch's writes."""
        o = sort_pairs(gslots, g[TIME_KEY])  # stable: write order within a pane
        slots, tk = gslots[o], g[TIME_KEY][o]
        n = len(o)
        new = np.empty(n, dtype=bool)
        new[:1] = True
        new[1:] = (slots[1:] != slots[:-1]) | (tk[1:] != tk[:-1])
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], n) - 1
        recs: dict[str, np.ndarray] = {TIME_KEY: tk[starts]}
        kind = self._kind
        if kind in ("count", "ratio"):
            recs[COUNT] = np.diff(np.append(starts, n))
        if kind in ("ratio", "sum"):
            recs[VALUE] = np.add.reduceat(g[VALUE][o], starts)
        if kind in ("min", "max"):
            pick = np.minimum if kind == "min" else np.maximum
            recs[EXTREME] = pick.reduceat(g[VALUE][o], starts)
        if kind == "first":
            recs.update({FIRST_ORDER: g[ORDER][o][starts], FIRST_VALUE: g[VALUE][o][starts]})
        if kind in ("last", "since_last"):
            src = g[VALUE] if kind == "last" else g[WRITE_TS]
            recs.update({LAST_ORDER: g[ORDER][o][ends], LAST_VALUE: src[o][ends]})
        return slots[starts], recs

    # ------------------------------------------------------------------ aggregates

    def _prefix(self, name: str, start: np.ndarray, upto: np.ndarray) -> np.ndarray:
        """Prefix column ``name`` over a region's first ``upto`` records (0 when none)."""
        column = self._store.cols[name]
        return np.where(upto > 0, column[np.maximum(start + upto - 1, 0)], 0)

    def _additive(
        self,
        slots: np.ndarray,
        start: np.ndarray,
        ha: np.ndarray,
        hb: np.ndarray,
        lanes: np.ndarray,
        mem: EpochPart | None,
        m: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        kind = self._kind
        if kind == "count" and self._tk.sliding:
            main = hb - ha
        else:
            name = PREFIX_COUNT if kind == "count" else PREFIX_VALUE
            main = self._prefix(name, start, hb) - self._prefix(name, start, ha)
        total = None
        if kind == "ratio":
            if self._tk.sliding:
                total = hb - ha
            else:
                total = self._prefix(PREFIX_COUNT, start, hb) - self._prefix(
                    PREFIX_COUNT, start, ha
                )
        if mem is not None and len(lanes):
            # All reads (lanes 0..m-1): add in place, not through the index.
            at = slice(None) if len(lanes) == m else lanes
            if kind == "count":
                main[at] += mem.count
            else:
                main[at] += mem.total
                if total is not None:
                    total[at] += mem.count
        present = np.ones(m, dtype=bool)
        if total is not None:
            return np.stack([main, total], axis=1), present
        return main, present

    def _extreme(
        self,
        slots: np.ndarray,
        start: np.ndarray,
        ha: np.ndarray,
        hb: np.ndarray,
        lanes: np.ndarray,
        mem: EpochPart | None,
        m: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        largest = self._kind == "max"
        pick = np.maximum if largest else np.minimum
        identity = np.iinfo(np.int64).min if largest else np.iinfo(np.int64).max
        present = hb > ha
        out = np.full(m, identity, dtype=np.int64)
        from_start = np.flatnonzero(present & (ha == 0))
        out[from_start] = self._store.cols[PREFIX_EXTREME][start[from_start] + hb[from_start] - 1]
        middle = np.flatnonzero(present & (ha > 0))
        if len(middle):
            best = self._range_best(start[middle] + ha[middle], start[middle] + hb[middle])
            out[middle] = self._store.cols[EXTREME][best]
        if mem is not None and len(lanes):
            hit = mem.count > 0
            out[lanes] = np.where(hit, pick(out[lanes], mem.ext), out[lanes])
            present[lanes] |= hit
        out = np.where(present, out, 0)
        if self._dtype.kind == "f":
            return float_from_order_keys(out), present
        return out, present

    def _range_best(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Per history range [lo, hi) of store rows: the row of its extreme by the store's
        range index (-1 when empty); O(log n) each, however long the range."""
        store = self._store
        if store.index is None:  # a table restored from before the index existed
            store.index = _range_index(self._kind, self._tk.sliding)
        return store.range_best(lo, hi)

    def _positional(
        self,
        slots: np.ndarray,
        start: np.ndarray,
        ha: np.ndarray,
        hb: np.ndarray,
        lanes: np.ndarray,
        mem: EpochPart | None,
        m: int,
        r: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        first = self._kind == "first"
        best = self._range_best(start + ha, start + hb)
        found = best >= 0
        value_col = FIRST_VALUE if first else LAST_VALUE
        out = np.where(found, self._store.cols[value_col][np.maximum(best, 0)], 0)
        present = found.copy()
        if mem is not None and len(lanes):
            hit = mem.count > 0
            src = self._g[WRITE_TS if self._kind == "since_last" else VALUE]
            value = src[np.where(hit, mem.pos, 0)]
            take = hit & ~found[lanes] if first else hit
            out[lanes] = np.where(take, value, out[lanes])
            present[lanes] |= hit
        if self._kind == "since_last":
            return np.where(present, r - out, 0), present
        if self._dtype.kind == "f":
            return out.view(np.float64), present
        return out.astype(self._dtype), present


def _answers_of(
    tables: list[WindowedTable],
    slots: np.ndarray,
    latest: np.ndarray,
    r: np.ndarray,
    floors: list[np.ndarray | None],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per table: reads of ``slots`` at times ``r`` that see the epoch up to write
    ``latest`` and nothing at or below that table's time key in ``floors``. Several tables
    must be one leader group (same writes, epoch and time keys, sliding): their windows then
    differ in the lower edge only, and one kernel pass finds every table's epoch members."""
    lead = tables[0]
    assert len(tables) == 1 or all(t._tk.sliding for t in tables)
    edges = []
    for table, floor in zip(tables, floors, strict=True):
        a, b = table._tk.bounds(r)
        if floor is not None:
            a = np.maximum(a, floor)
        edges.append((a, b))
    lanes = np.flatnonzero(latest >= 0)
    # Every read sees an epoch write (a table's own writes answered at their times): take
    # the reads' columns as they are rather than through an index of all of them.
    every = len(lanes) == len(latest)
    parts: list[EpochPart | None] = [None] * len(tables)
    ep = lead._ep
    kind = lead._kind
    if ep is not None and len(lanes):
        w = latest if every else latest[lanes]
        gv = lead._g.get(WRITE_TS if kind == "since_last" else VALUE)
        count, total, ext, pos = epoch_windows(
            lead._stk,
            lead._rank,
            gv,
            ep.seg_start,
            ep.seg_len,
            ep.seg_of[w],
            ep.rank[w] + 1,
            np.stack([a if every else a[lanes] for a, _ in edges]),
            # A sliding window's upper edge is the read's time.
            edges[0][1] if every else edges[0][1][lanes],
            want_sum=kind in ("sum", "ratio"),
            ext_mode=EXT_MIN if kind == "min" else EXT_MAX if kind == "max" else EXT_NONE,
            pos_mode=POS_FIRST
            if kind == "first"
            else POS_LAST
            if kind in ("last", "since_last")
            else POS_NONE,
        )
        parts = [EpochPart(count[i], total[i], ext[i], pos[i]) for i in range(len(tables))]
    return [
        table._combine(slots, a, b, lanes, mem, r)
        for table, (a, b), mem in zip(tables, edges, parts, strict=True)
    ]
