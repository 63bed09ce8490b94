"""Hypothesis strategies for random logs and random pipelines, shared by executor tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, get_args

import numpy as np
from hypothesis import strategies as st

from engine.keys import Unordered
from engine.log import InMemorySource, TopicTable
from engine.pipeline import ColumnRef, Pipeline, Record, TableRef
from engine.windows import Hopping, Sliding, Tumbling

KINDS = ("a", "b")
STRINGS = ("x", "y", "mail@host.org", "")
KeyType = Literal["int64", "int32", "uint32", "bool", "float32", "float64", "str"]
# How a log's k1 and k2 columns arrive, per kind (the dtypes a source can deliver). The oracle
# keys its dicts by Python `==`, so an int32 3, a float 3.0 and a uint32 3 are one key and must
# meet across kinds; the string "k3" is another key. "bool" keeps each id's parity.
KEY_TYPES: tuple[KeyType, ...] = get_args(KeyType)


def key_column(ids: list[int], key_type: KeyType) -> np.ndarray:
    """The key column of a log's ids as a source of that key type would deliver it."""
    if key_type == "bool":
        return np.array([i % 2 == 1 for i in ids], dtype=bool)
    if key_type == "str":
        return np.array([f"k{i}" for i in ids], dtype=object)
    return np.array(ids, dtype=np.dtype(key_type))


@dataclass(frozen=True)
class LogSpec:
    """A random log: per kind, rows of (partition, ts, k1, k2, v, s), and the type its key
    columns k1 and k2 arrive as (int64 unless given)."""

    partitions: dict[str, int]
    rows: dict[str, list[tuple[int, int, int, int, int, str]]]
    key_types: dict[str, KeyType] = field(default_factory=dict)

    def source(self, batch_size: int = 7) -> InMemorySource:
        tables = []
        for kind in KINDS:
            rows = self.rows[kind]
            cols: dict[str, Any] = {
                "partition": np.array([r[0] for r in rows], dtype=np.int64),
                "ts": np.array([r[1] for r in rows], dtype=np.int64),
                "k1": key_column([r[2] for r in rows], self.key_types.get(kind, "int64")),
                "k2": key_column([r[3] for r in rows], self.key_types.get(kind, "int64")),
                "v": np.array([r[4] for r in rows], dtype=np.int64),
                "s": np.array([r[5] for r in rows], dtype=object),
            }
            tables.append(TopicTable(f"topic.{kind}", kind, cols, self.partitions[kind]))
        return InMemorySource.from_tables(*tables, batch_size=batch_size)


@st.composite
def key_types(draw: st.DrawFn) -> dict[str, KeyType]:
    """Half the time int64 keys for both kinds; else each kind's keys of any type."""
    if draw(st.booleans()):
        return {}
    return {kind: draw(st.sampled_from(KEY_TYPES)) for kind in KINDS}


@st.composite
def logs(draw: st.DrawFn, max_rows: int = 40) -> LogSpec:
    """Random logs: equal and backwards timestamps, empty partitions, hot or many keys; a
    third of them shaped like production (:func:`skewed_logs`)."""
    if draw(st.integers(0, 2)) == 0:
        return draw(skewed_logs(max_rows=4 * max_rows))
    keys = draw(st.sampled_from([1, 3, 1_000_000]))
    partitions: dict[str, int] = {}
    rows: dict[str, list[tuple[int, int, int, int, int, str]]] = {}
    for kind in KINDS:
        parts = draw(st.integers(1, 3))
        partitions[kind] = parts
        n = draw(st.integers(0, max_rows))
        rows[kind] = draw(
            st.lists(
                st.tuples(
                    st.integers(0, parts - 1),
                    st.integers(0, 60),
                    st.integers(0, keys - 1),
                    st.integers(0, keys - 1),
                    st.integers(-4, 9),
                    st.sampled_from(STRINGS),
                ),
                min_size=n,
                max_size=n,
            )
        )
    return LogSpec(partitions, rows, draw(key_types()))


@st.composite
def skewed_logs(draw: st.DrawFn, max_rows: int = 160) -> LogSpec:
    """Logs shaped like production: one hot key with about 40% of the rows (in k1 and k2),
    a clock of coarse resolution (runs of equal timestamps), and timestamps that go back by
    up to a few windows' lengths within a partition."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    keys = draw(st.sampled_from([3, 50, 1_000_000]))
    hot_share = draw(st.sampled_from([0.4, 0.9]))
    run = draw(st.integers(1, 8))  # events per clock tick
    back = draw(st.sampled_from([0, 5, 40]))  # how far timestamps jump back
    partitions: dict[str, int] = {}
    rows: dict[str, list[tuple[int, int, int, int, int, str]]] = {}
    for kind in KINDS:
        parts = draw(st.integers(1, 3))
        partitions[kind] = parts
        n = draw(st.integers(0, max_rows))
        hot = rng.random((n, 2)) < hot_share
        ids = np.where(hot, 7, rng.integers(0, keys, (n, 2)))
        ts = np.arange(n) // run - rng.integers(0, back + 1, n)
        rows[kind] = [
            (
                int(rng.integers(0, parts)),
                int(ts[i]),
                int(ids[i, 0]),
                int(ids[i, 1]),
                int(rng.integers(-4, 10)),
                STRINGS[int(rng.integers(0, len(STRINGS)))],
            )
            for i in range(n)
        ]
    return LogSpec(partitions, rows, draw(key_types()))


WINDOWS = st.sampled_from(
    [
        *[None, None, Sliding(1), Sliding(7), Sliding(25), Tumbling(10), Hopping(12, 4)],
        *[Hopping(9, 6), Sliding(7, lateness=0), Sliding(25, lateness=3)],
        *[Tumbling(10, lateness=2), Hopping(12, 4, lateness=0)],
    ]
)
KEYS = st.sampled_from(["k1", ("k1", "k2"), Unordered("k1", "k2"), "k2"])


class Builder:
    """Builds a random multi-phase pipeline from a sequence of drawn steps."""

    def __init__(self) -> None:
        self.p = Pipeline("random")
        self.n = 0
        # Per kind: derived int columns (safe as values) and bool columns (safe as `where`).
        self.ints: dict[str, list[ColumnRef]] = {k: [] for k in KINDS}
        self.bools: dict[str, list[ColumnRef]] = {k: [] for k in KINDS}
        self.emitted: dict[str, list[ColumnRef]] = {k: [] for k in KINDS}
        self.tables: list[TableRef] = []

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def flag(self, kind: str, draw: st.DrawFn) -> ColumnRef:
        source = draw(st.sampled_from(["v", *[c.name for c in self.ints[kind]]]))
        modulus = draw(st.integers(2, 3))
        inputs = [c for c in self.ints[kind] if c.name == source]
        col = self.p.derive(
            self.name("flag"),
            on=kind,
            dtype="bool",
            inputs=inputs,
            fn=lambda e, _v, s=source, m=modulus: getattr(e, s) % m == 0,
            batch_fn=lambda c, s=source, m=modulus: c[s] % m == 0,
        )
        self.bools[kind].append(col)
        return col

    def mixed_k1(self, kind: str) -> ColumnRef:
        """A derived object column of k1's values as :func:`mixed_key` makes them."""

        def batch(c: Any) -> np.ndarray:
            out = np.empty(len(c["k1"]), dtype=object)
            out[:] = [mixed_key(v) for v in c["k1"].tolist()]
            return out

        return self.p.derive(
            self.name("mixed"),
            on=kind,
            dtype="object",
            fn=lambda e, _v: mixed_key(e.k1),
            batch_fn=batch,
        )


def mixed_key(value: Any) -> Any:
    """``value`` (a key from k1: an int, a float, a bool or a str) as another type it is
    ``==`` to, chosen by its value: what operator code computing keys might hand over."""
    if isinstance(value, str):
        return value
    i = int(value)
    forms: tuple[Callable[[int], Any], ...] = (int, float, np.int64, Decimal)
    return forms[i % len(forms)](i)


AGGREGATES = ["count", "sum", "min", "max", "first", "last", "ratio", "since_last", "distinct"]


def _lookup_scalar(kind: str) -> Callable[[Any], Any]:
    if kind == "ratio":
        return lambda x: x[0] * 1000 + x[1]
    return lambda x: x


@st.composite
def pipelines(draw: st.DrawFn) -> Pipeline:
    """Random pipelines: built-ins (windowed or not), Python merges with timers, lookups
    (before or not, pair keys, reversed pairs), derived columns, chains of phases."""
    b = Builder()
    p = b.p
    steps = draw(st.integers(1, 6))
    for _ in range(steps):
        kind = draw(st.sampled_from(KINDS))
        step = draw(st.sampled_from(["builtin", "builtin", "python", "flag"]))
        if step == "flag":
            b.flag(kind, draw)
            continue
        if step == "builtin":
            agg = draw(st.sampled_from(AGGREGATES))
            window = draw(WINDOWS)
            dtype = "int64"
            value: Any = None
            if agg in ("sum", "min", "max", "first", "last"):
                value = draw(st.sampled_from(["v", *[c.name for c in b.ints[kind]]]))
                if (agg != "sum" or window is None) and draw(st.booleans()):
                    src = value
                    value = p.derive(
                        b.name("real"),
                        on=kind,
                        dtype="float64",
                        inputs=[c for c in b.ints[kind] if c.name == src],
                        fn=lambda e, _v, s=src: getattr(e, s) * 0.1,
                        batch_fn=lambda c, s=src: c[s] * 0.1,
                    )
                    dtype = "float64"
                if isinstance(value, str) and value != "v":
                    value = next(c for c in b.ints[kind] if c.name == value)
            elif agg == "ratio":
                value = (
                    draw(st.sampled_from(b.bools[kind])) if b.bools[kind] else b.flag(kind, draw)
                )
            elif agg == "distinct":
                value = draw(st.sampled_from(["k2", "v"]))
            where = None
            if draw(st.booleans()):
                where = (
                    b.flag(kind, draw)
                    if not b.bools[kind]
                    else draw(st.sampled_from(b.bools[kind]))
                )
            table = p.builtin(
                b.name(agg),
                agg,
                on=kind,
                key=draw(KEYS),
                value=value,
                where=where,
                window=window,
                dtype=dtype,  # type: ignore[arg-type]
                default=None,
            )
        else:
            table = p.table(b.name("py"), default=0)
            reads = [draw(st.sampled_from(b.tables))] if b.tables and draw(st.booleans()) else []
            retract = draw(st.sampled_from([None, 1, 10]))
            extra_key = draw(KEYS)

            def merge(
                old: Any,
                e: Any,
                view: Any,
                reads: Any = tuple(reads),
                r: Any = retract,
                k: Any = extra_key,
            ) -> Any:
                bonus = 0
                for t in reads:
                    got = view.get(t, (e.k1, e.k2) if isinstance(k, tuple) else e.k1)
                    bonus += 0 if got is None else (hash(got) % 7)
                if r is not None:
                    delta = e.v
                    view.schedule(e.ts + r, lambda o, d=delta: o - d)
                return old + e.v + bonus

            on = draw(st.sampled_from([kind, KINDS]))
            p.update(b.name("upd"), on=on, table=table, key=draw(KEYS), merge=merge, reads=reads)
        b.tables.append(table)
        # Read the new table back, maybe from the other kind, maybe with a reversed pair key.
        for reader in draw(st.sets(st.sampled_from(KINDS), min_size=1)):
            before = draw(st.booleans())
            key = draw(
                st.sampled_from(
                    ["k1", ("k2", "k1"), ("k1", "k2"), Unordered("k2", "k1"), "k2", "mixed"]
                )
            )
            inputs: list[ColumnRef] = []
            if key == "mixed":
                # Operator code's key column: k1 as an object column of Python ints, floats,
                # numpy ints and decimals, all == to k1, maybe paired with k2.
                mixed = b.mixed_k1(reader)
                inputs = [mixed]
                key = draw(st.sampled_from([mixed.name, (mixed.name, "k2"), ("k2", mixed.name)]))
            default = -1
            col = p.lookup(
                b.name("look"),
                on=reader,
                table=table,
                key=key,
                before=before,
                default=default,
                dtype="object",
                inputs=inputs,
            )
            agg_kind = table.builtin.kind if table.builtin else "python"
            conv = _lookup_scalar(agg_kind)
            as_int = p.derive(
                b.name("num"),
                on=reader,
                dtype="object",
                inputs=[col],
                fn=lambda e, _v, n=col.name, f=conv: f(getattr(e, n)),
            )
            b.emitted[reader].append(as_int)
            if agg_kind in ("count", "distinct", "python", "since_last") or (
                table.builtin is not None and table.builtin.dtype == "int64" and agg_kind != "ratio"
            ):
                b.ints[reader].append(as_int) if agg_kind != "since_last" else None
    for kind in KINDS:
        cols = b.emitted[kind] + b.bools[kind]
        if not cols:
            continue
        out = p.output(f"out_{kind}", key="k1")
        p.emit(
            b.name("emit"),
            on=kind,
            output=out,
            inputs=cols,
            # Some records leave fields out, so one stream's records carry different field
            # sets: a record must read back the same whatever shares its epoch or worker.
            fn=lambda e, _v, cs=tuple(c.name for c in cols): [
                Record(
                    e.k1,
                    {
                        "seq": e.seq,
                        **{c: getattr(e, c) for j, c in enumerate(cs) if (e.seq + j) % 4},
                    },
                )
            ],
        )
    return p


WINDOWED_KINDS = ["count", "sum", "min", "max", "first", "last", "ratio", "since_last"]


@st.composite
def families(draw: st.DrawFn) -> tuple[Pipeline, int]:
    """A pipeline with several tables of one kind fed the same writes, windows of different
    lengths (and maybe a hopping one, which cannot share), read back by both event kinds.
    Returns it with the number of followers the runtime should link."""
    p = Pipeline("family")
    agg = draw(st.sampled_from(WINDOWED_KINDS))
    key = draw(st.sampled_from(["k1", ("k1", "k2"), Unordered("k1", "k2")]))
    flag = p.derive(
        "flag",
        on="a",
        dtype="bool",
        fn=lambda e, _v: e.v % 2 == 0,
        batch_fn=lambda c: c["v"] % 2 == 0,
    )
    value: Any = None
    if agg in ("sum", "min", "max", "first", "last"):
        value = "v"
    elif agg == "ratio":
        value = flag
    where = flag if draw(st.booleans()) else None
    lengths = draw(st.lists(st.sampled_from([1, 3, 7, 25, 60]), min_size=2, max_size=4))
    # Mixed allowed lateness: a leader keeps what its laxest follower needs, and keeps
    # everything if one of them keeps everything.
    late = st.sampled_from([None, None, 0, 4, 30])
    windows: list[Any] = [Sliding(n, draw(late)) for n in lengths]
    if draw(st.booleans()):
        windows.insert(draw(st.integers(0, len(windows))), Hopping(12, 4, draw(late)))
    looked = {"a": [], "b": []}  # type: dict[str, list[Any]]
    for i, window in enumerate(windows):
        table = p.builtin(
            f"t{i}", agg, on="a", key=key, value=value, where=where, window=window, default=None
        )
        for reader in draw(st.sets(st.sampled_from(["a", "b"]), min_size=1)):
            col = p.lookup(
                f"look{i}{reader}",
                on=reader,
                table=table,
                key=draw(
                    st.sampled_from(["k1", ("k2", "k1"), ("k1", "k2"), Unordered("k2", "k1")])
                ),
                before=draw(st.booleans()),
                default=-1,
                dtype="object",
            )
            looked[reader].append(col)
    for reader, cols in looked.items():
        if cols:
            names = [c.name for c in cols]
            p.emit(
                f"emit_{reader}",
                on=reader,
                output=p.output(f"out_{reader}", key="k1"),
                inputs=cols,
                fn=lambda e, _v, names=names: [
                    Record(e.k1, {n: repr(getattr(e, n)) for n in names})
                ],
            )
    return p, len([w for w in windows if isinstance(w, Sliding)]) - 1


# -- fixed logs and pipelines at the edges, pinned with @example ------------------------------


def edge_log() -> LogSpec:
    """A log on the edges of :data:`WINDOWS`: events exactly a window's length apart (7, 10,
    12, 25 after 0; 10 and 20 start tumbling windows), equal timestamps within a partition,
    across partitions and across topics (ties broken by topic, partition, offset), a
    timestamp going back (25 after 30) and one at a timer's exact due time (``ts + 10``)."""
    a = [
        (0, 0, 1, 2, 3, "x"),
        (1, 0, 1, 1, -4, "y"),
        (0, 7, 1, 2, 0, ""),
        (1, 7, 1, 2, 9, "x"),
        (0, 10, 1, 1, 5, "mail@host.org"),
        (0, 12, 2, 1, 1, "x"),
        (0, 12, 1, 2, 2, "x"),
        (1, 12, 1, 2, -1, "y"),
        (0, 20, 1, 1, 4, ""),
        (0, 30, 1, 2, 6, "x"),
        (0, 25, 1, 2, 7, "y"),
        (1, 25, 2, 1, 8, "x"),
        (1, 26, 1, 1, 0, "y"),
        (0, 37, 1, 2, 2, ""),
    ]
    b = [
        (0, 0, 1, 2, 1, "x"),
        (1, 7, 1, 1, 2, "y"),
        (0, 12, 1, 2, -2, "x"),
        (1, 12, 2, 1, 3, ""),
        (0, 22, 1, 2, 4, "x"),
        (0, 37, 1, 1, 5, "y"),
    ]
    return LogSpec({"a": 2, "b": 2}, {"a": a, "b": b})


def edge_pipeline() -> Pipeline:
    """Every window shape of :data:`WINDOWS` at the lengths :func:`edge_log` sits on, a
    Python merge with a timer, lookups before and after each event's own writes from both
    kinds, and two records an event (their order and ``seq`` both matter)."""
    p = Pipeline("edges")
    tables = [
        p.builtin("count_s7", "count", on="a", key="k1", window=Sliding(7), default=None),
        p.builtin("sum_s25", "sum", on="a", key="k1", value="v", window=Sliding(25), default=None),
        p.builtin("count_s1", "count", on="a", key="k1", window=Sliding(1), default=None),
        p.builtin("max_t10", "max", on="a", key="k1", value="v", window=Tumbling(10)),
        p.builtin("count_h12", "count", on="a", key="k1", window=Hopping(12, 4), default=None),
        p.builtin("last_s7l0", "last", on="a", key="k1", value="v", window=Sliding(7, lateness=0)),
        p.builtin("distinct_b", "distinct", on="b", key="k1", value="k2", window=Sliding(12)),
    ]
    live = p.table("live", default=0)

    def add(old: int, e: Any, view: Any) -> int:
        delta: int = e.v
        view.schedule(e.ts + 10, lambda o: o - delta)
        return old + delta

    p.update("live_v", on=KINDS, table=live, key="k1", merge=add)
    tables.append(live)
    for kind in KINDS:
        cols = [
            p.lookup(
                f"{t.name}_{kind}_{'before' if before else 'after'}",
                on=kind,
                table=t,
                key="k1",
                before=before,
                default=-1,
                dtype="object",
            )
            for t in tables
            for before in (False, True)
        ]
        names = tuple(c.name for c in cols)
        p.emit(
            f"emit_{kind}",
            on=kind,
            output=p.output(f"out_{kind}", key="k1"),
            inputs=cols,
            fn=lambda e, _v, names=names: [
                Record(e.k1, {n: repr(getattr(e, n)) for n in names}),
                Record(e.k2, {"ts": e.ts, "v": e.v}),
            ],
        )
    return p


def edge_family() -> tuple[Pipeline, int]:
    """Like :func:`families`: sliding counts of 1, 7 and 25 (one leader, two followers) and a
    hopping one that cannot share, read from both kinds, before and after."""
    p = Pipeline("edge-family")
    names: dict[str, list[ColumnRef]] = {k: [] for k in KINDS}
    windows: list[Sliding | Hopping] = [Sliding(7), Sliding(1), Hopping(12, 4), Sliding(25, 0)]
    for i, window in enumerate(windows):
        table = p.builtin(f"t{i}", "count", on="a", key="k1", window=window, default=None)
        for reader in KINDS:
            for before in (False, True):
                names[reader].append(
                    p.lookup(
                        f"look{i}{reader}{int(before)}",
                        on=reader,
                        table=table,
                        key="k1",
                        before=before,
                        default=-1,
                        dtype="object",
                    )
                )
    for reader, cols in names.items():
        fields = tuple(c.name for c in cols)
        p.emit(
            f"emit_{reader}",
            on=reader,
            output=p.output(f"out_{reader}", key="k1"),
            inputs=cols,
            fn=lambda e, _v, fields=fields: [
                Record(e.k1, {n: repr(getattr(e, n)) for n in fields})
            ],
        )
    return p, 2
