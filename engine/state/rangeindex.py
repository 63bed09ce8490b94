"""Range arg-extreme over one column of a :class:`~engine.state.regions.RegionStore`.

Windowed min/max, first/last and since_last ask, per read, for the record with the smallest
or largest key (a value, or a write order) among a range of a key's history. Scanning the
range costs its length, and with timestamps that go backwards the range a last-write search
must cover grows with the disorder. A segment tree over the store's rows answers any range
in O(log n) instead: each node holds the row of its span's extreme. The store tells it which
rows it wrote (appends, tail rewrites, region moves) and it rebuilds after compaction; that
upkeep is O(log n) per written row, on top of the store's own amortised O(1).

The tree is not pickled (a checkpoint would carry it twice over): it is rebuilt from the
column on first use after a restore.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.state.jit import jit, register_warm_up

__all__ = ["RangeIndex"]


@jit
def _better(values: np.ndarray, a: int, b: int, largest: bool) -> int:
    """The row of the extreme of rows a and b (-1: empty); a on ties."""
    if a < 0:
        return b
    if b < 0:
        return a
    if largest:
        return b if values[b] > values[a] else a
    return b if values[b] < values[a] else a


@jit
def _build(tree: np.ndarray, leaves: int, values: np.ndarray, rows: int, largest: bool) -> None:
    for i in range(leaves):
        tree[leaves + i] = i if i < rows else -1
    for k in range(leaves - 1, 0, -1):
        tree[k] = _better(values, tree[2 * k], tree[2 * k + 1], largest)


@jit
def _update(
    tree: np.ndarray, leaves: int, values: np.ndarray, rows: np.ndarray, largest: bool
) -> None:
    for i in range(rows.shape[0]):
        k = leaves + rows[i]
        tree[k] = rows[i]
        k >>= 1
        while k >= 1:
            tree[k] = _better(values, tree[2 * k], tree[2 * k + 1], largest)
            k >>= 1


@jit
def _query(
    tree: np.ndarray,
    leaves: int,
    values: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    largest: bool,
) -> np.ndarray:
    out = np.full(lo.shape[0], -1, dtype=np.int64)
    for i in range(lo.shape[0]):
        best = -1
        left = lo[i] + leaves
        right = hi[i] + leaves
        while left < right:
            if left & 1:
                best = _better(values, best, tree[left], largest)
                left += 1
            if right & 1:
                right -= 1
                best = _better(values, best, tree[right], largest)
            left >>= 1
            right >>= 1
        out[i] = best
    return out


class RangeIndex:
    """Arg-min or arg-max segment tree over ``column`` of a store's rows."""

    def __init__(self, column: str, largest: bool) -> None:
        self.column = column
        self.largest = largest
        self._tree: np.ndarray | None = None
        self._leaves = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"column": self.column, "largest": self.largest, "_tree": None, "_leaves": 0}

    def rebuild(self, values: np.ndarray) -> None:
        """Index every row of ``values`` (after a compaction, a growth or a restore)."""
        rows = len(values)
        leaves = 1
        while leaves < max(rows, 1):
            leaves *= 2
        self._tree = np.empty(2 * leaves, dtype=np.int64)
        self._leaves = leaves
        _build(self._tree, leaves, _c(values), rows, self.largest)

    def update(self, values: np.ndarray, rows: np.ndarray) -> None:
        """Rows ``rows`` of ``values`` changed."""
        if self._tree is None or len(values) > self._leaves:
            self.rebuild(values)
            return
        if len(rows):
            _update(self._tree, self._leaves, _c(values), _c(rows), self.largest)

    def query(self, values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Per range [lo, hi) of rows: the row of the extreme, -1 for an empty range; on
        ties, one of the tied rows."""
        if self._tree is None or len(values) > self._leaves:
            self.rebuild(values)
        assert self._tree is not None
        result: np.ndarray = _query(
            self._tree, self._leaves, _c(values), _c(lo), _c(hi), self.largest
        )
        return result


def _c(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.int64)


@register_warm_up
def _warm() -> None:
    values = np.array([3, 1, 2], dtype=np.int64)
    for largest in (False, True):
        index = RangeIndex("v", largest)
        index.rebuild(values)
        index.update(values, np.array([1], dtype=np.int64))
        index.query(values, np.array([0], dtype=np.int64), np.array([3], dtype=np.int64))
