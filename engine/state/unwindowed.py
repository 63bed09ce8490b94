"""Vectorised unwindowed tables: one value per key across epochs, versions within an epoch.

Across epochs a table keeps, per slot (see :class:`~engine.state.keyindex.KeyIndex`), the
aggregate of all the key's writes so far. ``write_epoch`` computes the *version after each
write* of the epoch (the carried aggregate combined with the key's epoch writes up to it, by a
segmented scan); a read answers with the version of the latest write it sees, or with the
carried value when it sees none of the epoch's writes of its key; ``end_epoch`` keeps the last
version of each key.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.state.epoch import EpochGrouping, EpochWrites, KeySlots, slots_of_reads
from engine.state.jit import jit, register_warm_up
from engine.state.keyindex import KeyIndex
from engine.state.packing import pack_order
from engine.state.segscan import (
    grow,
    segment_cumsum,
    segment_extreme_scan,
    segment_float_sums,
)
from engine.state.spec import AggregateSpec, float_from_order_keys, float_order_keys

__all__ = ["UnwindowedTable"]


def _take(array: np.ndarray, at: np.ndarray) -> np.ndarray:
    """``array[at]``, or zeros when ``array`` is empty (then no lane uses the result)."""
    if len(array) == 0:
        return np.zeros(len(at), dtype=array.dtype)
    out: np.ndarray = array[at]
    return out


@jit
def _additive_reads(
    slots: np.ndarray, latest: np.ndarray, has: np.ndarray, carry: np.ndarray, version: np.ndarray
) -> np.ndarray:
    """Per read: the running value after its latest visible epoch write, else the value
    carried from earlier epochs (0 for a key never written). One pass, no temporaries."""
    out = np.zeros(len(slots), dtype=np.int64)
    for i in range(len(slots)):
        w = latest[i]
        if w >= 0:
            out[i] = version[w]
        else:
            s = slots[i]
            if s >= 0 and has[s]:
                out[i] = carry[s]
    return out


@register_warm_up
def _warm() -> None:
    one = np.zeros(1, dtype=np.int64)
    _additive_reads(one, one, np.ones(1, dtype=np.bool_), one, one)


class UnwindowedTable(KeySlots):
    """The vectorised table for an unwindowed :class:`AggregateSpec` (any kind)."""

    def __init__(self, spec: AggregateSpec) -> None:
        assert spec.window is None
        self.spec = spec
        self._kind = spec.kind
        self._dtype = np.dtype(spec.dtype)
        self._index = KeyIndex()
        self._grouping = EpochGrouping()
        self._has = np.zeros(16, dtype=bool)  # the key has writes before this epoch
        self._carry = np.zeros(16, dtype=self._state_dtype())
        self._carry2 = np.zeros(16, dtype=np.int64)  # ratio totals
        self._values = KeyIndex() if spec.kind == "distinct" else None
        self._pairs = KeyIndex() if spec.kind == "distinct" else None
        self._ep: EpochWrites | None = None
        self._version = np.zeros(0, dtype=self._state_dtype())  # per epoch write
        self._version2 = np.zeros(0, dtype=np.int64)
        self._wvalues = np.zeros(0, dtype=self._state_dtype())
        self._wts = np.zeros(0, dtype=np.int64)
        self._new_pairs = np.zeros(0, dtype=np.int64)

    def _state_dtype(self) -> np.dtype:
        if self._kind in ("min", "max"):
            return np.dtype(np.int64)  # order keys for floats
        if self._kind in ("sum", "first", "last"):
            return self._dtype
        return np.dtype(np.int64)

    # ------------------------------------------------------------------ protocol

    def write_epoch(
        self, keys: np.ndarray, seqs: np.ndarray, ts: np.ndarray, values: np.ndarray | None
    ) -> None:
        slots = self._index.register(keys)
        n = self._index.n_slots
        self._has = grow(self._has, n, False)
        self._carry = grow(self._carry, n)
        self._carry2 = grow(self._carry2, n)
        ep = self._ep = self._grouping.of(slots, seqs)
        self._wts = np.asarray(ts, dtype=np.int64)
        kind = self._kind
        if kind in ("count", "since_last"):
            self._version = self._carry[slots] + ep.rank + 1
            return
        vals = np.asarray(values, dtype=self._dtype)
        if kind in ("min", "max"):
            vals = float_order_keys(vals) if self._dtype.kind == "f" else vals
        self._wvalues = vals
        if kind in ("first", "last"):
            return
        order = ep.order
        seg_of = ep.grouped_seg
        if kind == "sum" and self._dtype.kind == "f":
            init = np.where(self._has[ep.seg_slot], self._carry[ep.seg_slot], 0.0)
            grouped = segment_float_sums(vals[order], ep.seg_start, ep.seg_len, init)
        elif kind in ("sum", "ratio"):
            weights = vals.astype(np.int64)
            grouped = self._carry[slots[order]] + segment_cumsum(
                weights[order], ep.seg_start, seg_of
            )
            self._version2 = self._carry2[slots] + ep.rank + 1
        elif kind in ("min", "max"):
            first = order[ep.seg_start]
            keys0 = vals[order]
            old = self._has[ep.seg_slot]
            pick = np.maximum if kind == "max" else np.minimum
            keys0[ep.seg_start[old]] = pick(vals[first[old]], self._carry[ep.seg_slot[old]])
            grouped = segment_extreme_scan(keys0, ep.seg_start, seg_of, largest=kind == "max")
        else:  # distinct
            grouped = self._distinct_versions(slots, vals, order, seg_of)
        self._version = np.empty(len(slots), dtype=grouped.dtype)
        self._version[order] = grouped

    def read(
        self, keys: np.ndarray, seqs: np.ndarray, ts: np.ndarray, *, before: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        slots = self._index.lookup(np.asarray(keys, dtype=np.int64))
        ep = self._ep
        if ep is not None:
            latest = ep.latest(slots, ep.cutoffs(seqs, before))
        else:
            latest = np.full(len(slots), -1, dtype=np.int64)
        return self._read_at(slots, latest, ts)

    def read_latest(
        self, keys: np.ndarray, latest: np.ndarray, seqs: np.ndarray, ts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`read`, for reads whose latest visible epoch write is already known
        (``latest``: its index among the epoch's writes, -1 for none): no search."""
        latest = np.asarray(latest, dtype=np.int64)
        return self._read_at(slots_of_reads(self._index, self._ep, keys, latest), latest, ts)

    def _read_at(
        self, slots: np.ndarray, latest: np.ndarray, ts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        kind = self._kind
        everywhere = np.ones(len(slots), dtype=bool)
        if kind in ("count", "distinct", "sum") and self._version.dtype == np.int64:
            return _additive_reads(
                np.ascontiguousarray(slots, dtype=np.int64),
                np.ascontiguousarray(latest, dtype=np.int64),
                self._has,
                self._carry,
                self._version,
            ), everywhere
        at = np.maximum(slots, 0)
        has = (slots >= 0) & self._has[at]
        seen = latest >= 0
        w = np.maximum(latest, 0)
        carried = np.where(has, self._carry[at], np.zeros(1, self._carry.dtype))
        if kind in ("count", "distinct", "sum"):
            return np.where(seen, _take(self._version, w), carried), everywhere
        if kind == "ratio":
            hits = np.where(seen, _take(self._version, w), carried)
            total = np.where(seen, _take(self._version2, w), np.where(has, self._carry2[at], 0))
            return np.stack([hits, total], axis=1), everywhere
        present = seen | has
        if kind == "since_last":
            latest_ts = np.where(seen, _take(self._wts, w), carried)
            return np.where(present, np.asarray(ts, dtype=np.int64) - latest_ts, 0), present
        if kind == "first":
            out = np.where(has, carried, _take(self._wvalues, self._first_write_of(w)))
        elif kind == "last":
            out = np.where(seen, _take(self._wvalues, w), carried)
        else:  # min, max
            out = np.where(seen, _take(self._version, w), carried)
            if self._dtype.kind == "f":
                out = float_from_order_keys(out)
        out = np.where(present, out, np.zeros(1, dtype=out.dtype))
        return out.astype(self._dtype), present

    def end_epoch(self) -> None:
        ep = self._ep
        if ep is None:
            return
        self._ep = None
        if ep.n == 0:
            return
        last = ep.last_of_segments()
        first = ep.first_of_segments()
        slots = ep.seg_slot
        kind = self._kind
        if kind == "since_last":
            self._carry[slots] = self._wts[last]
        elif kind == "last":
            self._carry[slots] = self._wvalues[last]
        elif kind == "first":
            fresh = ~self._has[slots]
            self._carry[slots[fresh]] = self._wvalues[first[fresh]]
        else:
            self._carry[slots] = self._version[last]
            if kind == "ratio":
                self._carry2[slots] = self._version2[last]
            if kind == "distinct" and self._pairs is not None:
                self._pairs.register(self._new_pairs)
        self._has[slots] = True

    def __getstate__(self) -> dict[str, Any]:
        """Pickled between epochs (checkpoints), without the last epoch's scratch arrays."""
        state = dict(self.__dict__)
        if self._ep is None:
            for name in ("_version", "_version2", "_wvalues", "_wts", "_new_pairs"):
                state[name] = state[name][:0].copy()
        return state

    def state_nbytes(self) -> int:
        total = self._has.nbytes + self._carry.nbytes + self._carry2.nbytes
        total += self._index.nbytes()
        for index in (self._values, self._pairs):
            if index is not None:
                total += index.nbytes()
        return total

    # ------------------------------------------------------------------ helpers

    def _first_write_of(self, w: np.ndarray) -> np.ndarray:
        ep = self._ep
        if ep is None or ep.n == 0:
            return np.zeros(len(w), dtype=np.int64)
        out: np.ndarray = ep.order[ep.seg_start[ep.seg_of[w]]]
        return out

    def _distinct_versions(
        self, slots: np.ndarray, vals: np.ndarray, order: np.ndarray, seg_of: np.ndarray
    ) -> np.ndarray:
        """Distinct count after each write, grouped order; remembers the epoch's new pairs."""
        assert self._values is not None and self._pairs is not None
        ep = self._ep
        assert ep is not None
        vids = self._values.register(vals)
        if self._index.n_slots >= 1 << 32 or self._values.n_slots >= 1 << 31:
            raise OverflowError("a distinct table supports up to 2**32 keys and 2**31 values")
        pairs = (vids << 32) | slots
        known = self._pairs.lookup(pairs) >= 0
        by_pair = pack_order(pairs) if len(pairs) else np.zeros(0, np.int64)
        sorted_pairs = pairs[by_pair]
        first_of_run = np.diff(sorted_pairs, prepend=-1) != 0
        new = np.zeros(len(pairs), dtype=bool)
        new[by_pair[first_of_run]] = True  # pack_order is stable: the earliest write of a pair
        new &= ~known
        self._new_pairs = pairs[new]
        counts = segment_cumsum(new[order].astype(np.int64), ep.seg_start, seg_of)
        out: np.ndarray = np.where(self._has[slots[order]], self._carry[slots[order]], 0)
        out += counts
        return out
