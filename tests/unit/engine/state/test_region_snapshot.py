"""A windowed table's history is snapshotted with only what later reads can reach: the
regions' records back to back, no spare room, moved-out rows or array tail; and a run
resumed from such a snapshot equals the uninterrupted run byte for byte."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Hopping, Pipeline, Record, Sliding, Tumbling
from engine.executors.batch import BatchExecutor
from engine.state.regions import Prefix, RegionStore
from tests.support.budget import examples
from tests.support.checkpoints import check_resumes, every
from tests.support.engine_logs import LogSpec, skewed_logs

_BATCHES = st.lists(
    st.lists(
        st.tuples(st.integers(0, 9), st.integers(-40, 40), st.floats(-1e6, 1e6, width=32)),
        max_size=40,
    ),
    min_size=2,
    max_size=10,
)


def _store(combine: bool) -> RegionStore:
    cols = {"tk": np.dtype(np.int64), "v": np.dtype(np.float64)}
    if combine:
        return RegionStore(cols, (Prefix("cv", "v", "sum"),), {"v": "sum"})
    return RegionStore(cols, (Prefix("cv", "v", "sum"), Prefix("pv", "tk", "min")))


def _add(store: RegionStore, batch: list[tuple[int, int, float]], combine: bool) -> None:
    rows = sorted(batch, key=lambda r: (r[0], r[1]))  # stable: arrival order on ties
    if combine:  # one record per (slot, tk) within a batch, as a table hands them over
        seen: dict[tuple[int, int], float] = {}
        for slot, tk, v in rows:
            seen[(slot, tk)] = seen.get((slot, tk), 0.0) + v
        rows = [(s, t, v) for (s, t), v in sorted(seen.items())]
    if rows:
        store.add(
            np.array([r[0] for r in rows], dtype=np.int64),
            {
                "tk": np.array([r[1] for r in rows], dtype=np.int64),
                "v": np.array([r[2] for r in rows], dtype=np.float64),
            },
        )


def _regions(store: RegionStore) -> dict[int, dict[str, bytes]]:
    """Every non-empty region's rows, column by column, as bytes (floats bit for bit)."""
    out = {}
    for slot in np.flatnonzero(store.length > 0).tolist():
        lo = int(store.start[slot])
        hi = lo + int(store.length[slot])
        out[slot] = {name: col[lo:hi].tobytes() for name, col in store.cols.items()}
    return out


@settings(max_examples=examples(150), deadline=None)
@given(_BATCHES, _BATCHES, st.booleans())
def test_a_pickled_store_keeps_only_its_records_and_goes_on_identically(
    before: list[list[tuple[int, int, float]]],
    after: list[list[tuple[int, int, float]]],
    combine: bool,
) -> None:
    store = _store(combine)
    store.compact_floor = 1 << 30  # never compacted: moved-out rows pile up, as in a run
    for batch in before:
        _add(store, batch, combine)
    restored: RegionStore = pickle.loads(pickle.dumps(store, protocol=5))
    live = store.records()
    assert all(len(col) == max(64, live) for col in restored.cols.values())
    assert restored.garbage == 0 and restored.top == live
    assert _regions(restored) == _regions(store)
    # Later writes (appends, writes back in time, regions that must move) and expiry give
    # both the same regions, prefix columns included, bit for bit; so do searches.
    for i, batch in enumerate(after):
        _add(store, batch, combine)
        _add(restored, batch, combine)
        if i % 3 == 2:
            assert (store.expire(-10 + i) == restored.expire(-10 + i)).all()
        assert _regions(restored) == _regions(store)
    slots = np.repeat(np.arange(-1, 11), 4)
    a = np.tile(np.array([-50, -7, 0, 19]), 12)
    assert all(
        (x == y).all()
        for x, y in zip(
            store.rank2(slots, a, a + 15), restored.rank2(slots, a, a + 15), strict=True
        )
    )


_WINDOWS = st.sampled_from(
    [
        Sliding(7),
        Sliding(25),
        Sliding(7, lateness=0),
        Sliding(25, lateness=3),
        Sliding(60, lateness=30),
        Hopping(12, 4),
        Hopping(12, 4, lateness=5),
        Tumbling(10),
        Tumbling(10, lateness=2),
    ]
)
_AGGREGATES = st.sampled_from(["count", "sum", "min", "max", "first", "last", "ratio", "distinct"])


def _pipeline(tables: list[tuple[str, Any]]) -> Pipeline:
    """Windowed tables over a float value (sums whose last bits depend on their order), each
    read by both event kinds, every answer emitted."""
    p = Pipeline("windows")
    x = p.derive(
        "x", on="a", dtype="float64", fn=lambda e, _v: e.v * 0.1, batch_fn=lambda c: c["v"] * 0.1
    )
    flag = p.derive(
        "flag", on="a", dtype="bool", fn=lambda e, _v: e.v > 0, batch_fn=lambda c: c["v"] > 0
    )
    looks: dict[str, list[Any]] = {"a": [], "b": []}
    for i, (agg, window) in enumerate(tables):
        value: Any = {"count": None, "ratio": flag, "distinct": "k2"}.get(agg, x)
        table = p.builtin(f"t{i}", agg, on="a", key="k1", value=value, window=window, default=None)
        for reader in ("a", "b"):
            looks[reader].append(
                p.lookup(
                    f"l{i}{reader}", on=reader, table=table, key="k1", default=-1, dtype="object"
                )
            )
    for reader, cols in looks.items():
        names = [c.name for c in cols]
        p.emit(
            f"emit_{reader}",
            on=reader,
            output=p.output(f"out_{reader}", key="k1"),
            inputs=cols,
            fn=lambda e, _v, names=names: [Record(e.k1, {n: repr(getattr(e, n)) for n in names})],
        )
    return p


@settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tables=st.lists(st.tuples(_AGGREGATES, _WINDOWS), min_size=1, max_size=4),
    log=skewed_logs(max_rows=200),
    epoch_size=st.sampled_from([3, 11, 40]),
    k=st.integers(1, 3),
)
def test_runs_resumed_from_snapshots_equal_the_uninterrupted_run(
    tables: list[tuple[str, Any]], log: LogSpec, epoch_size: int, k: int
) -> None:
    check_resumes(
        lambda: BatchExecutor(epoch_size=epoch_size),
        lambda: _pipeline(tables),
        log.source,
        every(k),
        chain=True,
    )


def test_one_event_with_a_large_key_makes_a_small_snapshot() -> None:
    # Keys are mapped to slots directly only while they span few slots: with a floor of
    # 2**18 slots this one event made every snapshot 11 MB (several arrays per slot).
    log = LogSpec(
        partitions={"a": 1, "b": 1},
        rows={"a": [(0, 0, 169693, 806220, -4, "mail@host.org")], "b": []},
    )
    snapshots = check_resumes(
        lambda: BatchExecutor(epoch_size=3),
        lambda: _pipeline([("count", Sliding(7))]),
        log.source,
        every(1),
    )
    assert snapshots and max(s.nbytes for s in snapshots) < 100_000
