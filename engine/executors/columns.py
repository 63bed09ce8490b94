"""The columns of an epoch as the runtime sees them, and the parts workers exchange.

:class:`Columns` holds one kind's events with its derived columns and, per key spec, the key
ids of the rows a worker owns (:class:`Keyed`); :class:`Part` is one worker's share of a
derived column, and :func:`assemble` puts every worker's shares back in place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

from engine.errors import EngineError
from engine.keys import KeySpec
from engine.log import Events, StringColumn
from engine.pipeline import Operator
from engine.state.packing import pack_order

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
    """The columns of one kind's events in an epoch: fields, metadata and derived columns."""

    __slots__ = ("_decoded", "derived", "events", "keyed")

    def __init__(self, events: Events) -> None:
        self.events = events
        self.derived: dict[str, np.ndarray] = {}
        self.keyed: dict[tuple[KeySpec, bool], Keyed] = {}
        self._decoded: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.events)

    def get(self, name: str) -> np.ndarray:
        """A column by name, strings decoded to an object array."""
        if name in self.derived:
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
        c, rows = self._columns, self._rows
        raw = c.events.columns.get(name) if name not in c.derived else None
        if isinstance(raw, StringColumn) and rows is not None and name not in c._decoded:
            out = raw.take(rows).decode()  # decode just this worker's rows
        else:
            out = c.get(name)
            if rows is not None:
                out = out[rows]
        self._cache[name] = out
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
        order, start = self.grouped()
        n = len(order)
        pos = np.arange(n, dtype=np.int64)
        marks = pos if written is None else np.where(written[order], pos, -1)
        last = np.maximum.accumulate(marks) if n else marks
        if before:
            last = np.concatenate([[-1], last[:-1]]) if n else last
        found = last >= start
        row = order[np.maximum(last, 0)]
        index = row if written is None else np.cumsum(written, dtype=np.int64)[row] - 1
        out = np.empty(n, dtype=np.int64)
        out[order] = np.where(found, index, -1)
        return out


def count_rows(rows: np.ndarray | slice | None, n: int) -> int:
    """How many of ``n`` rows ``rows`` selects."""
    if rows is None:
        return n
    if isinstance(rows, slice):
        return len(range(*rows.indices(n)))
    return len(rows)


def assemble(parts: Sequence[Part], cols: Mapping[str, Columns]) -> None:
    """Put every worker's share of each derived column into place."""
    grouped: dict[tuple[str, str], list[Part]] = {}
    for part in parts:
        grouped.setdefault((part.kind, part.column), []).append(part)
    for (kind, name), group in grouped.items():
        c = cols[kind]
        if len(group) == 1 and group[0].rows is None:
            c.derived[name] = group[0].values
            continue
        filled = [p for p in group if len(p.values)] or group[:1]
        dtype = np.result_type(*[p.values.dtype for p in filled])
        # Rows no part fills belong to other workers' homes and are never read here.
        out = np.zeros((len(c), *filled[0].values.shape[1:]), dtype=dtype)
        for p in filled:
            out[p.rows if p.rows is not None else slice(None)] = p.values
        c.derived[name] = out
