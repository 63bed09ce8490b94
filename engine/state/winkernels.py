"""Compiled kernels for windowed reads among an epoch's own writes, O(log n) per read.

Within an epoch, a read of key k sees a prefix of k's *segment* (its epoch writes in seq
order: the first ``seen`` of them) and wants the aggregate over those whose time key lies in
(a, b]. With timestamps that go backwards the members are not a contiguous run of the
segment, and scanning for them costs the key's event rate times the disorder per read (a hot
key with hours of disorder: thousands of writes per read). Offline instead: per segment, the
writes sorted by time key give each write a *rank*; reads sorted by ``seen`` walk the
segment once, inserting write j into Fenwick trees (count, sum) and a segment tree (extreme
value, first or last position) at its rank before answering the reads that see j + 1
writes; a window (a, b] is a rank range found by two binary searches. Each read and write
costs O(log L) for a segment of L writes, whatever the disorder.

Inputs are the epoch's writes in *grouped* order (segments one after another, seq order
within each): ``gtk`` time keys, ``gv`` values (int64 order keys for min/max, raw bits for
first/last), ``stk`` each segment's time keys sorted ascending, ``rank`` each grouped
write's place in that order (stable: equal time keys keep write order).
"""

from __future__ import annotations

import numpy as np

from engine.state.jit import jit, register_warm_up

__all__ = [
    "EXT_MAX",
    "EXT_MIN",
    "EXT_NONE",
    "POS_FIRST",
    "POS_LAST",
    "POS_NONE",
    "any_front",
    "epoch_windows",
    "front_answers",
]

EXT_NONE, EXT_MIN, EXT_MAX = 0, 1, 2
POS_NONE, POS_FIRST, POS_LAST = 0, 1, 2

_I64_MIN = np.iinfo(np.int64).min
_I64_MAX = np.iinfo(np.int64).max


@jit
def _upper(sorted_tk: np.ndarray, lo: int, hi: int, x: int) -> int:
    """First index in [lo, hi) with sorted_tk > x (hi when none)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if sorted_tk[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@jit
def _tree_set(tree: np.ndarray, leaves: int, at: int, value: int, smallest: bool) -> None:
    """Set leaf ``at`` of a min (``smallest``) or max segment tree and fix its ancestors."""
    k = leaves + at
    tree[k] = value
    k >>= 1
    while k >= 1:
        left, right = tree[2 * k], tree[2 * k + 1]
        if smallest:
            tree[k] = left if left < right else right
        else:
            tree[k] = left if left > right else right
        k >>= 1


@jit
def _tree_best(
    tree: np.ndarray, leaves: int, lo: int, hi: int, smallest: bool, identity: int
) -> int:
    """The smallest (largest) leaf value in [lo, hi), ``identity`` for none."""
    best = identity
    left = lo + leaves
    right = hi + leaves
    while left < right:
        if left & 1:
            x = tree[left]
            if (smallest and x < best) or (not smallest and x > best):
                best = x
            left += 1
        if right & 1:
            right -= 1
            x = tree[right]
            if (smallest and x < best) or (not smallest and x > best):
                best = x
        left >>= 1
        right >>= 1
    return best


@jit
def _epoch_window(
    stk: np.ndarray,
    rank: np.ndarray,
    gv: np.ndarray,
    seg_start: np.ndarray,
    seg_len: np.ndarray,
    lane_seg: np.ndarray,
    lane_seen: np.ndarray,
    lane_a: np.ndarray,
    lane_b: np.ndarray,
    want_sum: bool,
    ext_mode: int,
    pos_mode: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # lane_a is (windows, lanes): several windows that share each lane's upper edge are
    # answered in one pass, inserting every write and searching the upper edge once.
    nw = lane_a.shape[0]
    m = lane_seg.shape[0]
    count = np.zeros((nw, m), dtype=np.int64)
    total = np.zeros((nw, m), dtype=np.int64)
    ext = np.zeros((nw, m), dtype=np.int64)
    pos = np.full((nw, m), -1, dtype=np.int64)
    if m == 0:
        return count, total, ext, pos
    n = rank.shape[0]
    # Lanes usually come grouped by segment in log order already (reads sorted per key, or
    # one per write in grouped order): sort only when they do not.
    grouped = True
    for i in range(1, m):
        if lane_seg[i] < lane_seg[i - 1] or (
            lane_seg[i] == lane_seg[i - 1] and lane_seen[i] < lane_seen[i - 1]
        ):
            grouped = False
            break
    if grouped:
        order = np.arange(m)
    else:
        order = np.argsort(lane_seg * (n + 1) + lane_seen, kind="mergesort")
    max_len = 1
    for s in range(seg_len.shape[0]):
        max_len = max(max_len, seg_len[s])
    width = 1
    while width < max_len:
        width *= 2
    fen_n = np.zeros(max_len + 1, dtype=np.int64)
    fen_s = np.zeros(max_len + 1, dtype=np.int64)
    ext_id = _I64_MAX if ext_mode == EXT_MIN else _I64_MIN
    pos_id = _I64_MAX if pos_mode == POS_FIRST else -1
    tree_e = np.full(2 * width, ext_id, dtype=np.int64)
    tree_p = np.full(2 * width, pos_id, dtype=np.int64)
    i = 0
    while i < m:
        seg = lane_seg[order[i]]
        s0 = seg_start[seg]
        size = seg_len[seg]
        in_order = ext_mode == EXT_NONE
        for k in range(size):
            if not in_order or rank[s0 + k] != k:
                in_order = False
                break
        if in_order:
            # Time keys never drop in this segment: a read's members are the contiguous run
            # of its visible prefix found by two binary searches; sums are prefix differences.
            if want_sum:
                fen_s[0] = 0
                for k in range(size):
                    fen_s[k + 1] = fen_s[k] + gv[s0 + k]
            while i < m and lane_seg[order[i]] == seg:
                lane = order[i]
                top = s0 + lane_seen[lane]
                hi = _upper(stk, s0, top, lane_b[lane]) - s0
                for w in range(nw):
                    lo = _upper(stk, s0, top, lane_a[w, lane]) - s0
                    if hi > lo:
                        count[w, lane] = hi - lo
                        if want_sum:
                            total[w, lane] = fen_s[hi] - fen_s[lo]
                        if pos_mode == POS_FIRST:
                            pos[w, lane] = s0 + lo
                        elif pos_mode == POS_LAST:
                            pos[w, lane] = s0 + hi - 1
                i += 1
            continue
        leaves = 1
        while leaves < size:
            leaves *= 2
        for k in range(size + 1):
            fen_n[k] = 0
            fen_s[k] = 0
        if ext_mode != EXT_NONE:
            for k in range(2 * leaves):
                tree_e[k] = ext_id
        if pos_mode != POS_NONE:
            for k in range(2 * leaves):
                tree_p[k] = pos_id
        j = 0  # writes of the segment inserted so far
        while i < m and lane_seg[order[i]] == seg:
            lane = order[i]
            seen = lane_seen[lane]
            while j < seen:
                r = rank[s0 + j]
                v = gv[s0 + j]
                k = r + 1
                while k <= size:
                    fen_n[k] += 1
                    if want_sum:
                        fen_s[k] += v
                    k += k & -k
                if ext_mode != EXT_NONE:
                    _tree_set(tree_e, leaves, r, v, ext_mode == EXT_MIN)
                if pos_mode != POS_NONE:
                    _tree_set(tree_p, leaves, r, j, pos_mode == POS_FIRST)
                j += 1
            hi = _upper(stk, s0, s0 + size, lane_b[lane]) - s0
            c_hi = 0
            t_hi = 0
            k = hi
            while k > 0:
                c_hi += fen_n[k]
                t_hi += fen_s[k]
                k -= k & -k
            for w in range(nw):
                lo = _upper(stk, s0, s0 + size, lane_a[w, lane]) - s0
                if hi <= lo:
                    continue
                c = c_hi
                t = t_hi
                k = lo
                while k > 0:
                    c -= fen_n[k]
                    t -= fen_s[k]
                    k -= k & -k
                count[w, lane] = c
                total[w, lane] = t
                if c > 0 and ext_mode != EXT_NONE:
                    ext[w, lane] = _tree_best(tree_e, leaves, lo, hi, ext_mode == EXT_MIN, ext_id)
                if c > 0 and pos_mode != POS_NONE:
                    best = _tree_best(tree_p, leaves, lo, hi, pos_mode == POS_FIRST, pos_id)
                    pos[w, lane] = s0 + best
            i += 1
    return count, total, ext, pos


def epoch_windows(
    stk: np.ndarray,
    rank: np.ndarray,
    gv: np.ndarray | None,
    seg_start: np.ndarray,
    seg_len: np.ndarray,
    lane_seg: np.ndarray,
    lane_seen: np.ndarray,
    lane_a: np.ndarray,
    lane_b: np.ndarray,
    *,
    want_sum: bool = False,
    ext_mode: int = EXT_NONE,
    pos_mode: int = POS_NONE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per window w and lane (a read that sees the first ``lane_seen`` writes of segment
    ``lane_seg``, window (``lane_a[w]``, ``lane_b``] over time keys): ``(count, sum,
    extreme, position)`` of its members among the epoch's writes, each of shape
    (windows, lanes). The windows share their upper edges (sliding windows of several
    lengths over the same writes): each write is inserted once and each upper edge searched
    once, whatever the number of windows. ``sum`` with ``want_sum``; ``extreme`` the smallest
    (``EXT_MIN``) or largest (``EXT_MAX``) value; ``position`` the grouped position of the
    first (``POS_FIRST``) or last (``POS_LAST``) member in write order, -1 for none. Entries
    that were not asked for, or of lanes without members, are 0 (-1 for positions)."""

    def c(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=np.int64)

    values = c(rank) if gv is None else c(gv)  # any int64 array of the right length
    result: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] = _epoch_window(
        c(stk),
        c(rank),
        values,
        c(seg_start),
        c(seg_len),
        c(lane_seg),
        c(lane_seen),
        c(np.atleast_2d(lane_a)),
        c(lane_b),
        want_sum,
        ext_mode,
        pos_mode,
    )
    return result


@jit
def any_front(latest: np.ndarray, r: np.ndarray, wts: np.ndarray) -> bool:
    """Whether some read's latest visible write (``latest``, -1: none) is at the read's own
    time ``r`` (write times ``wts``): then the writes' own answers serve those reads."""
    for i in range(len(latest)):
        w = latest[i]
        if w >= 0 and wts[w] == r[i]:
            return True
    return False


@jit
def front_answers(
    latest: np.ndarray,
    r: np.ndarray,
    wts: np.ndarray,
    values: np.ndarray,
    present: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For reads whose latest visible write is at their own time, that write's answer
    (``values``, ``present``, per write); the indices of the other reads, whose answers are
    left 0 / absent for the caller to fill."""
    n = len(latest)
    out = np.zeros(n, dtype=np.int64)
    shown = np.zeros(n, dtype=np.bool_)
    rest = np.empty(n, dtype=np.int64)
    k = 0
    for i in range(n):
        w = latest[i]
        if w >= 0 and wts[w] == r[i]:
            out[i] = values[w]
            shown[i] = present[w]
        else:
            rest[k] = i
            k += 1
    return out, shown, rest[:k]


@register_warm_up
def _warm() -> None:
    one = np.zeros(1, dtype=np.int64)
    any_front(one, one, one)
    front_answers(one, one, one, one, np.ones(1, dtype=np.bool_))
    epoch_windows(one, one, one, one, one + 1, one, one + 1, one[None, :] - 1, one, want_sum=True)
