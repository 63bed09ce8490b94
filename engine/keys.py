"""Key specifications and the codec that turns key columns into int64 ids.

An operator names its key as a field (``"sender"``), a tuple of fields (``("sender",
"recipient")``), an unordered pair (``Unordered("user_a", "user_b")``, the key is
``(min, max)``), or a Python callable over the event (Python tables only).

Vectorised tables address keys by int64 ids. :class:`KeyCodec` maps key columns to ids
injectively and consistently across epochs, in three disjoint ranges: integers in
``[-2**62, 2**62)`` are their own id; pairs of integers within ``±2**30`` are packed into
``[2**62, 2**63)``; anything else (strings, wider integers, longer tuples) is interned in a
dictionary with ids from ``-2**63`` up.

Two keys get one id exactly when Python's ``==`` holds between them, as in the serial
executor's dicts: a number that equals an integer (``True``, ``np.uint8(3)``, ``3.0``) is
that integer, in a column of any dtype (object columns included) and in a pair alike.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from numbers import Complex, Number, Real
from typing import Any, TypeAlias

import numpy as np

from engine.errors import CheckpointError, PipelineError
from engine.state.jit import jit, register_warm_up

__all__ = [
    "KeyCodec",
    "KeySpec",
    "Unordered",
    "canonical_key",
    "key_fields",
    "key_function",
    "scalar_key",
]

_PLAIN_LIMIT = 1 << 62
_PAIR_BASE = 1 << 62
_PAIR_LIMIT = 1 << 30
_INTERN_BASE = -(1 << 63)
_HUGE_DIGITS = 4300  # sys.get_int_max_str_digits()'s default


@jit
def _pack_pairs(a: np.ndarray, b: np.ndarray, unordered: bool, ids: np.ndarray) -> int:
    """Packed ids of int64 pairs into ``ids`` (ordered as ``(min, max)`` if ``unordered``);
    rows that do not fit get -1 there. Returns how many did not fit.

    One pass instead of numpy's dozen (compare, swap, four range checks, pack): every worker
    encodes every row of an epoch once per key spec; 250,000 unordered pairs took 6.3 ms
    that way, 0.3 ms this way."""
    wide = 0
    for i in range(len(a)):
        x, y = a[i], b[i]
        if unordered and x > y:
            x, y = y, x
        if -_PAIR_LIMIT <= x < _PAIR_LIMIT and -_PAIR_LIMIT <= y < _PAIR_LIMIT:
            ids[i] = _PAIR_BASE + (((x + _PAIR_LIMIT) << 31) | (y + _PAIR_LIMIT))
        else:
            ids[i] = -1
            wide += 1
    return wide


@register_warm_up
def _warm() -> None:
    one = np.ones(1, dtype=np.int64)
    one.flags.writeable = False  # what _pairs hands over, always
    _pack_pairs(one, one, True, np.empty(1, dtype=np.int64))


def _read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view: numba compiles a kernel apart for each mix of writable and read-only
    arrays (a column loaded from the arena is read-only, a derived or cast one is not), and a
    forked worker would compile a mix the warm-up left out on its first epoch."""
    view: np.ndarray = array.view()
    view.flags.writeable = False
    return view


def _compact_int(column: np.ndarray) -> bool:
    """Whether a column's values all fit int64 unchanged (not uint64, whose order and values
    a cast would change)."""
    return column.dtype.kind in "ib" or (column.dtype.kind == "u" and column.dtype.itemsize < 8)


@dataclass(frozen=True, slots=True)
class Unordered:
    """An unordered pair: ``Unordered("a", "b")`` keys an event by ``(min(a, b), max(a, b))``."""

    first: str
    second: str


KeySpec: TypeAlias = str | tuple[str, ...] | Unordered | Callable[[Any], Hashable]


def key_fields(spec: KeySpec) -> tuple[str, ...] | None:
    """The column names a key is built from, or None for a callable key."""
    if isinstance(spec, str):
        return (spec,)
    if isinstance(spec, Unordered):
        return (spec.first, spec.second)
    if isinstance(spec, tuple):
        return spec
    return None


def scalar_key(spec: KeySpec, event: Any) -> Hashable:
    """The key of one event, as the serial executor and Python merges see it."""
    if isinstance(spec, str):
        return getattr(event, spec)  # type: ignore[no-any-return]
    if isinstance(spec, Unordered):
        a, b = getattr(event, spec.first), getattr(event, spec.second)
        return (a, b) if a <= b else (b, a)
    if isinstance(spec, tuple):
        return tuple(getattr(event, name) for name in spec)
    return spec(event)


def key_function(spec: KeySpec) -> Callable[[Any], Hashable]:
    """:func:`scalar_key` for one spec, compiled once (the serial executor's hot path)."""
    if isinstance(spec, str):
        return operator.attrgetter(spec)
    if isinstance(spec, tuple):
        if len(spec) == 1:
            one = operator.attrgetter(spec[0])
            return lambda event: (one(event),)
        return operator.attrgetter(*spec)
    if isinstance(spec, Unordered):
        pair = operator.attrgetter(spec.first, spec.second)

        def unordered(event: Any) -> Hashable:
            a, b = pair(event)
            return (a, b) if a <= b else (b, a)

        return unordered
    return spec


def validate_key(spec: object, where: str) -> KeySpec:
    """Check a key declaration; raise a PipelineError that names the operator otherwise."""
    if isinstance(spec, str | Unordered) or callable(spec):
        return spec
    if isinstance(spec, tuple) and spec and all(isinstance(s, str) for s in spec):
        return spec
    raise PipelineError(
        f"{where}: key must be a field name, a tuple of field names, Unordered(a, b) or a "
        f"callable, got {spec!r}"
    )


@dataclass(frozen=True, slots=True)
class _Wide:
    """An integer key outside the plain id range, as interned: a type of its own, so that no
    key of operator code (a tuple ``("wide", v)`` say) can share its id."""

    value: int


class KeyCodec:
    """Injective, stable mapping from key columns to int64 ids for one key space."""

    __slots__ = ("_interned",)

    def __init__(self) -> None:
        self._interned: dict[Hashable, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        # A dict, where format 6 and older pickled a slots tuple: how __setstate__ tells them.
        return {"interned": self._interned}

    def __setstate__(self, state: dict[str, Any] | tuple[object, dict[str, Any]]) -> None:
        """Restore a pickled codec. Snapshots from before :class:`_Wide` (pickled as a slots
        tuple, format 6 and older) interned wide integers as ``("wide", v)``: those entries
        become ``_Wide(v)`` under the same ids (a user's tuple ``("wide", v)`` had shared that
        id then, and keeps it). They also interned numbers equal to an int when given as
        another type (``np.bool_``, ``1.0``, ints in an object column, such pairs): a codec
        holding any is refused, as its keys' state could not be found again."""
        if isinstance(state, dict):
            self._interned = state["interned"]
            return
        interned: dict[Hashable, int] = state[1]["_interned"]
        self._interned = {_old_wide(k): v for k, v in interned.items()}
        stale = self._stale()
        if stale:
            raise CheckpointError(
                f"the checkpoint was taken by an older restream, which gave {len(stale)} "
                f"key(s) such as {stale[0]!r} (numbers equal to an int, or pairs of them, "
                "given as other types) ids that have changed since; resuming would lose their "
                "state: start the job over without the checkpoint"
            )

    def _intern(self, values: Sequence[Hashable]) -> np.ndarray:
        table = self._interned
        out = np.empty(len(values), dtype=np.int64)
        for i, v in enumerate(values):
            ident = table.get(v)
            if ident is None:
                ident = _INTERN_BASE + len(table)
                table[v] = ident
            out[i] = ident
        return out

    def _plain(self, column: np.ndarray) -> np.ndarray:
        """Ids for a single key column."""
        if column.dtype.kind == "u" and column.dtype.itemsize == 8:
            # Above 2**63 a cast to int64 would wrap onto negative ids of other keys.
            wide = column >= np.uint64(_PLAIN_LIMIT)
            ids = column.astype(np.int64)
            if wide.any():
                ids[wide] = self._intern([_Wide(v) for v in column[wide].tolist()])
            return ids
        if column.dtype.kind in "iub":
            ids = column.astype(np.int64, copy=False)
            wide = (ids >= _PLAIN_LIMIT) | (ids < -_PLAIN_LIMIT)
            if wide.any():
                ids = ids.copy()
                ids[wide] = self._intern([_Wide(int(v)) for v in ids[wide]])
            return ids
        if column.dtype.kind in "UOfS":
            values = column.tolist()
            if column.dtype.kind == "U" or all(isinstance(v, str) for v in values):
                return self._intern(values)  # strings (np.str_ too): the usual non-int keys
            # Objects, floats (1.0 is the key 1, 2.5 a key of its own), bytes: row by row, in
            # row order (every worker must intern the same keys in the same order).
            return np.fromiter((self.encode_one(v) for v in values), np.int64, len(values))
        raise PipelineError(f"cannot use a column of dtype {column.dtype} as a key")

    def encode(self, spec: KeySpec, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Ids of the keys of a batch of events, given their columns by name."""
        fields = key_fields(spec)
        if fields is None:
            raise PipelineError("a callable key cannot be vectorised; use field names")
        if len(fields) == 1:
            return self._plain(columns[fields[0]])
        parts = [columns[name] for name in fields]
        if len(parts) == 2 and all(_compact_int(p) for p in parts):
            return self._pairs(parts[0], parts[1], isinstance(spec, Unordered))
        if len(parts) == 2 and all(p.dtype.kind in "iub" for p in parts):
            # A uint64 column: row by row as Python ints (numpy would take uint64 with int64
            # as float64, and a cast to int64 would wrap values above 2**63).
            unordered = isinstance(spec, Unordered)
            pairs: Iterable[tuple[int, int]] = (
                (min(x, y), max(x, y)) if unordered else (x, y)
                for x, y in zip(parts[0].tolist(), parts[1].tolist(), strict=True)
            )
            return np.fromiter(
                (self.encode_one(r) for r in pairs), dtype=np.int64, count=len(parts[0])
            )
        if isinstance(spec, Unordered):
            a, b = parts
            swap = _greater(a, b)
            if swap.any():
                a, b = np.where(swap, b, a), np.where(swap, a, b)
            parts = [a, b]
        lists = [p.tolist() for p in parts]
        rows = list(zip(*lists, strict=True))
        if len(parts) == 2 and not any(all(isinstance(v, str) for v in values) for values in lists):
            # Object columns may hold ints: such pairs pack, as encode_one's do. A column of
            # strings never packs: its rows are interned as they are (4x faster).
            return np.fromiter((self.encode_one(r) for r in rows), np.int64, len(rows))
        return self._intern([_hashable(r) for r in rows])

    def _pairs(self, first: np.ndarray, second: np.ndarray, unordered: bool) -> np.ndarray:
        """Ids of pairs of int columns: packed where both fit, interned (in row order) where
        not."""
        if len(first) != len(second):
            raise PipelineError(
                f"key columns differ in length ({len(first)} and {len(second)} rows)"
            )
        a = _read_only(np.ascontiguousarray(first, dtype=np.int64))
        b = _read_only(np.ascontiguousarray(second, dtype=np.int64))
        ids = np.empty(len(a), dtype=np.int64)
        if _pack_pairs(a, b, unordered, ids):
            rest = np.flatnonzero(ids == -1)
            x, y = a[rest], b[rest]
            if unordered:
                x, y = np.minimum(x, y), np.maximum(x, y)
            ids[rest] = self._intern(list(zip(x.tolist(), y.tolist(), strict=True)))
        return ids

    def encode_one(self, key: Hashable) -> int:
        """The id of one key as Python code sees it (an int, a str, or a tuple): the id of
        every key that is ``==`` to it, the id its row gets in a key column."""
        ident = _computed_id(key)
        if isinstance(ident, int):
            return ident
        return self._intern_one(ident)

    def known_id(self, key: Hashable) -> int | None:
        """:meth:`encode_one`'s id if ``key`` can have one yet, else None (a key to intern
        that no column brought: no table holds it). Never adds a key: operator code reads
        on some workers only, and every worker's codec must intern the same keys in the same
        order."""
        ident = _computed_id(key)
        if isinstance(ident, int):
            return ident
        return self._interned.get(ident)

    def _intern_one(self, value: Hashable) -> int:
        table = self._interned
        ident = table.get(value)
        if ident is None:
            ident = table[value] = _INTERN_BASE + len(table)
        return ident

    def _stale(self) -> list[Hashable]:
        """Interned keys that :meth:`encode_one` gives another id now (see __setstate__)."""
        stale = []
        for key in self._interned:
            now = _computed_id(key)
            # An int is an id by value now (plain or packed), never the interned one it had.
            if type(now) is int or now != key:
                stale.append(key)
        return stale


def _computed_id(key: Hashable) -> int | Hashable:
    """A key's id when it has one by value (an int, a packed pair), else what to intern."""
    value = _integral(key)
    if value is not None:
        if -_PLAIN_LIMIT <= value < _PLAIN_LIMIT:
            return value
        return _Wide(value)
    if isinstance(key, tuple) and len(key) == 2:
        a, b = _integral(key[0]), _integral(key[1])
        if a is not None and b is not None:
            if -_PAIR_LIMIT <= a < _PAIR_LIMIT and -_PAIR_LIMIT <= b < _PAIR_LIMIT:
                return _PAIR_BASE + (((a + _PAIR_LIMIT) << 31) | (b + _PAIR_LIMIT))
            return (a, b)
    return _hashable(key)


_INT64 = 1 << 63


def canonical_key(key: Hashable) -> Hashable:
    """A representative of ``key`` whose ``repr`` is the same in every process: what a
    Python table's key is owned by. Keys that are one key in a dict (equal, with equal
    hashes) get equal representatives; unequal keys may too (they then share an owner,
    which is harmless).

    Numbers: one equal to an int64 is that int (``True``, ``np.int32(3)``, ``3.0``), any other
    its numeric hash, which Python makes equal for equal numbers of any type and the same in
    every process (``2.5`` and ``np.float32(2.5)``, ``Decimal("0.1")`` and ``Fraction(1,
    10)``, ``2**70`` and ``2.0**70``).
    Strings and bytes of any subclass (numpy's, a ``str`` enum) are plain ones; tuples and
    frozensets are canonical item by item (a frozenset's items in sorted ``repr`` order, not
    its iteration order, which follows per-process string hashes); an aware datetime is its
    UTC time. Objects whose ``repr`` names their address are represented by their hash,
    which is the same in forked workers (not across separately started ones, if it hashes
    strings). Other objects are their own ``repr``: equal keys of your own classes need equal
    ``repr``s (or key by plain values).
    """
    kind = type(key)
    if kind is str:
        return key
    if kind is int:
        return key if -_INT64 <= key < _INT64 else ("number", hash(key))  # type: ignore[operator]
    if kind is tuple and all(_plain_item(item) for item in key):  # type: ignore[attr-defined]
        return key  # the usual pair of ids or names
    if isinstance(key, np.datetime64 | np.timedelta64):
        return ("numpy time", hash(key))  # equal across units, with equal hashes
    if isinstance(key, Number | np.number | np.bool_):
        return _canonical_number(key)
    if isinstance(key, str):
        return str.__str__(key)
    if isinstance(key, bytes):
        return bytes(key)
    if isinstance(key, tuple):
        return tuple(canonical_key(item) for item in key)
    if isinstance(key, frozenset):
        return ("frozenset", tuple(sorted((canonical_key(item) for item in key), key=repr)))
    if isinstance(key, datetime) and key.utcoffset() is not None:
        return ("utc", (key - key.utcoffset()).replace(tzinfo=None))  # type: ignore[operator]
    if type(key).__repr__ is object.__repr__:
        return ("hash", hash(key))
    return key


def _plain_item(item: object) -> bool:
    kind = type(item)
    return kind is str or (kind is int and -_INT64 <= item < _INT64)  # type: ignore[operator]


def _canonical_number(number: Any) -> Hashable:
    # int() of Decimal("1e1000000") would never end; such a number is beyond int64 anyway.
    huge = isinstance(number, Decimal) and number.is_finite() and number.adjusted() >= 19
    value = None if huge else _integral(number)
    if value is not None and -_INT64 <= value < _INT64:
        return value
    return ("number", hash(number))


def _old_wide(key: Hashable) -> Hashable:
    if (
        isinstance(key, tuple)
        and len(key) == 2
        and key[0] == "wide"
        and type(key[1]) is int
        and not -_PLAIN_LIMIT <= key[1] < _PLAIN_LIMIT
    ):
        return _Wide(key[1])
    return key


def _integral(value: object) -> int | None:
    """The int that ``value`` equals under Python's ``==`` (bools, numpy integers, integral
    floats, decimals, fractions, complex numbers without an imaginary part), or None; the
    serial executor's dicts make no difference between ``True``, ``1`` and ``1.0``, so
    neither may the ids."""
    if isinstance(value, np.timedelta64):  # a numpy integer, but never == an int's key
        return None
    if isinstance(value, int | np.integer | np.bool_):
        return int(value)
    if isinstance(value, str | bytes | tuple) or not isinstance(value, Number | np.number):
        return None
    if isinstance(value, Decimal) and value.is_finite() and value.adjusted() >= _HUGE_DIGITS:
        return None  # int() would take minutes; Python refuses such ints as text anyway
    if isinstance(value, Complex) and not isinstance(value, Real):
        if value.imag != 0:
            return None
        value = value.real
    try:
        whole = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # nan, inf
        return None
    # Exact: int() truncates, and a long double near 2**60 must not pass for its truncation.
    return whole if whole == value else None


def _hashable(value: object) -> Hashable:
    if isinstance(value, np.generic):
        return value.item()  # type: ignore[no-any-return]
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


def _greater(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "O" or b.dtype.kind == "O":
        return np.fromiter((x > y for x, y in zip(a, b, strict=True)), dtype=bool, count=len(a))
    return np.asarray(a > b)
