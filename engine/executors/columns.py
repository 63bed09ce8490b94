"""The columns of an epoch as the runtime sees them, and the parts workers exchange.

:class:`Columns` holds one kind's events with its derived columns and, per key spec, the key
ids of the rows a worker owns (:class:`Keyed`); :class:`Part` is one worker's share of a
derived column, and :func:`assemble` puts every worker's shares back in place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np

from engine.errors import EngineError
from engine.keys import KeySpec
from engine.log import Events, StringColumn
from engine.pipeline import Operator
from engine.state.packing import pack_order
from engine.state.segscan import latest_marked

__all__ = ["Columns", "Exchange", "Keyed", "Part", "Rows", "assemble", "count_rows"]

#: Which rows of a kind's events a worker handles: all (None), a span, or row indices.
Rows: TypeAlias = np.ndarray | slice | None


@dataclass(frozen=True, slots=True)
class Part:
    """A worker's share of a derived column: ``values`` for ``rows`` (all rows if None)."""

    kind: str
    column: str
    rows: np.ndarray | slice | None
    values: np.ndarray


#: Shares every worker's parts with every worker (a barrier); returns all of them.
Exchange = Callable[[list[Part]], list[Part]]


class Columns:
    """The columns of one kind's events in an epoch: fields, metadata and derived columns.

    A sharded worker does most of its work on its *home rows* (see
    :mod:`engine.executors.placement`). Columns gathered for them, and derived columns made
    for them, are kept compact (:meth:`take`), so operators at home read their inputs without
    a gather each; a full-length derived column is assembled from its parts only when some
    operator reads it at other rows (:meth:`get`).
    """

    __slots__ = ("_decoded", "_home", "_home_cols", "_parts", "derived", "events", "keyed")

    def __init__(self, events: Events) -> None:
        self.events = events
        self.derived: dict[str, np.ndarray] = {}  # full length
        self.keyed: dict[tuple[KeySpec, bool], Keyed] = {}
        self._decoded: dict[str, np.ndarray] = {}
        self._parts: dict[str, list[Part]] = {}  # derived columns not yet assembled
        self._home: np.ndarray | None = None
        self._home_cols: dict[str, np.ndarray] = {}  # columns at the home rows

    def __len__(self) -> int:
        return len(self.events)

    def derived_names(self) -> list[str]:
        """The derived columns so far (assembled or not)."""
        return [*self.derived, *(n for n in self._parts if n not in self.derived)]

    def set_home(self, rows: np.ndarray) -> None:
        """Declare ``rows`` (this very array) the home rows that :meth:`take` keeps compact."""
        if self._home is None:
            self._home = rows
        elif self._home is not rows:
            raise EngineError("a kind's home rows were set twice in one epoch")

    def get(self, name: str) -> np.ndarray:
        """A column by name (full length), strings decoded to an object array."""
        if name in self.derived:
            return self.derived[name]
        parts = self._parts.pop(name, None)
        if parts is not None:
            self.derived[name] = _assembled(parts, len(self))
            return self.derived[name]
        if name == "seq":
            return self.events.seq
        if name == "ts":
            return self.events.ts
        col = self._decoded.get(name)
        if col is not None:
            return col
        raw = self.events.columns.get(name)
        if raw is None:
            raise EngineError(f"{self.events.kind} events have no field or column {name!r}")
        col = raw.decode() if isinstance(raw, StringColumn) else raw
        self._decoded[name] = col
        return col

    def take(self, name: str, rows: Rows) -> np.ndarray:
        """Column ``name`` at ``rows`` (all rows if None); gathered once per epoch at the
        home rows, and strings decoded just for the rows asked for."""
        if rows is None:
            return self.get(name)
        home = rows is self._home
        if home:
            out = self._home_cols.get(name)
            if out is not None:
                return out
        raw = None
        if name not in self.derived and name not in self._parts:
            raw = self.events.columns.get(name)
        if isinstance(raw, StringColumn) and name not in self._decoded:
            out = raw.take(rows).decode()
        else:
            out = self.get(name)[rows]
        if home:
            self._home_cols[name] = out
        return out

    def add_parts(self, name: str, parts: list[Part]) -> None:
        """Every worker's share of derived column ``name`` (see :func:`assemble`)."""
        if len(parts) == 1 and parts[0].rows is None:
            self.derived[name] = parts[0].values
            return
        self.derived.pop(name, None)
        self._parts[name] = parts
        for p in parts:
            if p.rows is not None and p.rows is self._home:
                self._home_cols[name] = p.values

    def for_operator(self, op: Operator, rows: Rows = None) -> Mapping[str, np.ndarray]:
        """What a vectorised body may see: fields, ``seq``, ``ts`` and its declared inputs.

        Lazy: a column is sliced (and strings decoded) only when the body asks for it, so a
        body that reads one field of a wide event does not pay for decoding the others.
        """
        names = [*self.events.columns, "seq", "ts", *(c.name for c in op.inputs)]
        return _OperatorColumns(self, dict.fromkeys(names), rows)


class _OperatorColumns(Mapping[str, np.ndarray]):
    """The columns a vectorised body sees, each computed on first access."""

    __slots__ = ("_cache", "_columns", "_names", "_rows")

    def __init__(self, columns: Columns, names: dict[str, None], rows: Rows) -> None:
        self._columns = columns
        self._names = names
        self._rows = rows
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        out = self._cache.get(name)
        if out is not None:
            return out
        if name not in self._names:
            raise KeyError(name)
        out = self._cache[name] = self._columns.take(name, self._rows)
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


@dataclass(slots=True)
class Keyed:
    """Key ids of a kind's events (and their seq and ts), for the rows a worker owns."""

    rows: np.ndarray | None
    ids: np.ndarray
    seqs: np.ndarray
    ts: np.ndarray
    _grouped: tuple[np.ndarray, np.ndarray] | None = None
    _where: dict[str, tuple[np.ndarray, ...]] = field(default_factory=dict)

    def where(self, name: str, mask: Callable[[], np.ndarray]) -> tuple[np.ndarray, ...]:
        """``(mask, ids, seqs, ts)`` of the rows where the condition column ``name`` holds
        (``mask`` computes it at this worker's rows); once per epoch for every table written
        under that condition, which so get the very same arrays (and share key slots: see
        :class:`engine.state.epoch.SharesKeys`)."""
        got = self._where.get(name)
        if got is None:
            keep = mask()
            # Indices, then takes: numpy's boolean subscript branches per row, and a condition
            # that holds for half of the rows at random (to a friend or not) makes it ~5x
            # slower than finding the indices once and taking by them.
            rows = np.flatnonzero(keep)
            got = self._where[name] = (keep, self.ids[rows], self.seqs[rows], self.ts[rows])
        return got

    def grouped(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows grouped by key, in log order within a key, and where each group starts
        (for each grouped position); sorted once per epoch for all the key's tables."""
        if self._grouped is None:
            ids = self.ids
            order = (
                pack_order(ids) if len(ids) and ids.min() >= 0 else np.argsort(ids, kind="stable")
            )
            grouped = ids[order]
            first = np.ones(len(ids), dtype=bool)
            np.not_equal(grouped[1:], grouped[:-1], out=first[1:])
            start = np.maximum.accumulate(np.where(first, np.arange(len(ids)), 0))
            self._grouped = (order, start)
        return self._grouped

    def latest_writes(self, written: np.ndarray | None, before: bool) -> np.ndarray:
        """For each row, the index among ``written`` rows (all rows if None) of the last one
        of its key at or before it (before it, with ``before``), or -1."""
        if written is None and not before:
            return np.arange(len(self.ids), dtype=np.int64)  # every row sees its own write
        order, start = self.grouped()
        return latest_marked(order, start, written, before)


def count_rows(rows: np.ndarray | slice | None, n: int) -> int:
    """How many of ``n`` rows ``rows`` selects."""
    if rows is None:
        return n
    if isinstance(rows, slice):
        return len(range(*rows.indices(n)))
    return len(rows)


def assemble(parts: Sequence[Part], cols: Mapping[str, Columns]) -> None:
    """Hand every worker's share of each derived column to its kind's columns."""
    grouped: dict[tuple[str, str], list[Part]] = {}
    for part in parts:
        grouped.setdefault((part.kind, part.column), []).append(part)
    for (kind, name), group in grouped.items():
        cols[kind].add_parts(name, group)


def _assembled(group: Sequence[Part], n: int) -> np.ndarray:
    """A full-length column from its parts."""
    filled = [p for p in group if len(p.values)] or list(group[:1])
    dtype = np.result_type(*[p.values.dtype for p in filled])
    # Rows no part fills belong to other workers' homes and are never read here.
    out = np.zeros((n, *filled[0].values.shape[1:]), dtype=dtype)
    for p in filled:
        out[p.rows if p.rows is not None else slice(None)] = p.values
    return out
