"""The deterministic streaming k-way merge of partition batches into epochs (DESIGN.md section 1).

The log is the k-way merge of the partitions that always takes the head with the smallest key
``(ts, topic, partition, offset)``. Inside a partition timestamps may go backwards, so the heads
are not sorted streams. The merge still equals a stable sort by the *effective key*
``(running max of ts within the partition, topic, partition, offset)``: when a record with
timestamp ``m`` is taken, every other head is greater, so every other partition's effective keys
stay above it; the records after it in its own partition with smaller timestamps are then the
smallest heads and follow it at once, which is what their effective key (``m``, same partition,
larger offset) says. Effective keys are non-decreasing within a partition, so a partition's
future records all have keys above its last buffered one. Records whose key is at most the
*frontier* (the smallest such last key over the unfinished partitions) can therefore be emitted:
nothing unread can precede them. A partition that has sent nothing yet and is not final leaves
the frontier unknown, so nothing is emitted until it speaks.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engine.errors import LogError
from engine.log import (
    Column,
    Epoch,
    Events,
    PartitionBatch,
    PartitionSpec,
    Source,
    StringColumn,
    concat_columns,
    take_column,
)
from engine.positions import LogPosition

__all__ = ["column_types", "merge_log"]

logger = logging.getLogger(__name__)

_I64 = npt.NDArray[np.int64]
_STRING = "StringColumn"
_MAX_KINDS = int(np.iinfo(np.int8).max) + 1
_MAX_TOPICS = int(np.iinfo(np.int16).max) + 1


def column_types(columns: Mapping[str, Column], count: int, at: str) -> dict[str, str]:
    """Each column's type (its dtype's name, or "StringColumn"), after checking it is a 1-D
    array or a :class:`StringColumn` (codes inside its dictionary) with ``count`` rows;
    :class:`LogError` naming the column and ``at`` (where the batch comes from) if not."""
    types: dict[str, str] = {}
    for name, col in columns.items():
        if isinstance(col, StringColumn):
            if count and (col.codes.min() < 0 or col.codes.max() >= len(col.values)):
                raise LogError(f"batch of {at}: column {name!r} has codes outside its dictionary")
            types[name] = _STRING
        elif isinstance(col, np.ndarray) and col.ndim == 1:
            types[name] = str(col.dtype)
        else:
            raise LogError(
                f"batch of {at}: column {name!r} must be a 1-D numpy array or a "
                f"StringColumn, got {type(col).__name__}"
            )
        if len(col) != count:
            raise LogError(
                f"batch of {at}: column {name!r} has {len(col)} rows but the batch has "
                f"{count} offsets; every column needs one row per record"
            )
    return types


def merge_log(
    source: Source, *, epoch_size: int, start: LogPosition | None = None
) -> Iterator[Epoch]:
    """Merge the source into the log and yield its epochs of ``epoch_size`` events.

    Streaming: batches are pulled only as needed and records are emitted as soon as no unread
    record can precede them (see the module docstring for the algorithm).

    ``epoch_size`` must be >= 1; the last epoch may be shorter and an empty log has no epochs.
    Raises :class:`LogError` (naming topic, partition and offset) on malformed input.

    ``start`` continues a log whose prefix up to that position was merged before (resuming
    from a checkpoint): the source delivers each partition of the position from its
    ``next_offset`` on. Numbering continues at ``start.seq`` and ``start.epoch``, and each such
    partition's running maximum of timestamps at its ``max_ts``, so the rest of the log and its
    epochs are exactly those of a merge that never stopped. (Epochs are cut by count alone:
    every epoch but the last has ``epoch_size`` events, so epoch ``i`` covers seqs
    ``i * epoch_size ..`` whatever the batches and buffering.)
    """
    if isinstance(epoch_size, bool) or not isinstance(epoch_size, int) or epoch_size < 1:
        raise LogError(f"epoch_size must be an int >= 1, got {epoch_size!r}")
    merger = _Merger(source, epoch_size)
    if start is not None:
        merger.resume(start)
    return merger.run()


@dataclass(frozen=True, slots=True)
class _Chunk:
    eff: _I64  # running max of ts within the partition, up to each record
    ts: _I64
    offsets: _I64
    columns: Mapping[str, Column]
    first: int  # eff[0] and eff[-1], as ints for cheap comparisons
    last: int

    @classmethod
    def of(cls, eff: _I64, ts: _I64, offsets: _I64, columns: Mapping[str, Column]) -> _Chunk:
        return cls(eff, ts, offsets, columns, int(eff[0]), int(eff[-1]))

    def cut(self, lo: int, hi: int | None) -> _Chunk:
        part = slice(lo, hi)
        cols = {name: take_column(c, part) for name, c in self.columns.items()}
        return _Chunk.of(self.eff[part], self.ts[part], self.offsets[part], cols)


class _Partition:
    __slots__ = ("chunks", "final", "kind", "last_offset", "max_ts", "pidx", "resumed", "where")

    def __init__(self, spec: PartitionSpec, pidx: int, kind: int) -> None:
        self.where = f"topic {spec.topic!r} partition {spec.partition}"
        self.pidx = pidx  # rank of (topic, partition): the merge key's middle part
        self.kind = kind
        self.final = False
        self.last_offset: int | None = None
        self.max_ts: int | None = None
        self.chunks: deque[_Chunk] = deque()
        # The offset a resumed merge expects next (its checkpoint's), until a record arrives.
        self.resumed: int | None = None

    @property
    def blocking(self) -> bool:
        """Its next record's key is unknown, so nothing can be emitted."""
        return not self.final and self.last_offset is None


@dataclass(frozen=True, slots=True)
class _Segment:
    """Merged records ready for epochs, in seq order."""

    start: int
    ts: _I64
    kind: npt.NDArray[np.int8]
    events: Mapping[str, Events]

    def split(self, count: int) -> tuple[_Segment, _Segment]:
        seq = self.start + count
        head: dict[str, Events] = {}
        tail: dict[str, Events] = {}
        for name, ev in self.events.items():
            j = int(np.searchsorted(ev.seq, seq))
            if j:
                head[name] = ev.take(slice(0, j))
            if j < len(ev):
                tail[name] = ev.take(slice(j, None))
        return (
            _Segment(self.start, self.ts[:count], self.kind[:count], head),
            _Segment(seq, self.ts[count:], self.kind[count:], tail),
        )


def _ints(values: npt.NDArray[np.int64], what: str, where: str) -> _I64:
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise LogError(
            f"batch of {where}: {what} must be a 1-D integer array, got "
            f"{array.ndim}-D {array.dtype}"
        )
    return array.astype(np.int64, copy=False)


class _Merger:
    def __init__(self, source: Source, epoch_size: int) -> None:
        self._source = source
        self._epoch_size = epoch_size
        specs = list(source.partitions())
        keys = [(s.topic, s.partition) for s in specs]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise LogError(
                f"source declares topic {dup[0]!r} partition {dup[1]} more than once; "
                "declare each partition once"
            )
        self._kinds = tuple(sorted({s.kind for s in specs}))
        self._topics = tuple(sorted({s.topic for s in specs}))
        if len(self._kinds) > _MAX_KINDS or len(self._topics) > _MAX_TOPICS:
            raise LogError(
                f"the log has {len(self._kinds)} kinds and {len(self._topics)} topics; at most "
                f"{_MAX_KINDS} kinds and {_MAX_TOPICS} topics are supported"
            )
        kind_code = {k: i for i, k in enumerate(self._kinds)}
        topic_code = {t: i for i, t in enumerate(self._topics)}
        specs.sort(key=lambda s: (s.topic, s.partition))
        self._parts = [_Partition(s, i, kind_code[s.kind]) for i, s in enumerate(specs)]
        self._by_key = {(s.topic, s.partition): p for s, p in zip(specs, self._parts, strict=True)}
        self._kind_of = np.array([kind_code[s.kind] for s in specs], dtype=np.int8)
        self._topic_of = np.array([topic_code[s.topic] for s in specs], dtype=np.int16)
        self._partition_of = np.array([s.partition for s in specs], dtype=np.int32)
        self._blocking = len(specs)
        # kind -> column name -> dtype name or _STRING, fixed by the kind's first batch
        self._schemas: dict[str, dict[str, str]] = {}
        self._schema_from: dict[str, str] = {}
        self._empty: dict[str, dict[str, Column]] = {}
        self._ready: deque[_Segment] = deque()
        self._ready_count = 0
        self._seq_merged = 0
        self._seq_cut = 0
        self._epoch = 0
        self._frontier_rank = -1  # partition rank of the frontier at the last emit

    def resume(self, start: LogPosition) -> None:
        """Continue after the prefix of the log that ends at ``start``."""
        size = self._epoch_size
        if start.epoch < 0 or not (start.epoch - 1) * size < start.seq <= start.epoch * size:
            raise LogError(
                f"cannot resume at seq {start.seq} as epoch {start.epoch} with epoch_size "
                f"{size}: the position was taken with another epoch size; resume with the "
                "epoch size of the run that took it"
            )
        for (topic, partition), pos in start.partitions.items():
            part = self._by_key.get((topic, partition))
            if part is None:
                raise LogError(
                    f"the resume position has topic {topic!r} partition {partition}, which the "
                    "source does not declare; resume with the same input topics and partitions"
                )
            # Its next record's key is bounded below by the position: it no longer blocks.
            if part.blocking:
                self._blocking -= 1
            part.last_offset = pos.next_offset - 1
            part.max_ts = pos.max_ts
            part.resumed = pos.next_offset
        self._seq_merged = self._seq_cut = start.seq
        self._epoch = start.epoch

    def run(self) -> Iterator[Epoch]:
        pulled = 0
        for batch in self._source.batches():
            count, wake = self._accept(batch)
            pulled += count
            # Merging after every batch would cost O(partitions) each time; merging after every
            # epoch's worth of records keeps the read-ahead to about an epoch.
            if self._blocking == 0 and (wake or pulled >= self._epoch_size):
                pulled = 0
                self._emit()
                while self._ready_count >= self._epoch_size:
                    yield self._cut(self._epoch_size)
        open_parts = [p for p in self._parts if not p.final]
        if open_parts:
            p = open_parts[0]
            raise LogError(
                f"the source ended without a final batch for {p.where} (last offset "
                f"{p.last_offset}) and {len(open_parts) - 1} other partition(s); a source must "
                "end every partition with final=True"
            )
        self._emit()
        while self._ready_count:
            yield self._cut(min(self._epoch_size, self._ready_count))
        logger.debug("merged %s events into %s epochs", self._seq_cut, self._epoch)

    def _accept(self, batch: PartitionBatch) -> tuple[int, bool]:
        """Validate and buffer one batch; return its size and whether to merge right away."""
        part = self._by_key.get((batch.topic, batch.partition))
        if part is None:
            raise LogError(
                f"the source sent a batch for topic {batch.topic!r} partition {batch.partition}, "
                "which its partitions() does not declare; declare every partition it reads"
            )
        where = part.where
        if part.final:
            raise LogError(f"the source sent a batch for {where} after its final batch")
        kind = self._kinds[part.kind]
        if batch.kind != kind:
            raise LogError(
                f"batch of {where} says kind {batch.kind!r} but the partition is declared as "
                f"{kind!r}"
            )
        offsets = _ints(batch.offsets, "offsets", where)
        ts = _ints(batch.ts, "ts", where)
        count = len(offsets)
        at = f"{where} at offset {offsets[0]}" if count else f"{where} (empty batch)"
        if len(ts) != count:
            raise LogError(f"batch of {at}: ts has {len(ts)} rows but offsets has {count}")
        self._check_columns(kind, batch.columns, count, at)
        was_blocking = part.blocking
        if count:
            bad = np.flatnonzero(offsets[1:] <= offsets[:-1])
            if len(bad):
                i = int(bad[0]) + 1
                raise LogError(
                    f"offsets of {where} do not increase: offset {offsets[i]} follows "
                    f"{offsets[i - 1]}; a partition's records must come in offset order"
                )
            if part.resumed is not None and offsets[0] < part.resumed:
                raise LogError(
                    f"the source resumed {where} at offset {offsets[0]}, before the resume "
                    f"position's offset {part.resumed}; start each partition of the position at "
                    "its next_offset"
                )
            part.resumed = None
            if part.last_offset is not None and offsets[0] <= part.last_offset:
                raise LogError(
                    f"offsets of {where} do not increase: batch starts at offset {offsets[0]} "
                    f"after offset {part.last_offset}; a partition's records must come in "
                    "offset order, each once"
                )
            eff = np.maximum.accumulate(ts)
            if part.max_ts is not None and eff[0] < part.max_ts:
                np.maximum(eff, part.max_ts, out=eff)
            part.chunks.append(_Chunk.of(eff, ts, offsets, dict(batch.columns)))
            part.last_offset = int(offsets[-1])
            part.max_ts = int(eff[-1])
        part.final = batch.final
        if was_blocking and not part.blocking:
            self._blocking -= 1
            return count, True
        # Only the partition that held the frontier last time can move it by finishing.
        return count, part.final and part.pidx == self._frontier_rank

    def _check_columns(self, kind: str, columns: Mapping[str, Column], count: int, at: str) -> None:
        if not count and not columns:
            return  # an empty batch may be a bare end-of-partition marker
        types = column_types(columns, count, at)
        schema = self._schemas.get(kind)
        if schema is None:
            self._schemas[kind] = types
            self._schema_from[kind] = at
            self._empty[kind] = {
                name: StringColumn(np.empty(0, np.int32), np.empty(0, object))
                if isinstance(col, StringColumn)
                else np.empty(0, col.dtype)
                for name, col in columns.items()
            }
        elif types != schema:
            missing = sorted(set(schema) - set(types))
            extra = sorted(set(types) - set(schema))
            changed = sorted(n for n in set(types) & set(schema) if types[n] != schema[n])
            detail = "; ".join(
                f"{label} {names}"
                for label, names in (
                    ("missing", missing),
                    ("unexpected", extra),
                    ("with another type", [f"{n} ({types[n]} vs {schema[n]})" for n in changed]),
                )
                if names
            )
            raise LogError(
                f"batch of {at} does not match the columns of kind {kind!r} (set by the batch "
                f"of {self._schema_from[kind]}): {detail}; every partition of a kind must have "
                "the same columns and types"
            )

    def _frontier(self) -> tuple[int, int] | None:
        """(effective ts, partition rank) of the smallest last key; None when all are final."""
        best: tuple[int, int, int] | None = None
        for part in self._parts:
            if not part.final:
                assert part.max_ts is not None and part.last_offset is not None
                key = (part.max_ts, part.pidx, part.last_offset)
                if best is None or key < best:
                    best = key
        return None if best is None else (best[0], best[1])

    def _emit(self) -> None:
        """Merge every buffered record whose key is at most the frontier into a segment."""
        frontier = self._frontier()
        self._frontier_rank = -1 if frontier is None else frontier[1]
        pieces: list[tuple[_Partition, _Chunk]] = []
        for part in self._parts:
            chunks = part.chunks
            if not chunks:
                continue
            if frontier is None or part.pidx == frontier[1]:
                pieces.extend((part, c) for c in chunks)
                chunks.clear()
                continue
            # Emit eff <= limit; ties on ts go to the smaller (topic, partition) rank.
            limit = frontier[0] if part.pidx < frontier[1] else frontier[0] - 1
            while chunks:
                chunk = chunks[0]
                if chunk.last <= limit:
                    pieces.append((part, chunks.popleft()))
                    continue
                if chunk.first <= limit:
                    k = int(np.searchsorted(chunk.eff, limit, "right"))
                    pieces.append((part, chunk.cut(0, k)))
                    chunks[0] = chunk.cut(k, None)
                break
        if pieces:
            self._merge(pieces)

    def _merge(self, pieces: list[tuple[_Partition, _Chunk]]) -> None:
        lengths = np.array([len(c.offsets) for _, c in pieces], dtype=np.int64)
        total = int(lengths.sum())
        # Pieces are in rank order and each is sorted by (eff, offset), so a stable sort on
        # eff alone breaks ties by (topic, partition, offset).
        perm = np.argsort(np.concatenate([c.eff for _, c in pieces]), kind="stable")
        ts = np.concatenate([c.ts for _, c in pieces])[perm]
        offset = np.concatenate([c.offsets for _, c in pieces])[perm]
        ranks = np.array([p.pidx for p, _ in pieces], dtype=np.int32)
        pidx = np.repeat(ranks, lengths)[perm]
        kind = self._kind_of[pidx]
        topic = self._topic_of[pidx]
        partition = self._partition_of[pidx]
        seq = np.arange(self._seq_merged, self._seq_merged + total, dtype=np.int64)
        present = sorted({p.kind for p, _ in pieces})
        events: dict[str, Events] = {}
        if len(present) == 1:
            name = self._kinds[present[0]]
            cols = self._columns(name, [c for _, c in pieces], perm)
            events[name] = Events(name, seq, ts, topic, partition, offset, cols)
        else:
            piece_kind = np.array([p.kind for p, _ in pieces], dtype=np.int8)
            starts = np.cumsum(lengths) - lengths
            kind_starts = np.zeros(len(pieces), dtype=np.int64)
            for code in present:
                mine = piece_kind == code
                kind_starts[mine] = np.cumsum(lengths[mine]) - lengths[mine]
            # position in the concatenation of all pieces -> position in its kind's pieces
            local = np.arange(total, dtype=np.int64) - np.repeat(starts - kind_starts, lengths)
            for code in present:
                name = self._kinds[code]
                pos = np.flatnonzero(kind == code)
                chunks = [c for p, c in pieces if p.kind == code]
                cols = self._columns(name, chunks, local[perm[pos]])
                events[name] = Events(
                    name, seq[pos], ts[pos], topic[pos], partition[pos], offset[pos], cols
                )
        self._ready.append(_Segment(self._seq_merged, ts, kind, events))
        self._ready_count += total
        self._seq_merged += total

    def _columns(
        self, kind: str, chunks: list[_Chunk], index: npt.NDArray[np.int64]
    ) -> dict[str, Column]:
        return {
            name: take_column(concat_columns([c.columns[name] for c in chunks]), index)
            for name in self._schemas.get(kind, {})
        }

    def _cut(self, count: int) -> Epoch:
        """The next epoch: the first ``count`` ready records."""
        taken: list[_Segment] = []
        need = count
        while need:
            seg = self._ready[0]
            if len(seg.ts) <= need:
                taken.append(self._ready.popleft())
                need -= len(seg.ts)
            else:
                head, self._ready[0] = seg.split(need)
                taken.append(head)
                need = 0
        events: dict[str, Events] = {}
        for name in self._kinds:
            parts = [s.events[name] for s in taken if name in s.events]
            events[name] = Events.concat(parts) if parts else self._no_events(name)
        start = self._seq_cut
        epoch = Epoch(
            index=self._epoch,
            seq_start=start,
            seq_end=start + count,
            ts=taken[0].ts if len(taken) == 1 else np.concatenate([s.ts for s in taken]),
            kind=taken[0].kind if len(taken) == 1 else np.concatenate([s.kind for s in taken]),
            kinds=self._kinds,
            topics=self._topics,
            events=events,
        )
        self._seq_cut += count
        self._ready_count -= count
        self._epoch += 1
        return epoch

    def _no_events(self, kind: str) -> Events:
        return Events(
            kind,
            np.empty(0, np.int64),
            np.empty(0, np.int64),
            np.empty(0, np.int16),
            np.empty(0, np.int32),
            np.empty(0, np.int64),
            dict(self._empty.get(kind, {})),
        )
