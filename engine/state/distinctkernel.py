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
#: A value with at most this many elements in the key's range of Z has its neighbours
#: found by a scan; a longer run gets a Fenwick tree of its own.
_RUN_SCAN = 32


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
def _pair_sums(
    ex: np.ndarray,
    ey: np.ndarray,
    ew: np.ndarray,
    eq: np.ndarray,
    k_total: int,
    out: np.ndarray,
    fen: np.ndarray,
    nz: int,
) -> None:
    """What :func:`_cdq` computes, directly when the updates are few for the reads.

    Each read needs the updates inside its range (x >= lo and y < hi imply lo <= x < hi), so
    with the updates ordered by x its candidates are one run of them; when those runs hold
    fewer elements in all than the divide and conquer would move, they are checked one by
    one. Otherwise (a value repeating densely within the windows) the O(log^2) bound holds.
    """
    updates = 0
    for k in range(k_total):
        if eq[k] < 0:
            updates += 1
    if updates == 0:
        return
    # Per position: the updates whose x lies before it.
    below = np.zeros(nz + 1, dtype=np.int64)
    for k in range(k_total):
        if eq[k] < 0:
            below[ex[k] + 1] += 1
    for i in range(nz):
        below[i + 1] += below[i]
    work = 0
    for k in range(k_total):
        if eq[k] >= 0 and ey[k] > ex[k]:
            work += below[ey[k]] - below[ex[k]]
    depth = 1
    while (1 << depth) < k_total:
        depth += 1
    if work > 2 * k_total * depth:
        _cdq(ex, ey, ew, eq, k_total, out, fen, nz)
        return
    # Updates by x, each with its place in time (the event index).
    fill = below[:nz].copy()
    ux = np.empty(updates, dtype=np.int64)
    uy = np.empty(updates, dtype=np.int64)
    uw = np.empty(updates, dtype=np.int64)
    uk = np.empty(updates, dtype=np.int64)
    for k in range(k_total):
        if eq[k] < 0:
            at = fill[ex[k]]
            fill[ex[k]] += 1
            ux[at], uy[at], uw[at], uk[at] = ex[k], ey[k], ew[k], k
    for k in range(k_total):
        if eq[k] < 0 or ey[k] <= ex[k]:
            continue
        lo, hi = ex[k], ey[k]
        s = 0
        for u in range(below[lo], below[hi]):
            if uk[u] < k and uy[u] < hi:
                s += uw[u]
        out[eq[k]] += s


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
        out_g = _count_group(zv[z0:z1], vt[z0:z1], qlo[q0:q1] - z0, qhi[q0:q1] - z0, qseen[q0:q1])
        # Element by element: a slice assignment compiles numba's shape-mismatch error text
        # (formatting code, 1.5-3 s of every cold start).
        for k in range(nq):
            out[q0 + k] = out_g[k]
    return out


@jit
def _order_by_small_ints(x: np.ndarray, n: int) -> np.ndarray:
    """Stable argsort of ``x[:n]`` (non-negative ints): counting sort when their range is
    within a few times ``n``, else a merge sort."""
    top = 0
    for i in range(n):
        top = max(top, x[i] + 1)
    if top > 4 * n + 64:
        return np.argsort(x[:n], kind="mergesort")
    start = np.zeros(top + 1, dtype=np.int64)
    for i in range(n):
        start[x[i] + 1] += 1
    for v in range(top):
        start[v + 1] += start[v]
    order = np.empty(n, dtype=np.int64)
    for i in range(n):
        order[start[x[i]]] = i
        start[x[i]] += 1
    return order


@jit
def _run_add(fen: np.ndarray, base: int, n: int, i: int) -> None:
    k = i + 1
    while k <= n:
        fen[base + k - 1] += 1
        k += k & -k


@jit
def _run_prefix(fen: np.ndarray, base: int, i: int) -> int:
    s = 0
    k = i
    while k > 0:
        s += fen[base + k - 1]
        k -= k & -k
    return s


@jit
def _run_kth(fen: np.ndarray, base: int, n: int, k: int) -> int:
    pos = 0
    step = 1
    while step * 2 <= n:
        step *= 2
    while step > 0:
        nxt = pos + step
        if nxt <= n and fen[base + nxt - 1] < k:
            pos = nxt
            k -= fen[base + nxt - 1]
        step >>= 1
    return pos


@jit
def _neighbours(
    u: int,
    rs: int,
    re: int,
    vis: np.ndarray,
    fen: np.ndarray,
    uo: np.ndarray,
) -> tuple[int, int]:
    """The visible elements of u's value just before and after it (-1 for none); u's value
    occupies [rs, re) of the (value, position) order."""
    pred = -1
    succ = -1
    if re - rs <= _RUN_SCAN:
        k = u - 1
        while k >= rs:
            if vis[k]:
                pred = uo[k]
                break
            k -= 1
        k = u + 1
        while k < re:
            if vis[k]:
                succ = uo[k]
                break
            k += 1
        return pred, succ
    # A long run has its own Fenwick tree in fen[rs:re] (1-based slot k at rs + k - 1):
    # small, so its walks stay in cache.
    n = re - rs
    i = u - rs
    c = _run_prefix(fen, rs, i)
    if c > 0:
        pred = uo[rs + _run_kth(fen, rs, n, c)]
    if _run_prefix(fen, rs, n) > c:
        succ = uo[rs + _run_kth(fen, rs, n, c + 1)]
    return pred, succ


@jit
def _count_group(
    gv: np.ndarray, gt: np.ndarray, lo: np.ndarray, hi: np.ndarray, seen: np.ndarray
) -> np.ndarray:
    """Distinct visible values in each read's range, for one key (see the module)."""
    nz, nq = gv.shape[0], lo.shape[0]
    res = np.zeros(nq, dtype=np.int64)
    reach = 0
    for k in range(nq):
        reach = max(reach, hi[k] - lo[k])
    # Elements by (value, position): a value's elements form a run, and its visible
    # neighbours are found within the run: by scanning a short run, with a Fenwick tree over
    # this order (holding only long runs' visible elements) for a long one.
    uo = _order_by_small_ints(gv, nz)
    where = np.empty(nz, dtype=np.int64)
    run_start = np.empty(nz, dtype=np.int64)
    run_end = np.empty(nz, dtype=np.int64)
    k = 0
    while k < nz:
        e = k + 1
        while e < nz and gv[uo[e]] == gv[uo[k]]:
            e += 1
        for i in range(k, e):
            where[uo[i]] = i
            run_start[i] = k
            run_end[i] = e
        k = e
    vis = np.zeros(nz, dtype=np.bool_)
    fen = np.zeros(nz + 1, dtype=np.int64)
    # Time 0: the history and its neighbour pairs.
    cap = 2 * nz + 1
    sx = np.empty(cap, dtype=np.int64)
    sy = np.empty(cap, dtype=np.int64)
    sw = np.empty(cap, dtype=np.int64)
    ns = 0
    last = -1
    for k in range(nz):
        z = uo[k]
        if gt[z] != 0:
            continue
        sx[ns], sy[ns], sw[ns] = z, z, 1
        ns += 1
        if last >= 0 and gv[last] == gv[z] and z - last < reach:
            sx[ns], sy[ns], sw[ns] = last, z, -1
            ns += 1
        last = z
        vis[k] = True
        if run_end[k] - run_start[k] > _RUN_SCAN:
            _run_add(fen, run_start[k], run_end[k] - run_start[k], k - run_start[k])
    _static_part(sx, sy, sw, ns, lo, hi, nq, res, np.zeros(nz + 1, np.int64), nz)
    # Later: epoch writes appear in vt order; reads interleave by seen.
    ne = 0
    for z in range(nz):
        if gt[z] != 0:
            ne += 1
    if ne > 0:
        epoch = np.empty(ne, dtype=np.int64)
        ne = 0
        for z in range(nz):
            if gt[z] != 0:
                epoch[ne] = z
                ne += 1
        epoch = epoch[_order_by_small_ints(gt[epoch], ne)]
        qorder = _order_by_small_ints(seen, nq)
        kcap = 3 * ne + nq
        ex = np.empty(kcap, dtype=np.int64)
        ey = np.empty(kcap, dtype=np.int64)
        ew = np.empty(kcap, dtype=np.int64)
        eq = np.empty(kcap, dtype=np.int64)
        # Epoch elements visible so far, by position: a read counts those in its range when
        # it is reached (a sweep), so only the pair events need the divide and conquer.
        shown = np.zeros(nz + 1, dtype=np.int64)
        k_total = 0
        t = 0
        for j in range(ne):
            x = epoch[j]
            while t < nq and seen[qorder[t]] < gt[x]:
                qi = qorder[t]
                ex[k_total], ey[k_total], ew[k_total], eq[k_total] = lo[qi], hi[qi], 0, qi
                res[qi] += _fen_prefix(shown, hi[qi]) - _fen_prefix(shown, lo[qi])
                k_total += 1
                t += 1
            u = where[x]
            pred, succ = _neighbours(u, run_start[u], run_end[u], vis, fen, uo)
            _fen_add(shown, nz, x, 1)
            # A pair counts only for a read whose range holds both ends, so pairs wider than
            # every range of the key are left out (most of them, on a key whose values rarely
            # repeat within one window).
            if pred >= 0 and succ >= 0 and succ - pred < reach:
                ex[k_total], ey[k_total], ew[k_total], eq[k_total] = pred, succ, 1, -1
                k_total += 1
            if pred >= 0 and x - pred < reach:
                ex[k_total], ey[k_total], ew[k_total], eq[k_total] = pred, x, -1, -1
                k_total += 1
            if succ >= 0 and succ - x < reach:
                ex[k_total], ey[k_total], ew[k_total], eq[k_total] = x, succ, -1, -1
                k_total += 1
            vis[u] = True
            if run_end[u] - run_start[u] > _RUN_SCAN:
                _run_add(fen, run_start[u], run_end[u] - run_start[u], u - run_start[u])
        while t < nq:
            qi = qorder[t]
            ex[k_total], ey[k_total], ew[k_total], eq[k_total] = lo[qi], hi[qi], 0, qi
            res[qi] += _fen_prefix(shown, hi[qi]) - _fen_prefix(shown, lo[qi])
            k_total += 1
            t += 1
        _pair_sums(ex, ey, ew, eq, k_total, res, fen, nz)
    for k in range(nq):
        if hi[k] <= lo[k]:
            res[k] = 0
    return res


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
