"""The one-event-at-a-time built-in tables: the oracle that the vectorised ones must match.

Plain on purpose. Unwindowed tables fold each key's writes into a small state and keep the
state as it was before the current seq for ``before=True`` reads. Windowed tables keep every
write of a key in a list sorted by event time (then write order), so a window is a slice found
with :mod:`bisect`; counts, sums and ratios come from prefix sums over that list, the other
aggregates look at the members one by one. With an allowed lateness a read also skips the
writes below the horizon (:func:`engine.windows.horizon`), a write below it is not stored, and
a key's list drops its expired front once that is at least half of it.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from engine.errors import ExecutionError
from engine.state.clock import NO_TIME
from engine.state.spec import AggregateSpec, ScalarTable, float_order_key
from engine.windows import Hopping, Sliding, hopping_bounds, horizon

__all__ = ["make_scalar"]

_I64_MIN = -(1 << 63)
_I64_SPAN = 1 << 64


def wrap_int64(value: int) -> int:
    """``value`` reduced to int64 the way numpy's int64 arithmetic wraps."""
    return (value - _I64_MIN) % _I64_SPAN + _I64_MIN


def _coercer(dtype: str, kind: str) -> Callable[[Any], Any]:
    if kind == "distinct":
        # Only equality matters; the vectorised tables count a string column's dictionary
        # codes, so strings (and bytes) are values as they are, numbers still int64 ones.
        as_int = _coercer(dtype, "count")
        return lambda value: value if isinstance(value, str | bytes) else as_int(value)
    if dtype == "float64":
        return float
    if dtype == "bool":
        return bool

    def as_int64(value: Any) -> int:
        out = int(value)
        if not _I64_MIN <= out < -_I64_MIN:
            raise ExecutionError(f"value {out} does not fit an int64 table; use smaller values")
        return out

    return as_int64


#: A distinct table's value as the serial executor counts it (the vectorised executors make
#: their value ids agree with it): strings and bytes as they are, anything else as an int64.
distinct_value: Callable[[Any], Any] = _coercer("int64", "distinct")


def _order_key(dtype: str) -> Callable[[Any], Any]:
    return float_order_key if dtype == "float64" else (lambda v: v)


# ---------------------------------------------------------------- unwindowed: folds per key


@dataclass(slots=True)
class _Entry:
    before: Any  # the state before the writes of ``seq``
    seq: int
    state: Any


class _Fold:
    """Initial state, step and result of one unwindowed aggregate."""

    def __init__(self, spec: AggregateSpec) -> None:
        self.kind = spec.kind
        self.float_sum = spec.dtype == "float64"
        self.key = _order_key(spec.dtype)

    def empty(self) -> Any:
        kind = self.kind
        if kind == "sum":
            return 0.0 if self.float_sum else 0
        if kind == "count":
            return 0
        if kind == "ratio":
            return (0, 0)
        if kind == "distinct":
            # The set is shared by the states of one key; a state is (set, size at that state).
            return (set(), 0)
        return None

    def step(self, state: Any, ts: int, value: Any) -> Any:
        kind = self.kind
        if kind == "count":
            return state + 1
        if kind == "sum":
            return state + value if self.float_sum else wrap_int64(state + value)
        if kind == "min":
            return value if state is None or self.key(value) < self.key(state) else state
        if kind == "max":
            return value if state is None or self.key(value) > self.key(state) else state
        if kind == "first":
            return state if state is not None else (value,)
        if kind == "last":
            return (value,)
        if kind == "ratio":
            return (state[0] + int(bool(value)), state[1] + 1)
        if kind == "since_last":
            return ts
        seen: set[int] = state[0]
        seen.add(value)
        return (seen, len(seen))

    def result(self, state: Any, ts: int) -> tuple[bool, object]:
        kind = self.kind
        if kind in ("count", "sum", "ratio"):
            return True, state
        if kind == "distinct":
            return True, state[1]
        if state is None:
            return False, None
        if kind in ("first", "last"):
            return True, state[0]
        if kind == "since_last":
            return True, ts - state
        return True, state


class _UnwindowedScalar:
    def __init__(self, spec: AggregateSpec) -> None:
        self._fold = _Fold(spec)
        self._coerce = _coercer(spec.dtype, spec.kind)
        self._needs_value = spec.kind not in ("count", "since_last")
        self._keys: dict[Hashable, _Entry] = {}

    def write(self, key: Hashable, seq: int, ts: int, value: object) -> None:
        entry = self._keys.get(key)
        if entry is None:
            empty = self._fold.empty()
            entry = self._keys[key] = _Entry(empty, seq, empty)
        elif entry.seq != seq:
            entry.before, entry.seq = entry.state, seq
        v = self._coerce(value) if self._needs_value else None
        entry.state = self._fold.step(entry.state, int(ts), v)

    def read(self, key: Hashable, seq: int, ts: int, *, before: bool) -> tuple[bool, object]:
        entry = self._keys.get(key)
        if entry is None:
            return self._fold.result(self._fold.empty(), int(ts))
        state = entry.before if before and entry.seq == seq else entry.state
        return self._fold.result(state, int(ts))


# ------------------------------------------------------- windowed: sorted lists of writes


@dataclass(slots=True)
class _Buffer:
    ts: list[int]  # sorted; ties in write order
    items: list[tuple[int, int, Any]]  # (write order, seq, value), parallel to ts
    cum: list[int]  # cum[i] = sum of weights of items[:i] (count, sum and ratio only)
    seq: int  # the seq of the latest write
    current: list[tuple[int, Any]]  # (ts, value) of the writes at ``seq``


class _WindowedScalar:
    def __init__(self, spec: AggregateSpec) -> None:
        assert spec.window is not None
        self._kind = spec.kind
        self._window = spec.window
        self._coerce = _coercer(spec.dtype, spec.kind)
        self._needs_value = spec.kind not in ("count", "since_last")
        self._key = _order_key(spec.dtype)
        self._prefix = spec.kind in ("sum", "ratio")
        self._order = 0
        self._keys: dict[Hashable, _Buffer] = {}
        self._bounded = spec.window.lateness is not None
        self._horizon = int(NO_TIME)  # writes below it are gone (allowed lateness only)

    def set_stream_time(self, stream_time: int) -> None:
        """Move the horizon of a table with an allowed lateness (see ``engine.windows``)."""
        assert self._bounded
        self._horizon = horizon(self._window, stream_time)

    def _weight(self, value: Any) -> int:
        return int(bool(value)) if self._kind == "ratio" else int(value)

    def write(self, key: Hashable, seq: int, ts: int, value: object) -> None:
        v = self._coerce(value) if self._needs_value else None
        t = int(ts)
        buf = self._keys.get(key)
        if buf is None:
            buf = self._keys[key] = _Buffer([], [], [0], seq, [])
        if buf.seq != seq:
            buf.seq, buf.current = seq, []
        if t < self._horizon:
            return  # too late: no read from now on can see it
        buf.current.append((t, v))
        pos = bisect.bisect_right(buf.ts, t)
        buf.ts.insert(pos, t)
        buf.items.insert(pos, (self._order, seq, v))
        self._order += 1
        if self._prefix:
            if pos == len(buf.ts) - 1:
                buf.cum.append(buf.cum[-1] + self._weight(v))
            else:
                weights = (self._weight(item[2]) for item in buf.items[pos:])
                buf.cum[pos + 1 :] = list(itertools.accumulate(weights, initial=buf.cum[pos]))[1:]
        if self._bounded:
            self._expire(buf)

    def _expire(self, buf: _Buffer) -> None:
        """Drop the writes below the horizon once they are half of the key's list."""
        dead = bisect.bisect_left(buf.ts, self._horizon)
        if dead == 0 or 2 * dead < len(buf.ts):
            return
        del buf.ts[:dead], buf.items[:dead]
        if self._prefix:
            weights = (self._weight(item[2]) for item in buf.items)
            buf.cum = list(itertools.accumulate(weights, initial=0))

    def read(self, key: Hashable, seq: int, ts: int, *, before: bool) -> tuple[bool, object]:
        r = int(ts)
        buf = self._keys.get(key)
        if buf is None:
            return self._result([], r)
        window = self._window
        if isinstance(window, Sliding):
            # As a half-open [start, end), like a hopping window, so that the horizon
            # (the earliest kept time) cuts both kinds the same way.
            start, end = r - window.length + 1, r + 1
        else:
            assert isinstance(window, Hopping)
            start, end = hopping_bounds(window, r)
        start = max(start, self._horizon)

        def inside(t: int) -> bool:
            return start <= t < end

        lo = bisect.bisect_left(buf.ts, start)
        hi = max(bisect.bisect_left(buf.ts, end), lo)
        excluded = buf.current if before and buf.seq == seq else []
        kind = self._kind
        if kind == "count":
            return True, hi - lo - sum(1 for t, _ in excluded if inside(t))
        if kind == "sum":
            out = buf.cum[hi] - buf.cum[lo] - sum(v for t, v in excluded if inside(t))
            return True, wrap_int64(out)
        if kind == "ratio":
            gone = [v for t, v in excluded if inside(t)]
            hits = buf.cum[hi] - buf.cum[lo] - sum(int(bool(v)) for v in gone)
            return True, (hits, hi - lo - len(gone))
        skip = seq if before else None
        members = [
            (item[0], buf.ts[i], item[2])
            for i, item in enumerate(buf.items[lo:hi], start=lo)
            if item[1] != skip
        ]
        return self._result(members, r)

    def _result(self, members: list[tuple[int, int, Any]], r: int) -> tuple[bool, object]:
        """The aggregate of members given as (write order, ts, value)."""
        kind = self._kind
        if kind == "count":
            return True, len(members)
        if kind == "sum":
            return True, wrap_int64(sum(m[2] for m in members))
        if kind == "ratio":
            return True, (sum(int(bool(m[2])) for m in members), len(members))
        if kind == "distinct":
            return True, len({m[2] for m in members})
        if not members:
            return False, None
        if kind == "min":
            return True, min((m[2] for m in members), key=self._key)
        if kind == "max":
            return True, max((m[2] for m in members), key=self._key)
        if kind == "first":
            return True, min(members)[2]
        latest = max(members)
        return True, (latest[2] if kind == "last" else r - latest[1])


def make_scalar(spec: AggregateSpec) -> ScalarTable:
    """The scalar table for ``spec``."""
    if spec.window is None:
        return _UnwindowedScalar(spec)
    return _WindowedScalar(spec)
