"""Output records in serial order, and their canonical bytes for comparing executors.

Executors hand the sink one :class:`OutputChunk` per output stream per epoch, its rows
already in serial order ``(seq, phase, operator, emit index)``, together with the epoch itself
(whose events carry each ``seq``'s source topic, partition and offset).

A record's fields are exactly those its emit returned. When records of one stream carry
different field sets, the chunk's column for a field a record lacks holds :data:`ABSENT` at
that row, so a record reads back the same whichever records share its chunk (epoch size,
worker count and batching never change a record).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from engine.log import Epoch

__all__ = ["ABSENT", "OutputChunk", "Sink", "absent_column", "canonical_bytes", "collect"]


class _Absent:
    """The type of :data:`ABSENT`; one instance per process, kept one across pickling."""

    __slots__ = ()
    _instance: _Absent | None = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = object.__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"

    def __reduce__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


ABSENT = _Absent()
"""Marks, in an object column of an :class:`OutputChunk`, a field the row's record lacks."""


def absent_column(n: int) -> np.ndarray:
    """An object column of ``n`` rows, every one lacking the field."""
    col = np.empty(n, dtype=object)
    col.fill(ABSENT)
    return col


@dataclass(frozen=True, slots=True)
class OutputChunk:
    """Records of one output stream, columnar, in serial order."""

    output: str
    seq: np.ndarray
    keys: np.ndarray
    columns: Mapping[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.seq)

    def records(self) -> list[tuple[Hashable, dict[str, Any]]]:
        """The records as Python values: ``(key, {field: value})``, absent fields left out."""
        names = list(self.columns)
        cols = [self.columns[n].tolist() for n in names]
        keys = self.keys.tolist()
        return [
            (keys[i], {n: c[i] for n, c in zip(names, cols, strict=True) if c[i] is not ABSENT})
            for i in range(len(keys))
        ]

    @classmethod
    def from_records(
        cls, output: str, seqs: Sequence[int], records: Sequence[tuple[Hashable, Mapping[str, Any]]]
    ) -> OutputChunk:
        """Build a chunk from Python records (object columns keep values exactly)."""
        names: list[str] = []
        for _, value in records:
            for n in value:
                if n not in names:
                    names.append(n)
        columns = {}
        for n in names:
            col = np.empty(len(records), dtype=object)
            col[:] = [value.get(n, ABSENT) for _, value in records]
            columns[n] = col
        keys = np.empty(len(records), dtype=object)
        keys[:] = [k for k, _ in records]
        return cls(output, np.asarray(seqs, dtype=np.int64), keys, columns)


class Sink(Protocol):
    """Where executors deliver output, epoch by epoch, in serial order."""

    def write(self, chunks: Sequence[OutputChunk], epoch: Epoch) -> None:
        """Take one epoch's output (one chunk per stream that has records).

        Called once per epoch, epochs in order, after every record of ``epoch`` was processed.
        """
        ...


class _Collector:
    def __init__(self) -> None:
        self.chunks: list[OutputChunk] = []

    def write(self, chunks: Sequence[OutputChunk], epoch: Epoch) -> None:
        self.chunks.extend(chunks)


def collect() -> _Collector:
    """A sink that keeps every chunk in memory (tests, benchmarks, small runs)."""
    return _Collector()


def canonical_bytes(chunks: Iterable[OutputChunk]) -> dict[str, bytes]:
    """Per output stream, a byte string that is equal iff the records are identical.

    ``repr`` of Python ints, bools, strings and floats is exact (floats round-trip), and
    tells ``True`` from ``1`` and ``-0.0`` from ``0.0``.
    """
    out: dict[str, list[str]] = {}
    for chunk in chunks:
        lines = out.setdefault(chunk.output, [])
        for key, value in chunk.records():
            lines.append(repr((key, sorted(value.items()))))
    return {name: "\n".join(lines).encode() for name, lines in out.items()}
