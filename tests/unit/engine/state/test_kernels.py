"""The compiled per-key kernels against brute force, on long hot segments with deep disorder.

The table tests (test_aggregates.py) drive the kernels through the tables with short logs;
these draw segments of hundreds of writes with equal time keys and long jumps back, so that
the Fenwick trees, the segment trees and every level of the CDQ merge are exercised.
"""

from __future__ import annotations

import logging
import os
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.state import jit as jit_module
from engine.state.distinctkernel import distinct_in_ranges
from engine.state.rangeindex import RangeIndex
from engine.state.winkernels import (
    EXT_MAX,
    EXT_MIN,
    EXT_NONE,
    POS_FIRST,
    POS_LAST,
    epoch_windows,
)
from tests.support.budget import examples


def _time_order(tk: np.ndarray, seg_start: np.ndarray, seg_len: np.ndarray) -> tuple:
    stk = np.empty_like(tk)
    rank = np.empty_like(tk)
    for s0, n in zip(seg_start, seg_len, strict=True):
        o = np.argsort(tk[s0 : s0 + n], kind="stable")
        stk[s0 : s0 + n] = tk[s0 : s0 + n][o]
        rank[s0 + o] = np.arange(n)
    return stk, rank


@st.composite
def segments(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    lengths = draw(st.lists(st.integers(1, 300), min_size=1, max_size=4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    disorder = draw(st.sampled_from([0, 3, 50, 1000]))
    resolution = draw(st.sampled_from([1, 10]))
    parts = []
    for n in lengths:
        true = np.cumsum(rng.integers(0, 5, n))
        tk = (true - rng.integers(0, disorder + 1, n)) // resolution
        parts.append(tk.astype(np.int64))
    tk = np.concatenate(parts)
    seg_len = np.array(lengths, dtype=np.int64)
    seg_start = np.cumsum(seg_len) - seg_len
    values = rng.integers(-(2**40), 2**40, len(tk)).astype(np.int64)
    m = int(draw(st.integers(1, 400)))
    lane_seg = rng.integers(0, len(lengths), m).astype(np.int64)
    lane_seen = (rng.random(m) * seg_len[lane_seg]).astype(np.int64) + 1
    mid = rng.integers(int(tk.min()) - 5, int(tk.max()) + 5, m)
    lane_b = (mid + rng.integers(0, 20, m)).astype(np.int64)
    # Several windows sharing each lane's upper edge (sliding windows of several lengths, or
    # one raised by a lateness floor), some of them empty (lower edge at or above the upper).
    windows = draw(st.integers(1, 3))
    widest = max(2, int(tk.max() - tk.min()) // 2)
    lane_a = np.stack([mid - rng.integers(-25, widest, m) for _ in range(windows)])
    return tk, values, seg_start, seg_len, lane_seg, lane_seen, lane_a.astype(np.int64), lane_b


@settings(max_examples=examples(300), deadline=None)
@given(segments())
def test_epoch_windows_equal_brute_force(case: tuple[np.ndarray, ...]) -> None:
    tk, values, seg_start, seg_len, lane_seg, lane_seen, lane_a, lane_b = case
    stk, rank = _time_order(tk, seg_start, seg_len)
    modes = ((EXT_MIN, POS_FIRST), (EXT_MAX, POS_LAST), (EXT_NONE, POS_FIRST), (EXT_NONE, POS_LAST))
    for ext_mode, pos_mode in modes:
        count, total, ext, pos = epoch_windows(
            stk,
            rank,
            values,
            seg_start,
            seg_len,
            lane_seg,
            lane_seen,
            lane_a,
            lane_b,
            want_sum=True,
            ext_mode=ext_mode,
            pos_mode=pos_mode,
        )
        assert count.shape == lane_a.shape
        for w in range(len(lane_a)):
            for i in range(len(lane_seg)):
                s0 = seg_start[lane_seg[i]]
                at = s0 + np.arange(lane_seen[i])
                members = at[(tk[at] > lane_a[w, i]) & (tk[at] <= lane_b[i])]
                assert count[w, i] == len(members)
                assert total[w, i] == int(values[members].sum())
                if len(members):
                    if ext_mode != EXT_NONE:
                        pick = np.min if ext_mode == EXT_MIN else np.max
                        assert ext[w, i] == pick(values[members])
                    assert pos[w, i] == (members[0] if pos_mode == POS_FIRST else members[-1])
                else:
                    assert pos[w, i] == -1


@st.composite
def ranges(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    groups = draw(st.integers(1, 3))
    zv_parts, vt_parts, zoff, qlo, qhi, qseen, qoff = [], [], [0], [], [], [], [0]
    for _ in range(groups):
        nz = int(draw(st.integers(0, 400)))
        values = int(draw(st.sampled_from([1, 3, 40, 1000])))
        zv_parts.append(rng.integers(0, values, nz))
        n_epoch = int(rng.integers(0, nz + 1))
        vt = np.zeros(nz, dtype=np.int64)
        where = rng.choice(nz, n_epoch, replace=False) if nz else np.zeros(0, np.int64)
        vt[where] = rng.permutation(n_epoch) + 1
        vt_parts.append(vt)
        nq = int(draw(st.integers(0, 200)))
        # Narrow ranges (windows short against the key's history) leave most neighbour
        # pairs out of every range, which the kernel skips.
        width = int(draw(st.sampled_from([nz + 1, 40, 8])))
        lo = rng.integers(0, nz + 1, nq)
        hi = np.minimum(lo + rng.integers(0, width, nq), nz)
        qlo.append(zoff[-1] + lo)
        qhi.append(zoff[-1] + hi)
        qseen.append(rng.integers(0, n_epoch + 1, nq))
        zoff.append(zoff[-1] + nz)
        qoff.append(qoff[-1] + nq)
    return (
        np.concatenate(zv_parts).astype(np.int64),
        np.concatenate(vt_parts).astype(np.int64),
        np.array(zoff, dtype=np.int64),
        np.concatenate(qlo).astype(np.int64),
        np.concatenate(qhi).astype(np.int64),
        np.concatenate(qseen).astype(np.int64),
        np.array(qoff, dtype=np.int64),
    )


@settings(max_examples=examples(300), deadline=None)
@given(ranges())
def test_distinct_in_ranges_equals_brute_force(case: tuple[np.ndarray, ...]) -> None:
    zv, vt, zoff, qlo, qhi, qseen, qoff = case
    got = distinct_in_ranges(zv, vt, zoff, qlo, qhi, qseen, qoff)
    for q in range(len(qlo)):
        span = np.arange(qlo[q], qhi[q])
        visible = span[vt[span] <= qseen[q]]
        assert got[q] == len(set(zv[visible].tolist())), q


def test_epoch_window_one_hot_key_reversed() -> None:
    """Ten thousand writes of one key in reverse time order: each read sees its prefix."""
    n = 10_000
    tk = np.arange(n, 0, -1, dtype=np.int64)
    start, length = np.array([0]), np.array([n])
    stk, rank = _time_order(tk, start, length)
    seen = np.arange(1, n + 1, dtype=np.int64)
    count, _, _, pos = (
        x[0]
        for x in epoch_windows(
            stk,
            rank,
            None,
            start,
            length,
            np.zeros(n, dtype=np.int64),
            seen,
            (tk - 100)[None, :],
            tk + 50,
            pos_mode=POS_LAST,
        )
    )
    # Read j (time n - j) sees writes 0..j: times n..n-j; in (n-j-100, n-j+50]: up to 51.
    assert count.tolist() == np.minimum(seen, 51).tolist()
    assert pos.tolist() == (seen - 1).tolist()


def test_cache_dir_falls_back_when_nothing_is_writable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only filesystem: no cache directory, and no exception (kernels then compile
    without caching)."""
    with tempfile.NamedTemporaryFile() as blocker:
        # A path below a regular file can never be created, even by root.
        unwritable = os.path.join(blocker.name, "sub")
        monkeypatch.setenv("NUMBA_CACHE_DIR", unwritable)
        monkeypatch.setenv("XDG_CACHE_HOME", unwritable)
        monkeypatch.setenv("TMPDIR", unwritable)
        assert jit_module._pick_cache_dir() is None


def test_cache_dir_prefers_a_writable_numba_cache_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    target = os.path.join(str(tmp_path), "numba")
    monkeypatch.setenv("NUMBA_CACHE_DIR", target)
    assert jit_module._pick_cache_dir() == target
    assert os.path.isdir(target)


def test_cache_dir_skips_an_unwritable_numba_cache_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    with tempfile.NamedTemporaryFile() as blocker:
        monkeypatch.setenv("NUMBA_CACHE_DIR", os.path.join(blocker.name, "sub"))
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        picked = jit_module._pick_cache_dir()
        assert picked == os.path.join(str(tmp_path), "restream", "numba")
        assert os.environ["NUMBA_CACHE_DIR"] == picked


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(st.integers(-5, 5), min_size=1, max_size=300),
    st.lists(st.tuples(st.integers(0, 299), st.integers(-5, 5)), max_size=50),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_range_index_equals_brute_force(
    start: list[int], writes: list[tuple[int, int]], largest: bool, seed: int
) -> None:
    """Built over a column, updated row by row (also past its end: it regrows), queried over
    random ranges: the row it returns holds the range's extreme. Rows count once reported
    written (or at a rebuild)."""
    values = np.array(start, dtype=np.int64)
    index = RangeIndex("v", largest)
    index.rebuild(values)
    for row, value in writes:
        changed = [row]
        if row >= len(values):
            # New rows are reported as written, as the store reports every row it writes.
            changed = list(range(len(values), row + 1))
            values = np.concatenate([values, np.zeros(row + 1 - len(values), np.int64)])
        values[row] = value
        index.update(values, np.array(changed, dtype=np.int64))
    rng = np.random.default_rng(seed)
    lo = rng.integers(0, len(values) + 1, 100)
    hi = np.minimum(lo + rng.integers(0, len(values) + 1, 100), len(values))
    got = index.query(values, lo, hi)
    for i in range(100):
        if hi[i] == lo[i]:
            assert got[i] == -1
        else:
            assert lo[i] <= got[i] < hi[i]
            pick = np.max if largest else np.min
            assert values[got[i]] == pick(values[lo[i] : hi[i]])


def test_warm_up_compiles_once_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The executors call warm_up before forking; it logs its time once per process."""
    monkeypatch.setattr(jit_module, "_warm", False)
    with caplog.at_level(logging.INFO, logger="engine.state.jit"):
        first = jit_module.warm_up()
        again = jit_module.warm_up()
    assert first > 0 and again == 0.0
    lines = [r.getMessage() for r in caplog.records if r.name == "engine.state.jit"]
    assert len(lines) == 1 and lines[0].startswith("compiled per-key kernels ready in")
