"""Reader actors of the Ray executor: reading and decoding spread over the nodes.

A reader is plain Python here; :mod:`engine.executors.ray_executor` turns it into an actor
(``ray.remote(RayReader)``), so that importing this module does not import Ray. Each reader
owns a :class:`~engine.log.SourcePart` of a :class:`~engine.log.SplittableSource` (a subset of
its partitions, from the same start positions) and opens it on its own node.

How an epoch gets to the workers without its rows passing through the driver:

1. **Keys.** The driver calls :meth:`RayReader.keys` (one call outstanding per reader: the
   reader reads the next batches while the driver merges). The reader pulls batches from its
   source until it holds about ``keys_per_call`` new records, keeps their columns, and
   answers with *key-only* batches (topic, partition, offsets, timestamps, ``final``; no
   columns) and its source's report (bad records, counters: see
   :class:`~engine.log.ReportingSource`).
2. **Merge.** The driver merges the key-only batches with :func:`~engine.merge.merge_log`,
   exactly as it would merge whole batches (same epoch cuts, ``seq`` numbering and positions),
   which gives *key epochs*: :class:`~engine.log.Epoch` s whose events have no columns.
3. **Pieces.** The driver puts each key epoch into the object store once and calls
   :meth:`RayReader.piece` on every reader with it. A reader finds its own rows of each kind
   (by topic and partition), takes that many of each of its partitions' buffered rows (a
   partition's rows of an epoch are the next ones in offset order: the merge keeps a
   partition's order), checks their offsets against the key epoch's, and returns a
   :class:`Piece`: per kind, the positions of its rows in the kind's events and their columns
   in that order. It answers a small status (its seconds, or a
   :class:`~engine.executors.worker.Failed`) apart from the piece (two returns), so that the
   driver learns of a failure without fetching the piece.
4. **Assembly.** The driver hands every worker the key epoch and all the pieces' references;
   each worker builds the full epoch with :func:`assemble` (the same epoch a driver-side merge
   makes, dictionaries of string columns aside) and processes it as before.

A reader's memory is what it read and the driver has not cut into epochs yet (bounded by the
merge's read-ahead plus one call's worth), plus the pieces of the epochs in flight.

The actor is threaded (``max_concurrency`` > 1), so that a piece is cut while the next keys
are read; pieces are cut strictly in epoch order (each waits for its turn), and a lock guards
the buffers. A method never raises on purpose: errors come back as
:class:`~engine.executors.worker.Failed` naming the reader, its node and its partitions.
"""

from __future__ import annotations

import os
import resource
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engine.errors import EngineError, LogError
from engine.executors.ray_actors import Placed
from engine.executors.worker import Failed
from engine.log import (
    Column,
    Epoch,
    Events,
    PartitionBatch,
    PartitionSpec,
    ReportingSource,
    SourcePart,
    StringColumn,
    concat_columns,
    take_column,
)
from engine.merge import column_types

__all__ = [
    "KEYS_PER_CALL",
    "Keys",
    "Piece",
    "PieceStatus",
    "RayReader",
    "ReaderShare",
    "assemble",
    "describe",
]

#: Records a reader reads for one :meth:`RayReader.keys` call (more if a batch is larger).
KEYS_PER_CALL = 100_000

_I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Keys:
    """A reader's answer to :meth:`RayReader.keys`: key-only batches, its source's report,
    whether its source is exhausted, and the seconds it spent reading them."""

    batches: list[PartitionBatch]
    report: object
    done: bool
    seconds: float


@dataclass(frozen=True, slots=True)
class PieceStatus:
    """How cutting a piece went: the seconds it took."""

    seconds: float


@dataclass(frozen=True, slots=True, eq=False)
class Piece:
    """A reader's rows of one epoch: per kind, the positions of its rows among the kind's
    events (ascending) and their columns in that order."""

    epoch: int
    kinds: Mapping[str, tuple[_I64, Mapping[str, Column]]]


def describe(index: int, placed: Placed | None, specs: Sequence[PartitionSpec]) -> str:
    """``reader i (node IP, pid P; partitions t/0, t/2)``, for messages."""
    where = "" if placed is None else f"node {placed.ip}, pid {placed.pid}; "
    shown = ", ".join(f"{s.topic}/{s.partition}" for s in specs[:8])
    more = f" and {len(specs) - 8} more" if len(specs) > 8 else ""
    return f"reader {index} ({where}partitions {shown}{more})"


@dataclass(slots=True)
class _Rows:
    offsets: _I64
    columns: dict[str, Column]


class ReaderShare:
    """A reader's share without Ray: reads its part, keeps the columns, answers key-only
    batches and cuts pieces (see the module docstring). :class:`RayReader` hosts one in an
    actor; tests drive one directly."""

    def __init__(self, part: SourcePart, keys_per_call: int = KEYS_PER_CALL) -> None:
        if keys_per_call < 1:
            raise EngineError(f"keys_per_call must be >= 1, got {keys_per_call}")
        self.specs = tuple(part.partitions())
        self._part = part
        self._keys_per_call = keys_per_call
        self._batches: Iterator[PartitionBatch] | None = None
        self._source: object = None
        self._local = {(s.topic, s.partition): i for i, s in enumerate(self.specs)}
        self._buffers: list[deque[_Rows]] = [deque() for _ in self.specs]
        #: kind -> column name -> dtype name (or "string"), from the kind's first batch here.
        self._schemas: dict[str, dict[str, str]] = {}
        self._empty: dict[str, dict[str, Column]] = {}
        # Reading (one thread) and cutting pieces (another) share the buffers.
        self._lock = threading.Lock()
        self._lookup: tuple[tuple[str, ...], npt.NDArray[np.int32]] | None = None

    def read(self) -> tuple[list[PartitionBatch], object, bool]:
        """The next key-only batches (about ``keys_per_call`` records), the opened source's
        report (None if it makes none) and whether the source is exhausted."""
        if self._batches is None:
            source = self._part.open()
            self._source = source
            self._batches = iter(source.batches())
        out: list[PartitionBatch] = []
        rows = 0
        done = False
        while rows < self._keys_per_call:
            batch = next(self._batches, None)
            if batch is None:
                done = True
                break
            out.append(self._keep(batch))
            rows += len(batch.offsets)
        report = self._source.report() if isinstance(self._source, ReportingSource) else None
        return out, report, done

    def _keep(self, batch: PartitionBatch) -> PartitionBatch:
        """Buffer the batch's columns; its key-only copy."""
        local = self._local.get((batch.topic, batch.partition))
        if local is None:
            raise LogError(
                f"the source part sent a batch for topic {batch.topic!r} partition "
                f"{batch.partition}, which is not among its partitions"
            )
        count = len(batch.offsets)
        offsets = np.asarray(batch.offsets, dtype=np.int64)
        if count:
            self._check_columns(batch, count)
            with self._lock:
                self._buffers[local].append(_Rows(offsets, dict(batch.columns)))
        return PartitionBatch(
            batch.topic, batch.partition, batch.kind, offsets, batch.ts, {}, batch.final
        )

    def _check_columns(self, batch: PartitionBatch, count: int) -> None:
        at = f"topic {batch.topic!r} partition {batch.partition} at offset {batch.offsets[0]}"
        types = column_types(batch.columns, count, at)
        schema = self._schemas.get(batch.kind)
        if schema is None:
            self._schemas[batch.kind] = types
            self._empty[batch.kind] = {
                name: take_column(col, slice(0, 0)) for name, col in batch.columns.items()
            }
        elif schema != types:
            raise LogError(
                f"batch of {at} does not match the columns of kind {batch.kind!r} "
                f"({sorted(types.items())} vs {sorted(schema.items())}); every partition of a "
                "kind must have the same columns and types"
            )

    def _owner(self, epoch: Epoch) -> npt.NDArray[np.int32]:
        """Per (topic code, partition): this reader's local index of it, or -1."""
        if self._lookup is None or self._lookup[0] != epoch.topics:
            width = max((s.partition for s in self.specs), default=0) + 1
            table = np.full((len(epoch.topics), width), -1, dtype=np.int32)
            code = {t: i for i, t in enumerate(epoch.topics)}
            for i, s in enumerate(self.specs):
                table[code[s.topic], s.partition] = i
            self._lookup = (epoch.topics, table)
        return self._lookup[1]

    def cut(self, epoch: Epoch) -> Piece:
        """This share's piece of ``epoch`` (a key epoch of the merged keys); pieces must be
        cut in epoch order."""
        table = self._owner(epoch)
        width = table.shape[1]
        kinds: dict[str, tuple[_I64, Mapping[str, Column]]] = {}
        for kind, ev in epoch.events.items():
            if not len(ev):
                if kind in self._empty:
                    kinds[kind] = (np.empty(0, np.int64), dict(self._empty[kind]))
                continue
            inside = ev.partition < width
            local = np.where(inside, table[ev.topic, np.minimum(ev.partition, width - 1)], -1)
            rows = np.flatnonzero(local >= 0).astype(np.int64)
            if not len(rows):
                if kind in self._empty:
                    kinds[kind] = (rows, dict(self._empty[kind]))
                continue
            mine = local[rows]
            order = np.argsort(mine, kind="stable")
            counts = np.bincount(mine, minlength=len(self.specs))
            taken: list[_Rows] = []
            with self._lock:
                for p in np.flatnonzero(counts).tolist():
                    taken.extend(self._take(p, int(counts[p])))
            offsets = np.concatenate([t.offsets for t in taken])
            expected = ev.offset[rows[order]]
            if not np.array_equal(offsets, expected):
                bad = int(np.flatnonzero(offsets != expected)[0])
                raise LogError(
                    f"kind {kind!r}: the reader's next record is at offset {offsets[bad]} where "
                    f"epoch {epoch.index} has offset {expected[bad]}; the source part did not "
                    "deliver what the merge was told"
                )
            names = self._schemas.get(kind, {})
            inverse = np.empty(len(rows), dtype=np.int64)
            inverse[order] = np.arange(len(rows), dtype=np.int64)
            columns = {
                name: take_column(concat_columns([t.columns[name] for t in taken]), inverse)
                for name in names
            }
            kinds[kind] = (rows, columns)
        return Piece(epoch.index, kinds)

    def _take(self, local: int, count: int) -> list[_Rows]:
        """The next ``count`` buffered rows of local partition ``local``."""
        buffer = self._buffers[local]
        out: list[_Rows] = []
        need = count
        while need:
            if not buffer:
                spec = self.specs[local]
                raise LogError(
                    f"epoch needs {need} more rows of topic {spec.topic!r} partition "
                    f"{spec.partition} than the reader holds"
                )
            head = buffer[0]
            n = len(head.offsets)
            if n <= need:
                out.append(buffer.popleft())
                need -= n
                continue
            cut, rest = slice(0, need), slice(need, None)
            out.append(
                _Rows(head.offsets[cut], {k: take_column(c, cut) for k, c in head.columns.items()})
            )
            buffer[0] = _Rows(
                head.offsets[rest], {k: take_column(c, rest) for k, c in head.columns.items()}
            )
            need = 0
        return out


class RayReader:
    """Reads one share of the source and cuts its pieces of the epochs, in a Ray actor (see
    the module docstring)."""

    def __init__(
        self,
        index: int,
        part: SourcePart,
        first_epoch: int = 0,
        keys_per_call: int = KEYS_PER_CALL,
    ) -> None:
        """Reader ``index`` of ``part``; its first piece is of epoch ``first_epoch`` (a
        resumed run's first)."""
        import ray

        self.index = index
        self.share = ReaderShare(part, keys_per_call)
        context = ray.get_runtime_context()
        ip: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        self.placed = Placed(ip, context.get_node_id(), os.getpid())
        self._turn = threading.Condition()
        self._next_piece = first_epoch

    def where(self) -> Placed:
        """Where this reader runs."""
        return self.placed

    def peak(self) -> int:
        """This actor's peak RSS, bytes."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def keys(self) -> Keys | Failed:
        """The next key-only batches (see :meth:`ReaderShare.read`)."""
        t0 = time.perf_counter()
        try:
            batches, report, done = self.share.read()
        except BaseException as exc:
            return self._failed(exc, "reading")
        return Keys(batches, report, done, time.perf_counter() - t0)

    def piece(self, epoch: Epoch) -> tuple[PieceStatus | Failed, Piece | None]:
        """This reader's piece of ``epoch`` (a key epoch), in epoch order."""
        with self._turn:
            self._turn.wait_for(lambda: self._next_piece == epoch.index)
        t0 = time.perf_counter()
        try:
            piece = self.share.cut(epoch)
        except BaseException as exc:
            return self._failed(exc, f"cutting its piece of epoch {epoch.index}"), None
        finally:
            with self._turn:
                self._next_piece = epoch.index + 1
                self._turn.notify_all()
        return PieceStatus(time.perf_counter() - t0), piece

    def _failed(self, exc: BaseException, doing: str) -> Failed:
        where = describe(self.index, self.placed, self.share.specs)
        if isinstance(exc, EngineError):
            detail = str(exc)
        else:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return Failed(self.index, f"{where} failed {doing}: {detail}", None, None)


def assemble(keys: Epoch, pieces: Sequence[Piece]) -> Epoch:
    """The full epoch from a key epoch and every reader's piece of it (see the module
    docstring)."""
    events: dict[str, Events] = {}
    for kind, ev in keys.events.items():
        parts = [p.kinds[kind] for p in pieces if kind in p.kinds]
        n = len(ev)
        if not parts:
            if n:
                raise LogError(
                    f"no reader sent the {n} events of kind {kind!r} of epoch {keys.index}"
                )
            events[kind] = ev
            continue
        names = list(parts[0][1])
        first = [_type_of(parts[0][1][c]) for c in names]
        for _, cols in parts[1:]:
            if list(cols) != names or [_type_of(cols[c]) for c in names] != first:
                raise LogError(
                    f"the readers' columns of kind {kind!r} differ in epoch {keys.index}; every "
                    "partition of a kind must have the same columns and types"
                )
        positions = np.concatenate([rows for rows, _ in parts]) if len(parts) > 1 else parts[0][0]
        if len(positions) != n:
            raise LogError(
                f"the readers sent {len(positions)} of the {n} events of kind {kind!r} of "
                f"epoch {keys.index}"
            )
        if len(parts) == 1:
            columns = dict(parts[0][1])
        else:
            place = np.empty(n, dtype=np.int64)
            place[positions] = np.arange(n, dtype=np.int64)
            columns = {
                name: take_column(concat_columns([cols[name] for _, cols in parts]), place)
                for name in names
            }
        events[kind] = Events(kind, ev.seq, ev.ts, ev.topic, ev.partition, ev.offset, columns)
    return Epoch(
        index=keys.index,
        seq_start=keys.seq_start,
        seq_end=keys.seq_end,
        ts=keys.ts,
        kind=keys.kind,
        kinds=keys.kinds,
        topics=keys.topics,
        events=events,
    )


def _type_of(column: Column) -> str:
    return "string" if isinstance(column, StringColumn) else str(column.dtype)
