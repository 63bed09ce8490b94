"""Built-in tables: vectorised == scalar == a naive reference, bit for bit.

The reference below stores every write and evaluates the definition (DESIGN.md section 2,
engine/state/spec.py) directly for each read. Hypothesis drives all three with random logs:
equal and backwards timestamps, one hot key, many keys, wide int64 keys, several writes per
seq, reads with and without ``before`` (also between the writes of their own seq in the scalar
run), reads at events without writes, and random epoch cuts from one event per epoch to a
single epoch, with each epoch's reads split over several ``read`` calls in random order.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.state.aggregates import AggregateSpec, make_scalar, make_vector
from engine.state.clock import EpochClock, ScalarBounded, VectorBounded
from engine.state.spec import ReadsLatest
from engine.windows import Hopping, Sliding, Window, hopping_bounds
from tests.support.budget import examples

# ------------------------------------------------------------------------- the reference


@dataclass(frozen=True)
class W:
    key: int
    seq: int
    ts: int
    value: Any


@dataclass(frozen=True)
class R:
    ident: int
    key: int
    seq: int
    ts: int
    before: bool
    stream: int  # the stream time: the largest event time up to this read's event


def _bits(x: float) -> int:
    return int(struct.unpack("<q", struct.pack("<d", x))[0])


def _total_order(x: float) -> int:
    """IEEE 754 totalOrder as an int, written independently of the engine's helper."""
    b = _bits(x)
    return b if b >= 0 else -(b & 0x7FFF_FFFF_FFFF_FFFF) - 1


def _in_window(window: Window | None, t: int, r: int, stream: int) -> bool:
    """Whether a write at ``t`` is a member for a read at ``r`` when the stream time (the
    largest event time so far) is ``stream``: inside the read's window and, with a lateness,
    not before the window of a read at ``stream - lateness``."""
    if window is None:
        return True
    late = None if window.lateness is None else stream - window.lateness
    if isinstance(window, Sliding):
        inside = r - window.length < t <= r
        kept = late is None or t > late - window.length
    else:
        start, end = hopping_bounds(window, r)
        inside = start <= t < end
        kept = late is None or t >= hopping_bounds(window, late)[0]
    return inside and kept


def _wrap(x: int) -> int:
    return (x + 2**63) % 2**64 - 2**63


def reference(spec: AggregateSpec, writes: list[W], read: R) -> tuple[Any, ...]:
    """The normalised result of ``read`` over ``writes`` (given in log order)."""
    members = [
        w
        for w in writes
        if w.key == read.key
        and (w.seq < read.seq if read.before else w.seq <= read.seq)
        and _in_window(spec.window, w.ts, read.ts, read.stream)
    ]
    kind = spec.kind
    if kind == "count":
        return (True, len(members))
    if kind == "sum":
        if spec.dtype == "float64":
            acc = 0.0
            for w in members:
                acc = acc + w.value
            return (True, "f", _bits(acc))
        return (True, _wrap(sum(w.value for w in members)))
    if kind == "ratio":
        return (True, sum(1 for w in members if w.value), len(members))
    if kind == "distinct":
        return (True, len({w.value for w in members}))
    if not members:
        return (False,)
    if kind == "since_last":
        return (True, read.ts - members[-1].ts)
    if kind in ("min", "max"):
        order = _total_order if spec.dtype == "float64" else (lambda v: v)
        pick = min if kind == "min" else max
        value = pick((w.value for w in members), key=order)
    else:
        value = members[0].value if kind == "first" else members[-1].value
    return _normal(spec, value)


def _normal(spec: AggregateSpec, value: Any) -> tuple[Any, ...]:
    if spec.dtype == "float64":
        return (True, "f", _bits(float(value)))
    if spec.dtype == "bool":
        return (True, bool(value))
    return (True, int(value))


def normal_scalar(spec: AggregateSpec, present: bool, value: object) -> tuple[Any, ...]:
    if not present:
        return (False,)
    if spec.kind == "ratio":
        assert isinstance(value, tuple)
        return (True, int(value[0]), int(value[1]))
    if spec.kind in ("min", "max", "first", "last") or (spec.kind == "sum"):
        if spec.kind == "sum" and spec.dtype != "float64":
            return (True, int(value))  # type: ignore[call-overload]
        return _normal(spec, value)
    return (True, int(value))  # type: ignore[call-overload]


def normal_vector(spec: AggregateSpec, values: np.ndarray, present: np.ndarray, i: int) -> Any:
    if not present[i]:
        return (False,)
    if spec.kind == "ratio":
        return (True, int(values[i, 0]), int(values[i, 1]))
    return normal_scalar(spec, True, values[i].item())


# ------------------------------------------------------------------------ the scenarios


@dataclass
class Event:
    seq: int
    ts: int
    writes: list[W] = field(default_factory=list)
    reads: list[R] = field(default_factory=list)
    # position among the writes where each before=True read runs in the scalar replay
    read_slots: list[int] = field(default_factory=list)


@dataclass
class Scenario:
    spec: AggregateSpec
    events: list[Event]
    cuts: list[int]  # epoch boundaries as event indices (exclusive ends)
    read_chunks: list[list[list[int]]]  # per epoch: read calls, each a list of read ids
    skip_empty: bool = False  # do not call write_epoch for an epoch without writes

    @property
    def writes(self) -> list[W]:
        return [w for e in self.events for w in e.writes]

    @property
    def reads(self) -> list[R]:
        return [r for e in self.events for r in e.reads]


_NANS = [
    struct.unpack("<d", struct.pack("<q", b))[0]
    for b in (0x7FF8_0000_0000_0000, -0x0008_0000_0000_0000, 0x7FF0_0000_0000_0001)
]
_FLOATS = st.one_of(
    st.sampled_from(
        [0.0, -0.0, 1.0, -1.0, 0.1, 1e308, -1e308, math.inf, -math.inf, 5e-324, *_NANS]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-4, 4).map(float),
)
_INTS = st.one_of(
    st.integers(-4, 4),
    st.sampled_from([2**63 - 1, -(2**63), 2**62, -(2**62) - 7]),
    st.integers(-(2**63), 2**63 - 1),
)
_WIDE_KEYS = [-(2**63), -1, 0, 1, 2**31, 2**32 + 5, 2**62 + 3, 2**63 - 1]
KINDS = ["count", "sum", "min", "max", "first", "last", "ratio", "since_last", "distinct"]
SHAPES = ["none", "sliding", "hopping", "sliding-late", "hopping-late"]


@st.composite
def specs(draw: st.DrawFn, kind: str | None = None, shape: str | None = None) -> AggregateSpec:
    kind = kind or draw(st.sampled_from(KINDS))
    shape = shape or draw(st.sampled_from(SHAPES))
    window: Window | None = None
    # Huge settings too: the vectorised horizon must saturate at int64's ends, not wrap.
    late = st.one_of(st.integers(0, 3), st.integers(0, 40), st.sampled_from([2**62, 2**63 - 1]))
    lateness = draw(late) if shape.endswith("-late") else None
    if shape.startswith("sliding"):
        window = Sliding(draw(st.integers(1, 30)), lateness)
    elif shape.startswith("hopping"):
        size = draw(st.integers(1, 20))
        window = Hopping(size, draw(st.integers(1, size)), lateness)
    dtypes = {
        "sum": ["int64"] if window is not None else ["int64", "float64"],
        "min": ["int64", "float64"],
        "max": ["int64", "float64"],
        "ratio": ["bool"],
        "distinct": ["int64"],
    }.get(kind, ["int64", "float64", "bool"])
    return AggregateSpec(kind, window, draw(st.sampled_from(dtypes)))  # type: ignore[arg-type]


@st.composite
def scenarios(
    draw: st.DrawFn, kind: str | None = None, shape: str | None = None, max_events: int = 30
) -> Scenario:
    spec = draw(specs(kind, shape))
    pool = draw(st.sampled_from(["hot", "few", "many", "wide"]))
    keys = {
        "hot": st.sampled_from([3, 3, 3, 3, 9]),
        "few": st.integers(0, 3),
        "many": st.integers(0, 40),
        "wide": st.sampled_from(_WIDE_KEYS),
    }[pool]
    if spec.dtype == "float64":
        values: st.SearchStrategy[Any] = _FLOATS
    elif spec.dtype == "bool":
        values = st.booleans()
    elif spec.kind == "distinct":
        values = st.one_of(st.integers(0, 5), st.sampled_from([-(2**63), 2**63 - 1, 2**40]))
    else:
        values = _INTS
    steps = st.one_of(st.just(0), st.integers(-3, 3), st.integers(-40, 40))
    n = draw(st.integers(1, max_events))
    # Far-out times make the packed (bit-field) sorts fall back to their general paths.
    origin = draw(st.sampled_from([0, 0, 0, 2**61, -(2**61)]))
    seq, ts = draw(st.integers(0, 5)), origin + draw(st.integers(-60, 60))
    events: list[Event] = []
    read_id = 0
    stream = ts
    for _ in range(n):
        stream = max(stream, ts)
        event = Event(seq, ts)
        for _ in range(draw(st.integers(0, 3))):
            event.writes.append(W(draw(keys), seq, ts, draw(values)))
        for _ in range(draw(st.integers(0, 3))):
            before = draw(st.booleans())
            event.reads.append(R(read_id, draw(keys), seq, ts, before, stream))
            slot = draw(st.integers(0, len(event.writes))) if before else len(event.writes)
            event.read_slots.append(slot)
            read_id += 1
        events.append(event)
        seq += draw(st.integers(1, 3))
        ts += draw(steps)
    mode = draw(st.sampled_from(["one", "each", "random"]))
    if mode == "one":
        cuts = [n]
    elif mode == "each":
        cuts = list(range(1, n + 1))
    else:
        inner = draw(st.sets(st.integers(1, n - 1), max_size=n)) if n > 1 else set()
        cuts = [*sorted(inner), n]
    chunks: list[list[list[int]]] = []
    start = 0
    for end in cuts:
        ids = [r.ident for e in events[start:end] for r in e.reads]
        ids = draw(st.permutations(ids))
        parts = draw(st.integers(1, 3))
        chunks.append([ids[i::parts] for i in range(parts)])
        start = end
    return Scenario(spec, events, cuts, chunks, draw(st.booleans()))


# ------------------------------------------------------------------------ the drivers


def run_reference(sc: Scenario) -> dict[int, tuple[Any, ...]]:
    writes = sc.writes
    return {r.ident: reference(sc.spec, writes, r) for r in sc.reads}


def run_scalar(sc: Scenario) -> dict[int, tuple[Any, ...]]:
    table = make_scalar(sc.spec)
    out: dict[int, tuple[Any, ...]] = {}
    needs_value = sc.spec.kind not in ("count", "since_last")
    stream = None
    for event in sc.events:
        if sc.spec.lateness is not None and (stream is None or event.ts > stream):
            stream = event.ts
            cast(ScalarBounded, table).set_stream_time(stream)
        pending = sorted(zip(event.read_slots, range(len(event.reads)), strict=True))
        done = 0
        for i in range(len(event.writes) + 1):
            while done < len(pending) and pending[done][0] == i:
                read = event.reads[pending[done][1]]
                present, value = table.read(read.key, read.seq, read.ts, before=read.before)
                out[read.ident] = normal_scalar(sc.spec, present, value)
                done += 1
            if i < len(event.writes):
                w = event.writes[i]
                table.write(w.key, w.seq, w.ts, w.value if needs_value else None)
    return out


def _write_arrays(spec: AggregateSpec, writes: list[W]) -> tuple[np.ndarray, ...]:
    keys = np.array([w.key for w in writes], dtype=np.int64)
    seqs = np.array([w.seq for w in writes], dtype=np.int64)
    ts = np.array([w.ts for w in writes], dtype=np.int64)
    values = np.array([w.value for w in writes], dtype=spec.dtype)
    return keys, seqs, ts, values


def run_vector(sc: Scenario) -> dict[int, tuple[Any, ...]]:
    table = make_vector(sc.spec)
    by_id = {r.ident: r for r in sc.reads}
    out: dict[int, tuple[Any, ...]] = {}
    start = 0
    for end, calls in zip(sc.cuts, sc.read_chunks, strict=True):
        writes = [w for e in sc.events[start:end] for w in e.writes]
        keys, seqs, ts, values = _write_arrays(sc.spec, writes)
        ignores = sc.spec.kind in ("count", "since_last")
        if sc.spec.lateness is not None:
            cast(VectorBounded, table).set_clock(_clock(sc.events[start:end]))
        if writes or not sc.skip_empty:
            table.write_epoch(keys, seqs, ts, None if ignores else values)
        for before in (False, True):
            for call in calls:
                reads = [by_id[i] for i in call if by_id[i].before == before]
                got, present = table.read(
                    np.array([r.key for r in reads], dtype=np.int64),
                    np.array([r.seq for r in reads], dtype=np.int64),
                    np.array([r.ts for r in reads], dtype=np.int64),
                    before=before,
                )
                assert len(got) == len(reads) == len(present)
                for i, r in enumerate(reads):
                    out[r.ident] = normal_vector(sc.spec, got, present, i)
                if isinstance(table, ReadsLatest) and (writes or not sc.skip_empty):
                    _check_read_latest(sc.spec, table, writes, reads, out)
        table.end_epoch()
        assert table.state_nbytes() >= 0
        start = end
    return out


def _clock(events: list[Event]) -> EpochClock:
    """The stream-time clock of an epoch of ``events`` (seqs may have gaps: those seqs
    carry the time of the event before them)."""
    first = events[0].seq
    ts = np.full(events[-1].seq - first + 1, np.iinfo(np.int64).min, dtype=np.int64)
    for e in events:
        ts[e.seq - first] = e.ts
    return EpochClock.of(first, ts)


def _check_read_latest(
    spec: AggregateSpec, table: Any, writes: list[W], reads: list[Any], want: dict[int, Any]
) -> None:
    """``read_latest``, told each read's latest visible write, answers like ``read``."""
    latest = []
    for r in reads:
        seen = [
            i
            for i, w in enumerate(writes)
            if w.key == r.key and (w.seq < r.seq if r.before else w.seq <= r.seq)
        ]
        latest.append(seen[-1] if seen else -1)
    got, present = table.read_latest(
        np.array([r.key for r in reads], dtype=np.int64),
        np.array(latest, dtype=np.int64),
        np.array([r.seq for r in reads], dtype=np.int64),
        np.array([r.ts for r in reads], dtype=np.int64),
    )
    for i, r in enumerate(reads):
        assert normal_vector(spec, got, present, i) == want[r.ident], (r, latest[i])


def _diff(sc: Scenario, want: dict[int, Any], got: dict[int, Any]) -> str:
    by_id = {r.ident: r for r in sc.reads}
    bad = [(by_id[i], want[i], got.get(i)) for i in want if want[i] != got.get(i)]
    return f"{sc.spec}: {len(bad)} wrong, first: {bad[:3]}"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_scalar_matches_reference(kind: str, shape: str, data: st.DataObject) -> None:
    sc = data.draw(scenarios(kind, shape))
    want, got = run_reference(sc), run_scalar(sc)
    assert got == want, _diff(sc, want, got)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=examples(80), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_vector_matches_reference(kind: str, shape: str, data: st.DataObject) -> None:
    sc = data.draw(scenarios(kind, shape))
    want, got = run_reference(sc), run_vector(sc)
    assert got == want, _diff(sc, want, got)


@pytest.mark.slow
@settings(max_examples=examples(200), deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_all_three_agree_on_longer_logs(data: st.DataObject) -> None:
    sc = data.draw(scenarios(max_events=120))
    want = run_reference(sc)
    assert run_scalar(sc) == want
    got = run_vector(sc)
    assert got == want, _diff(sc, want, got)


# --------------------------------------------------------------- allowed lateness by hand


def _late_scenario(spec: AggregateSpec, plan: list[tuple[int, int | None, bool]]) -> Scenario:
    """One key; per event ``(ts, written value or None, reads)``, one epoch."""
    events: list[Event] = []
    stream = plan[0][0]
    for seq, (ts, value, reads) in enumerate(plan):
        stream = max(stream, ts)
        event = Event(seq, ts)
        if value is not None:
            event.writes.append(W(1, seq, ts, value))
        if reads:
            event.reads.append(R(seq, 1, seq, ts, False, stream))
            event.read_slots.append(len(event.writes))
        events.append(event)
    ids = [r.ident for e in events for r in e.reads]
    return Scenario(spec, events, [len(events)], [[ids]])


@pytest.mark.parametrize("kind", ["distinct", "count", "since_last", "first"])
def test_a_late_read_sees_its_window_cut_at_the_horizon(kind: str) -> None:
    """Sliding 10, lateness 0. The read at seq 4 (time 101) comes when the stream time is
    108: its window (91, 101] is cut to the horizon, (98, 101], so it sees only the write at
    100. The read at seq 2 (time 103, stream time 103) sees both writes. In the distinct
    table the late read's range starts after the earlier read's, which one chain of ranges
    cannot take: it goes on a chain of its own."""
    spec = AggregateSpec(kind, Sliding(10, lateness=0))  # type: ignore[arg-type]
    sc = _late_scenario(
        spec,
        [(100, 1, False), (97, 2, False), (103, None, True), (108, 3, False), (101, None, True)],
    )
    want = run_reference(sc)
    expected = {
        "distinct": {2: (True, 2), 4: (True, 1)},
        "count": {2: (True, 2), 4: (True, 1)},
        "since_last": {2: (True, 6), 4: (True, 1)},
        "first": {2: (True, 1), 4: (True, 1)},
    }[kind]
    assert want == expected
    assert run_scalar(sc) == want
    assert run_vector(sc) == want


@pytest.mark.parametrize("kind", ["count", "sum", "distinct", "last"])
def test_a_write_behind_the_horizon_is_dropped(kind: str) -> None:
    """Tumbling 10, lateness 5: at stream time 30 the windows that ended by 25 are closed,
    so the write at 12 (window [10, 20)) is dropped while the one at 21 ([20, 30)) counts."""
    spec = AggregateSpec(kind, Hopping(10, 10, lateness=5))  # type: ignore[arg-type]
    sc = _late_scenario(
        spec, [(30, None, False), (12, 7, True), (21, 8, True), (15, 9, True), (24, 7, True)]
    )
    want = run_reference(sc)
    expected = {
        "count": {1: (True, 0), 2: (True, 1), 3: (True, 0), 4: (True, 2)},
        "sum": {1: (True, 0), 2: (True, 8), 3: (True, 0), 4: (True, 15)},
        "distinct": {1: (True, 0), 2: (True, 1), 3: (True, 0), 4: (True, 2)},
        "last": {1: (False,), 2: (True, 8), 3: (False,), 4: (True, 7)},
    }[kind]
    assert want == expected
    assert run_scalar(sc) == want
    assert run_vector(sc) == want


@pytest.mark.parametrize("shape", ["sliding-late", "hopping-late"])
@settings(max_examples=examples(150), deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_distinct_with_late_reads_in_longer_epochs(shape: str, data: st.DataObject) -> None:
    """Longer logs make late reads of one key within one epoch common: the case where the
    distinct table counts reads off the chain (see its module docstring)."""
    sc = data.draw(scenarios("distinct", shape, max_events=80))
    want = run_reference(sc)
    got = run_vector(sc)
    assert got == want, _diff(sc, want, got)


@pytest.mark.parametrize(
    "spec",
    [
        AggregateSpec("count", Sliding(50, lateness=10)),
        AggregateSpec("last", Sliding(50, lateness=10)),
        AggregateSpec("sum", Hopping(40, 10, lateness=10)),
        AggregateSpec("distinct", Sliding(50, lateness=10)),
        AggregateSpec("distinct", Hopping(40, 10, lateness=10)),
    ],
    ids=str,
)
def test_lateness_keeps_the_state_to_the_window(spec: AggregateSpec) -> None:
    """Over a long log the history of a table with a lateness stays near its window, while
    the same table without one keeps every write. Timestamps jitter back by up to 5."""
    assert spec.window is not None
    unbounded = AggregateSpec(spec.kind, replace(spec.window, lateness=None), spec.dtype)
    tables = [make_vector(spec), make_vector(unbounded)]
    rng = np.random.default_rng(7)
    keys, per_epoch, epochs = 10, 200, 100
    for e in range(epochs):
        seqs = np.arange(e * per_epoch, (e + 1) * per_epoch, dtype=np.int64)
        ts = seqs - rng.integers(0, 6, per_epoch)
        k = rng.integers(0, keys, per_epoch)
        values = rng.integers(0, 1000, per_epoch)
        clock = EpochClock.of(int(seqs[0]), ts)
        for table in tables:
            if table is tables[0]:
                cast(VectorBounded, table).set_clock(clock)
            table.write_epoch(k, seqs, ts, None if spec.kind == "count" else values)
            table.end_epoch()
    kept = [table._store.records() for table in tables]  # type: ignore[attr-defined]
    # One write per time unit: the window plus the lateness hold about 60 writes, and a
    # region is rebuilt once half of it has expired, so at most about twice that is kept.
    assert kept[1] >= per_epoch * epochs // 2  # every write (or pane) of the run
    assert kept[0] <= 2 * (50 + 10 + 5) + 16 * keys


@pytest.mark.parametrize(
    "window",
    [
        Sliding(10, lateness=2**63 - 1),
        Hopping(10, 5, lateness=2**63 - 1),
        Sliding(10, lateness=2**62),
        Hopping(10, 5, lateness=2**62),
    ],
    ids=str,
)
@pytest.mark.parametrize("kind", ["count", "distinct"])
@pytest.mark.parametrize("origin", [0, -(2**62), 2**62])
def test_a_lateness_at_the_ends_of_int64_cuts_like_the_oracle(
    window: Window, kind: str, origin: int
) -> None:
    """``stream - lateness`` leaves int64 here: the oracle's horizon is then below every
    time (it cuts nothing), and the vectorised tables must saturate to the same, not wrap."""
    spec = AggregateSpec(kind, window)  # type: ignore[arg-type]
    sc = _late_scenario(spec, [(origin, 1, True), (origin + 1, 2, True), (origin + 5, 3, True)])
    want = run_reference(sc)
    assert want[2] == (True, 3)
    assert run_scalar(sc) == want
    assert run_vector(sc) == want


def test_late_reads_out_of_order_by_window_end_count_right() -> None:
    """One hot key in one epoch: 300 on-time reads and two late ones. The read at 280
    (stream time 299, horizon 200) and the one at 260 (stream time 320, horizon 221) are out
    of order by window end: the later-ending one starts lower."""
    spec = AggregateSpec("distinct", Sliding(100, lateness=0))
    plan: list[tuple[int, int | None, bool]] = [(t, t % 7, True) for t in range(300)]
    plan += [(280, None, True), (320, None, False), (260, None, True)]
    sc = _late_scenario(spec, plan)
    want = run_reference(sc)
    assert want[300] == (True, 7) and want[302] == (True, 7)
    assert run_vector(sc) == want
