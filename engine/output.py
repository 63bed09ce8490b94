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

import struct
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from engine.log import Epoch

__all__ = [
    "ABSENT",
    "OutputChunk",
    "OutputRouter",
    "ShareSink",
    "Sink",
    "absent_column",
    "canonical_bytes",
    "collect",
    "merge_shares",
    "split_output",
]


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
        ``epoch`` has every event's coordinates (``seq``, time, topic, partition, offset); an
        executor whose driver never holds the rows (ray with reader actors) passes its events
        without their columns.
        """
        ...


class OutputRouter(Protocol):
    """Which of a :class:`ShareSink`'s writers each output record goes to. Picklable: the
    ray executor's workers run it on the records they make."""

    @property
    def parts(self) -> int:
        """How many writers there are."""
        ...

    def __call__(self, chunk: OutputChunk) -> npt.NDArray[np.intp]:
        """Each record's writer, ``0 <= writer < parts``."""
        ...


@runtime_checkable
class ShareSink(Sink, Protocol):
    """A :class:`Sink` whose writers take an epoch's output where they run, unmerged.

    The ray executor's workers cut their output of an epoch into one part per writer
    (:func:`split_output` with the sink's :attr:`router`) and hand the sink each part as an
    opaque handle (a Ray object reference), which the driver never fetches: each writer, on
    its own node, fetches its parts from every worker and merges them by ``seq``
    (:func:`merge_shares`), so that no single process touches every output record.
    """

    #: Which writer each record goes to; None: one writer, which takes everything.
    router: OutputRouter | None

    def write_shares(self, shares: Sequence[Sequence[object]], epoch: Epoch, records: int) -> None:
        """Take one epoch's output as ``shares[w][k]``, worker ``w``'s records for writer
        ``k`` (one part per writer, or a single part without a router), ``records`` records
        in all; called as :meth:`Sink.write` would be."""
        ...


def split_output(chunks: Sequence[OutputChunk], router: OutputRouter) -> list[list[OutputChunk]]:
    """``chunks`` cut into ``router.parts`` lists, each record in its writer's; every part
    keeps serial order."""
    parts: list[list[OutputChunk]] = [[] for _ in range(router.parts)]
    for chunk in chunks:
        if not len(chunk):
            continue
        owner = np.asarray(router(chunk), dtype=np.intp)
        # A stable sort of small integers (numpy's radix sort): each writer's rows in order.
        order = np.argsort(owner, kind="stable")
        bounds = np.searchsorted(owner[order], np.arange(router.parts + 1)).tolist()
        for k in range(router.parts):
            rows = order[bounds[k] : bounds[k + 1]]
            if len(rows) == len(chunk):
                parts[k].append(chunk)
            elif len(rows):
                parts[k].append(
                    OutputChunk(
                        chunk.output,
                        chunk.seq[rows],
                        chunk.keys[rows],
                        {name: column[rows] for name, column in chunk.columns.items()},
                    )
                )
    return parts


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

    A record is its ``seq`` (which event produced it: the sink writes it in the
    ``restream.seq`` header and a restart skips by it), its key and its fields. Floats are
    their exact IEEE-754 bits (``repr`` would print every NaN alike and hide a payload);
    ints, bools, strings and the rest are their ``repr``, which tells ``True`` from ``1``.
    """
    out: dict[str, list[str]] = {}
    for chunk in chunks:
        lines = out.setdefault(chunk.output, [])
        seqs = chunk.seq.tolist()
        for seq, (key, value) in zip(seqs, chunk.records(), strict=True):
            fields = ",".join(f"{name!r}:{_canonical(v)}" for name, v in sorted(value.items()))
            lines.append(f"{seq}|{_canonical(key)}|{fields}")
    return {name: "\n".join(lines).encode() for name, lines in out.items()}


def _canonical(value: Any) -> str:
    """Exact text of one value: floats (numpy's too) by their bits, containers item by item."""
    if isinstance(value, (bool, np.bool_)):
        return repr(bool(value))
    if isinstance(value, np.floating) and not isinstance(value, np.float64):
        # float32 and the like widen to a double exactly, NaN payload included.
        value = float(value)
    if isinstance(value, float):
        return "f" + struct.pack(">d", value).hex()
    if isinstance(value, np.integer):
        return repr(int(value))
    if isinstance(value, (tuple, list)):
        inner = ",".join(_canonical(v) for v in value)
        return f"{type(value).__name__}[{inner}]"
    if isinstance(value, dict):
        items = sorted((repr(k), _canonical(v)) for k, v in value.items())
        return "dict{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    return repr(value)


def merge_shares(shares: list[list[OutputChunk]]) -> list[OutputChunk]:
    """Each worker's chunks of one epoch -> one chunk per stream in serial order (all records
    of one event come from one worker, in order: a stable sort by ``seq`` interleaves them)."""
    by_name: dict[str, list[OutputChunk]] = {}
    for chunks in shares:
        for chunk in chunks:
            by_name.setdefault(chunk.output, []).append(chunk)
    out = []
    for name, all_parts in by_name.items():
        # A worker with no records for a stream may not even know its columns.
        parts = [p for p in all_parts if len(p)] or all_parts[:1]
        if len(parts) == 1:
            out.append(parts[0])
            continue
        seq = np.concatenate([p.seq for p in parts])
        # Stable: all records of one event come from one worker, already in order.
        order = np.argsort(seq, kind="stable")
        keys = _concat([p.keys for p in parts])[order]
        names = list(dict.fromkeys(n for p in parts for n in p.columns))
        columns = {n: _concat([_column_or_absent(p, n) for p in parts])[order] for n in names}
        out.append(OutputChunk(name, seq[order], keys, columns))
    return out


def _column_or_absent(chunk: OutputChunk, name: str) -> np.ndarray:
    col = chunk.columns.get(name)
    return absent_column(len(chunk)) if col is None else col


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    if any(p.dtype == object for p in parts) and not all(p.dtype == object for p in parts):
        out = np.empty(sum(len(p) for p in parts), dtype=object)
        i = 0
        for p in parts:
            out[i : i + len(p)] = p.tolist()
            i += len(p)
        return out
    return np.concatenate(parts)
