"""The serial executor: the oracle every other executor is tested against.

It is DESIGN.md §1 written out: for each event in ``seq`` order, fire the timers that are due,
then run every operator that subscribes to the event's kind, in phase order (declaration
order within a phase), and collect what they emit. No batching, no vectorisation: plain Python
dictionaries for Python tables and the scalar implementation of the built-in tables.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, cast

from engine.checkpoint import CheckpointStore, EngineSnapshot
from engine.errors import CheckpointError, EngineError, ExecutionError, UndeclaredReadError
from engine.events import Event, events_from_columns
from engine.executors.base import RunStats, auto_epoch_size
from engine.keys import key_function
from engine.log import Epoch, Source, StringColumn
from engine.merge import merge_log
from engine.output import OutputChunk, Sink
from engine.pipeline import Builtin, Derive, Emit, Lookup, Record, TableRef, Update
from engine.planner import Plan, PlannedOperator
from engine.state.aggregates import ScalarTable, make_scalar
from engine.state.clock import NO_TIME, ScalarBounded

__all__ = ["SerialExecutor", "iter_events"]

_MISSING = object()


@dataclass(order=True, slots=True)
class _Timer:
    at: int
    order: int
    table: str = field(compare=False)
    key: Hashable = field(compare=False)
    fn: Callable[[Any], Any] = field(compare=False)


def iter_events(epoch: Epoch) -> list[Event]:
    """The events of an epoch as Python objects, in ``seq`` order."""
    out: list[Event | None] = [None] * len(epoch)
    for ev in epoch.events.values():
        if len(ev) == 0:
            continue
        fields = {
            n: c.decode().tolist() if isinstance(c, StringColumn) else c.tolist()
            for n, c in ev.columns.items()
        }
        for event in events_from_columns(ev, epoch.topics, fields):
            out[event.seq - epoch.seq_start] = event
    assert all(e is not None for e in out)
    return out  # type: ignore[return-value]


class _State:
    """All tables, as of the event being processed."""

    def __init__(self, plan: Plan) -> None:
        self.tables: dict[str, TableRef] = dict(plan.pipeline.tables)
        self.python: dict[str, dict[Hashable, Any]] = {}
        self.builtin: dict[str, ScalarTable] = {}
        for name, ref in self.tables.items():
            if ref.builtin is None:
                self.python[name] = {}
            else:
                self.builtin[name] = make_scalar(ref.builtin)
        # Tables with an allowed lateness, told the stream time before each event.
        self.bounded: list[ScalarBounded] = [
            cast(ScalarBounded, self.builtin[name])
            for name, ref in self.tables.items()
            if ref.builtin is not None and ref.builtin.lateness is not None
        ]
        self.stream_time = NO_TIME
        # Values that the current event overwrote, for reads with before=True.
        self.before: dict[tuple[str, Hashable], Any] = {}
        self.timers: list[_Timer] = []
        self.timer_count = 0

    def read(self, ref: TableRef, key: Hashable, event: Event, before: bool, default: Any) -> Any:
        if ref.builtin is not None:
            present, value = self.builtin[ref.name].read(key, event.seq, event.ts, before=before)
            return value if present else default
        if before:
            old = self.before.get((ref.name, key), _MISSING)
            if old is not _MISSING:
                return default if old is _NOTHING else old
        return self.python[ref.name].get(key, default)

    def write(self, ref: TableRef, key: Hashable, value: Any) -> None:
        table = self.python[ref.name]
        slot = (ref.name, key)
        if slot not in self.before:
            self.before[slot] = table.get(key, _NOTHING)
        table[key] = value

    def fire_timers(self, ts: int) -> None:
        while self.timers and self.timers[0].at <= ts:
            t = heapq.heappop(self.timers)
            ref = self.tables[t.table]
            table = self.python[t.table]
            table[t.key] = t.fn(table.get(t.key, ref.default))


_NOTHING = object()


class _View:
    """The view handed to operator code for one (event, operator)."""

    __slots__ = ("_event", "_key", "_op", "_state", "_table")

    def __init__(
        self,
        state: _State,
        op: PlannedOperator,
        event: Event,
        table: TableRef | None = None,
        key: Hashable = None,
    ) -> None:
        self._state = state
        self._op = op
        self._event = event
        self._table = table
        self._key = key

    def get(self, table: TableRef | str, key: Hashable, *, before: bool = False) -> Any:
        name = table if isinstance(table, str) else table.name
        ref = next((t for t in self._op.op.reads if t.name == name), None)
        if ref is None:
            raise UndeclaredReadError(
                f"operator {self._op.name!r} read table {name!r} without declaring it; add it "
                "to the operator's `reads`"
            )
        return self._state.read(ref, key, self._event, before, ref.default)

    def schedule(self, at: int, fn: Callable[[Any], Any]) -> None:
        if self._table is None:
            raise EngineError(f"operator {self._op.name!r}: only update merges can schedule writes")
        state = self._state
        state.timer_count += 1
        heapq.heappush(
            state.timers, _Timer(int(at), state.timer_count, self._table.name, self._key, fn)
        )


Outputs = dict[str, tuple[list[int], list[tuple[Hashable, Any]]]]
Step = Callable[[Event, Outputs], None]


class SerialExecutor:
    """One process, one event at a time: the reference semantics."""

    name = "serial"

    def __init__(self, *, epoch_size: int | None = None) -> None:
        """``epoch_size``: events per epoch; by default :func:`auto_epoch_size` of one worker.
        Here epochs only decide how often output is handed to the sink."""
        self.epoch_size = auto_epoch_size(1) if epoch_size is None else epoch_size

    def run(
        self,
        plan: Plan,
        source: Source,
        sink: Sink,
        *,
        stats: RunStats | None = None,
        checkpoints: CheckpointStore | None = None,
        resume: EngineSnapshot | None = None,
    ) -> RunStats:
        """Run ``plan`` over ``source`` into ``sink``.

        The oracle does not checkpoint: ``checkpoints`` and ``resume`` must be None.
        """
        if checkpoints is not None or resume is not None:
            raise CheckpointError(
                "the serial executor cannot checkpoint or resume; use the batch or parallel "
                "executor for crash-safe runs"
            )
        stats = RunStats(self.name) if stats is None else stats
        started = time.perf_counter()
        state = _State(plan)
        steps: dict[str, list[tuple[PlannedOperator, frozenset[str], Step]]] = {}
        for epoch in merge_log(source, epoch_size=self.epoch_size):
            outputs: Outputs = {}
            for event in iter_events(epoch):
                kind_steps = steps.get(event.kind)
                if kind_steps is None:
                    kind_steps = steps[event.kind] = [
                        (p, frozenset(c.name for c in p.op.inputs), _step(state, p))
                        for p in plan.by_kind(event.kind)
                    ]
                state.fire_timers(event.ts)
                state.before.clear()
                if state.bounded and event.ts > state.stream_time:
                    state.stream_time = event.ts
                    for table in state.bounded:
                        table.set_stream_time(event.ts)
                for planned, allowed, step in kind_steps:
                    event.allow(allowed)
                    try:
                        step(event, outputs)
                    except (ExecutionError, UndeclaredReadError):
                        raise
                    except Exception as exc:
                        raise ExecutionError(
                            f"operator {planned.name!r} raised {type(exc).__name__}: {exc} at "
                            f"seq {event.seq} ({event.topic}/{event.partition}@{event.offset})",
                            seq=event.seq,
                            operator=planned.name,
                        ) from exc
            chunks = [
                OutputChunk.from_records(name, seqs, recs) for name, (seqs, recs) in outputs.items()
            ]
            sink.write(chunks, epoch)
            stats.count_epoch(epoch, chunks)
        stats.wall_seconds = time.perf_counter() - started
        return stats


def _step(state: _State, planned: PlannedOperator) -> Step:
    """What one operator does for one event, as a function."""
    op = planned.op
    if isinstance(op, Update):
        table, key_of, merge = op.table, key_function(op.key), op.merge

        def update(event: Event, _out: Outputs) -> None:
            key = key_of(event)
            old = state.read(table, key, event, False, table.default)
            state.write(table, key, merge(old, event, _View(state, planned, event, table, key)))

        return update
    if isinstance(op, Builtin):
        builtin = state.builtin[op.table.name]
        where = None if op.where is None else _name(op.where)
        value = None if op.value is None else _name(op.value)
        key_of = key_function(op.key)

        def write(event: Event, _out: Outputs) -> None:
            if where is not None and not getattr(event, where):
                return
            v = None if value is None else getattr(event, value)
            builtin.write(key_of(event), event.seq, event.ts, v)

        return write
    if isinstance(op, Lookup):
        lookup, lookup_key = op, key_function(op.key)

        def look(event: Event, _out: Outputs) -> None:
            event.derive(
                lookup.column.name,
                state.read(lookup.table, lookup_key(event), event, lookup.before, lookup.default),
            )

        return look
    if isinstance(op, Derive):
        derive = op

        def compute(event: Event, _out: Outputs) -> None:
            event.derive(derive.column.name, derive.fn(event, _View(state, planned, event)))

        return compute
    assert isinstance(op, Emit)
    emit = op

    def emit_records(event: Event, out: Outputs) -> None:
        seqs, recs = out.setdefault(emit.output.name, ([], []))
        for record in emit.fn(event, _View(state, planned, event)):
            if not isinstance(record, Record):
                raise EngineError(
                    f"emit {emit.name!r} returned {record!r}; return Record(key, value)"
                )
            seqs.append(event.seq)
            recs.append((record.key, dict(record.value)))

    return emit_records


def _name(col: object) -> str:
    return col if isinstance(col, str) else col.name  # type: ignore[attr-defined]
