"""A compiled kernel for windowed distinct counts: distinct visible values in ranges, in
O(log^2 n) per element and read whatever the disorder.

For one key, the history records and the epoch writes that a batch of reads can reach are
laid out in time order (the table's "Z" array, see :mod:`engine.state.distinct`): element z
has a value and becomes visible at time ``vt`` (0 for history; for the epoch write of rank
k, k + 1). A read sees the elements with ``vt <= seen`` and wants the number of distinct
values among them in its range [lo, hi) of Z.

Among the elements visible at some moment, call two elements of one value *neighbours* when
no visible element of that value lies between them. Then the distinct count of [lo, hi) is
the number of visible elements in it minus the neighbour pairs (p, i) with lo <= p and
i < hi: every value present contributes its elements minus its inner gaps, i.e. one. As
elements become visible the sets change by events: element x appears (+1 at (x, x)); it
splits its neighbours p < x < s (+1 for the pair (p, s) leaving, -1 each for (p, x) and
(x, s)). Each read sums the weights of the events before it with ``x >= lo`` and ``y < hi``:
offline 2D dominance over time, answered by a sweep with a Fenwick tree for the events at
time 0 (the history), by a sweep over time for the appearing elements, and by CDQ divide
and conquer for the pair events. The neighbours of an
appearing element come from a Fenwick tree over the elements ordered by (value, position).
"""

from __future__ import annotations

import numpy as np

from engine.state.jit import jit, register_warm_up

__all__ = ["distinct_in_ranges"]


#: Groups of at most this many elements are counted range by range (O(elements) per read).
_SMALL = 48
#: Events per block at the bottom of the divide and conquer, compared pair by pair.
_BASE = 16


@jit
def _fen_add(tree: np.ndarray, n: int, i: int, w: int) -> None:
    k = i + 1
    while k <= n:
        tree[k] += w
        k += k & -k


@jit
def _fen_prefix(tree: np.ndarray, i: int) -> int:
    """Sum over indices < i."""
    s = 0
    k = i
    while k > 0:
        s += tree[k]
        k -= k & -k
    return s


@jit
def _fen_kth(tree: np.ndarray, n: int, k: int) -> int:
    """Index of the k-th (1-based) present element of a 0/1 Fenwick tree."""
    pos = 0
    step = 1
    while step * 2 <= n:
        step *= 2
    while step > 0:
        nxt = pos + step
        if nxt <= n and tree[nxt] < k:
            pos = nxt
            k -= tree[nxt]
        step >>= 1
    return pos  # 0-based index of the element


@jit
def _static_part(
    ex: np.ndarray,
    ey: np.ndarray,
    ew: np.ndarray,
    ne: int,
    qlo: np.ndarray,
    qhi: np.ndarray,
    nq: int,
    out: np.ndarray,
    fen: np.ndarray,
    nz: int,
) -> None:
    """out[q] += sum of ew over events with ex >= qlo[q] and ey < qhi[q]."""
    eo = np.argsort(-ex[:ne], kind="mergesort")
    qo = np.argsort(-qlo[:nq], kind="mergesort")
    for k in range(nz + 1):
        fen[k] = 0
    j = 0
    for t in range(nq):
        q = qo[t]
        while j < ne and ex[eo[j]] >= qlo[q]:
            e = eo[j]
            _fen_add(fen, nz, ey[e], ew[e])
            j += 1
        out[q] += _fen_prefix(fen, qhi[q])


@jit
def _cdq(
    ex: np.ndarray,
    ey: np.ndarray,
    ew: np.ndarray,
    eq: np.ndarray,
    k_total: int,
    out: np.ndarray,
    fen: np.ndarray,
    nz: int,
) -> None:
    """Events 0..k_total-1 in time order: updates (eq < 0) add ew at (ex, ey); queries (eq =
    read) sum the updates before them with ex >= their ex (lo) and ey < their ey (hi)."""
    if k_total < 2:
        return
    cur = np.arange(k_total)
    tmp = np.empty(k_total, dtype=np.int64)
    for k in range(nz + 1):
        fen[k] = 0
    # Blocks of _BASE events: pairs within a block compared directly (cheaper than the
    # Fenwick tree's log n per pair at this size), then each block sorted by (ex descending,
    # updates first) for the merges above it.
    for lo_block in range(0, k_total, _BASE):
        hi_block = min(lo_block + _BASE, k_total)
        for j in range(lo_block, hi_block):
            if eq[j] < 0:
                continue
            for u in range(lo_block, j):
                if eq[u] < 0 and ex[u] >= ex[j] and ey[u] < ey[j]:
                    out[eq[j]] += ew[u]
        for j in range(lo_block + 1, hi_block):
            e = cur[j]
            k = j - 1
            while k >= lo_block and (
                ex[cur[k]] < ex[e] or (ex[cur[k]] == ex[e] and eq[cur[k]] >= 0 and eq[e] < 0)
            ):
                cur[k + 1] = cur[k]
                k -= 1
            cur[k + 1] = e
    width = _BASE
    while width < k_total:
        lo_block = 0
        while lo_block < k_total:
            mid = min(lo_block + width, k_total)
            hi_block = min(lo_block + 2 * width, k_total)
            if mid < hi_block:
                # Updates of the left half into the queries of the right half; both halves
                # are sorted by ex descending, updates before queries on ties.
                p = lo_block
                for r in range(mid, hi_block):
                    e = cur[r]
                    if eq[e] < 0:
                        continue
                    while p < mid and ex[cur[p]] >= ex[e]:
                        u = cur[p]
                        if eq[u] < 0:
                            _fen_add(fen, nz, ey[u], ew[u])
                        p += 1
                    out[eq[e]] += _fen_prefix(fen, ey[e])
                for r in range(lo_block, p):
                    u = cur[r]
                    if eq[u] < 0:
                        _fen_add(fen, nz, ey[u], -ew[u])
            # Merge the halves by (ex descending, updates first).
            a, b, o = lo_block, mid, lo_block
            while a < mid and b < hi_block:
                ea, eb = cur[a], cur[b]
                take_a = ex[ea] > ex[eb] or (ex[ea] == ex[eb] and (eq[ea] < 0 or eq[eb] >= 0))
                if take_a:
                    tmp[o] = ea
                    a += 1
                else:
                    tmp[o] = eb
                    b += 1
                o += 1
            while a < mid:
                tmp[o] = cur[a]
                a += 1
                o += 1
            while b < hi_block:
                tmp[o] = cur[b]
                b += 1
                o += 1
            lo_block = hi_block
        cur, tmp = tmp, cur
        width *= 2


@jit
def _distinct_in_ranges(
    zv: np.ndarray,
    vt: np.ndarray,
    zoff: np.ndarray,
    qlo: np.ndarray,
    qhi: np.ndarray,
    qseen: np.ndarray,
    qoff: np.ndarray,
) -> np.ndarray:
    out = np.zeros(qlo.shape[0], dtype=np.int64)
    groups = zoff.shape[0] - 1
    top = 0
    for z in range(zv.shape[0]):
        top = max(top, zv[z] + 1)
    stamp = np.full(top, -1, dtype=np.int64)  # per value: the last read that counted it
    for g in range(groups):
        z0, z1 = zoff[g], zoff[g + 1]
        q0, q1 = qoff[g], qoff[g + 1]
        nz, nq = z1 - z0, q1 - q0
        if nq == 0 or nz == 0:
            continue
        if nz <= _SMALL:
            # A key with few elements in reach (most keys of a large key space): counting
            # each range directly is cheaper than building the trees.
            for q in range(q0, q1):
                c = 0
                for z in range(qlo[q], qhi[q]):
                    if vt[z] <= qseen[q] and stamp[zv[z]] != q:
                        stamp[zv[z]] = q
                        c += 1
                out[q] = c
            continue
        gv = zv[z0:z1]
        gt = vt[z0:z1]
        lo = qlo[q0:q1] - z0
        hi = qhi[q0:q1] - z0
        res = np.zeros(nq, dtype=np.int64)
        fen = np.zeros(nz + 1, dtype=np.int64)
        # Elements by (value, position): neighbours are adjacent present ones.
        uo = np.argsort(gv, kind="mergesort")
        where = np.empty(nz, dtype=np.int64)
        for k in range(nz):
            where[uo[k]] = k
        # Time 0: the history and its neighbour pairs.
        cap = 2 * nz + 1
        sx = np.empty(cap, dtype=np.int64)
        sy = np.empty(cap, dtype=np.int64)
        sw = np.empty(cap, dtype=np.int64)
        ns = 0
        present = 0
        last = -1
        for k in range(nz):
            z = uo[k]
            if gt[z] != 0:
                continue
            sx[ns], sy[ns], sw[ns] = z, z, 1
            ns += 1
            if last >= 0 and gv[last] == gv[z]:
                sx[ns], sy[ns], sw[ns] = last, z, -1
                ns += 1
            last = z
            _fen_add(fen, nz, k, 1)
            present += 1
        _static_part(sx, sy, sw, ns, lo, hi, nq, res, np.zeros(nz + 1, np.int64), nz)
        # Later: epoch writes appear in vt order; reads interleave by seen.
        epoch = np.empty(nz, dtype=np.int64)
        ne = 0
        for z in range(nz):
            if gt[z] != 0:
                epoch[ne] = z
                ne += 1
        if ne > 0:
            epoch = epoch[:ne][np.argsort(gt[epoch[:ne]], kind="mergesort")]
            qorder = np.argsort(qseen[q0:q1], kind="mergesort")
            kcap = 3 * ne + nq
            ex = np.empty(kcap, dtype=np.int64)
            ey = np.empty(kcap, dtype=np.int64)
            ew = np.empty(kcap, dtype=np.int64)
            eq = np.empty(kcap, dtype=np.int64)
            # Epoch elements visible so far, by position: a read counts those in its range
            # when it is reached (a sweep), so only the pair events need the divide and
            # conquer.
            shown = np.zeros(nz + 1, dtype=np.int64)
            k_total = 0
            t = 0
            for j in range(ne):
                x = epoch[j]
                while t < nq and qseen[q0 + qorder[t]] < gt[x]:
                    qi = qorder[t]
                    ex[k_total], ey[k_total], ew[k_total], eq[k_total] = lo[qi], hi[qi], 0, qi
                    res[qi] += _fen_prefix(shown, hi[qi]) - _fen_prefix(shown, lo[qi])
                    k_total += 1
                    t += 1
                u = where[x]
                c = _fen_prefix(fen, u)
                pred = -1
                succ = -1
                if c > 0:
                    pz = uo[_fen_kth(fen, nz, c)]
                    if gv[pz] == gv[x]:
                        pred = pz
                if c < present:
                    sz = uo[_fen_kth(fen, nz, c + 1)]
                    if gv[sz] == gv[x]:
                        succ = sz
                _fen_add(shown, nz, x, 1)
                if pred >= 0:
                    ex[k_total], ey[k_total], ew[k_total], eq[k_total] = pred, x, -1, -1
                    k_total += 1
                if succ >= 0:
                    ex[k_total], ey[k_total], ew[k_total], eq[k_total] = x, succ, -1, -1
                    k_total += 1
                if pred >= 0 and succ >= 0:
                    ex[k_total], ey[k_total], ew[k_total], eq[k_total] = pred, succ, 1, -1
                    k_total += 1
                _fen_add(fen, nz, u, 1)
                present += 1
            while t < nq:
                qi = qorder[t]
                ex[k_total], ey[k_total], ew[k_total], eq[k_total] = lo[qi], hi[qi], 0, qi
                res[qi] += _fen_prefix(shown, hi[qi]) - _fen_prefix(shown, lo[qi])
                k_total += 1
                t += 1
            _cdq(ex, ey, ew, eq, k_total, res, fen, nz)
        for k in range(nq):
            out[q0 + k] = res[k] if hi[k] > lo[k] else 0
    return out


def distinct_in_ranges(
    zv: np.ndarray,
    vt: np.ndarray,
    zoff: np.ndarray,
    qlo: np.ndarray,
    qhi: np.ndarray,
    qseen: np.ndarray,
    qoff: np.ndarray,
) -> np.ndarray:
    """Distinct values among the visible elements of each read's range.

    Groups (keys) are contiguous: group g's elements are ``zv[zoff[g]:zoff[g+1]]`` (values)
    with visibility times ``vt`` (0: always; k: from ``seen >= k`` on), its reads
    ``qoff[g]:qoff[g+1]`` with absolute ranges [``qlo``, ``qhi``) inside the group's
    elements and ``qseen``."""

    def c(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=np.int64)

    result: np.ndarray = _distinct_in_ranges(
        c(zv), c(vt), c(zoff), c(qlo), c(qhi), c(qseen), c(qoff)
    )
    return result


@register_warm_up
def _warm() -> None:
    zv = np.array([1, 1, 2], dtype=np.int64)
    vt = np.array([0, 1, 2], dtype=np.int64)
    distinct_in_ranges(
        zv,
        vt,
        np.array([0, 3]),
        np.array([0, 0]),
        np.array([3, 2]),
        np.array([2, 0]),
        np.array([0, 2]),
    )
