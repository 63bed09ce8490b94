"""Running a plan over one epoch at a time: the core of the batch and parallel executors.

For each phase, in order: built-in tables take all of the phase's writes at once (vectorised),
Python merges run per event in ``seq`` order against versioned tables, lookups and derived
columns are computed for whole batches, and emits produce columnar output. Reads from later
phases see every version of the epoch, so each phase is a barrier and nothing inside a phase
depends on the order of events across keys.
"""

from __future__ import annotations

import heapq
import io
import logging
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

import numpy as np

from engine.errors import CheckpointError, EngineError, ExecutionError, UndeclaredReadError
from engine.events import Event, events_from_columns
from engine.executors.base import OPERATOR_PREFIX, RunStats
from engine.executors.columns import (
    Columns,
    Exchange,
    Keyed,
    Part,
    Rows,
    assemble,
    count_rows,
)
from engine.executors.followers import (
    find_followers,
    find_twins,
    link_followers,
    link_twins,
    windowed,
)
from engine.executors.placement import Placement, place
from engine.executors.sharding import Ownership, Shard, balanced_ownership, owner_of_key
from engine.executors.snapshot import PlanObjects, dump_state, load_state
from engine.keys import KeyCodec, KeySpec, Unordered, key_fields, scalar_key
from engine.log import Epoch
from engine.output import OutputChunk, absent_column
from engine.pipeline import (
    Builtin,
    ColumnRef,
    Derive,
    Emit,
    Lookup,
    Operator,
    Record,
    TableRef,
    Update,
)
from engine.planner import Plan, PlannedOperator
from engine.state.aggregates import VectorTable, make_vector
from engine.state.clock import EpochClock, VectorBounded
from engine.state.pytables import VersionedTable
from engine.state.scalar import distinct_value
from engine.state.spec import ReadsLatest

logger = logging.getLogger(__name__)

__all__ = ["Columns", "EpochRuntime", "Exchange", "Part"]


@dataclass(frozen=True, slots=True)
class _SoleWrite:
    """The one write of a built-in table in this epoch: whose rows, and which of them."""

    kind: str
    key: KeySpec
    partitioned: bool
    written: np.ndarray | None  # mask over the keyed rows; None: all of them


@dataclass(order=True, slots=True)
class _Timer:
    fire: int  # seq of the event it fires before; -1 while not yet known
    at: int
    order: tuple[int, int, int]
    table: str = field(compare=False)
    key: Hashable = field(compare=False)
    fn: Any = field(compare=False)


@dataclass(slots=True)
class _Emitted:
    seq: np.ndarray
    phase: int
    op: int
    index: np.ndarray
    keys: np.ndarray
    columns: Mapping[str, np.ndarray]


class EpochRuntime:
    """All table state of a plan, advanced one epoch at a time."""

    def __init__(
        self,
        plan: Plan,
        *,
        shard: Shard | None = None,
        exchange: Exchange | None = None,
    ) -> None:
        shard = shard or Shard()
        if shard.count > 1 and exchange is None:
            raise EngineError("a sharded runtime needs an exchange between its workers")
        self.plan = plan
        self.shard = shard
        self.exchange = exchange
        # Tables that operator code reads with view.get can be asked for any key, so every
        # worker keeps all of them; the rest are partitioned by key over the workers.
        self.replicated: frozenset[str] = (
            frozenset(
                t.name
                for p in plan.operators
                if isinstance(p.op, Update | Derive | Emit)
                for t in p.op.reads
            )
            if shard.count > 1
            else frozenset()
        )
        self.placement: Placement | None = place(plan, self.replicated) if shard.count > 1 else None
        self.vector: dict[str, VectorTable] = {}
        self.python: dict[str, VersionedTable] = {}
        # One codec for every built-in table: ids only need to be injective, and sharing lets
        # operators with the same key spec share one encoding (and owner map) per epoch.
        self.codec = KeyCodec()
        self.value_codecs: dict[str, KeyCodec] = {}
        for name, ref in plan.pipeline.tables.items():
            if ref.builtin is None:
                self.python[name] = VersionedTable(name, ref.default)
            else:
                self.vector[name] = make_vector(ref.builtin)
        self._bounded = self._bounded_tables()
        # Windowed tables that share the history of an identically written one: follower ->
        # leader. Their writes are skipped; the leader's are theirs.
        self._leaders = find_followers(plan, self.vector, self.replicated)
        # Tables written with the same keys and seqs every epoch: twin -> the first of them,
        # whose key slots and epoch grouping it uses (the same either way; found once).
        self._twins = find_twins(plan, self.vector, self.replicated, self._leaders)
        link_twins(self.vector, self._twins)
        link_followers(self.vector, self._leaders)
        # Timers whose firing event is not known yet (after the end of the last epoch).
        self._pending: list[_Timer] = []
        # This epoch's writes of each built-in table (for reads that need no search).
        self._writes: dict[str, list[_SoleWrite]] = {}
        self._phase_names = [f"phase {p}" for p in range(plan.phases)]
        self._objects: PlanObjects | None = None
        # Which worker owns each built-in table key: decided from the first epoch (None until
        # then), identically on every worker; see engine.executors.sharding.
        self.ownership: Ownership | None = None if shard.count > 1 else Ownership.uniform(1)
        self._epoch_owners = Ownership.uniform(shard.count)

    # -- checkpoints ----------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Everything that carries over to the next epoch, as a blob for :meth:`restore`.

        Call it between epochs. The blob names this runtime's plan (by fingerprint) and shard,
        and refers to the plan's objects (operators, functions, specs) by path, not by value.
        """
        buffer = io.BytesIO()
        self.snapshot_into(buffer)
        return buffer.getvalue()

    def snapshot_into(self, out: BinaryIO) -> None:
        """Write :meth:`snapshot`'s blob to ``out`` (a file: saves copying large arrays)."""
        state = {
            "vector": self.vector,
            "python": self.python,
            "codec": self.codec,
            "value_codecs": self.value_codecs,
            "pending": self._pending,
            "ownership": self.ownership,
        }
        # Each table on its own names the culprit if the whole cannot be pickled.
        parts: dict[str, Any] = {f"table {name!r}": t for name, t in self.python.items()}
        parts.update({f"table {name!r}": t for name, t in self.vector.items()})
        parts["the pending timers"] = self._pending
        dump_state(
            state,
            self._plan_objects(),
            out,
            shard=self.shard.index,
            shards=self.shard.count,
            parts=parts,
        )

    def restore(self, blob: bytes) -> None:
        """Replace all state with a :meth:`snapshot` of a runtime of the same plan and shard
        (possibly in another process); raises :class:`~engine.errors.CheckpointError` if the
        blob does not belong to this plan and shard."""
        state = load_state(
            blob, self._plan_objects(), shard=self.shard.index, shards=self.shard.count
        )
        if (
            not isinstance(state, dict)
            or set(state.get("vector", ())) != set(self.vector)
            or set(state.get("python", ())) != set(self.python)
        ):
            raise CheckpointError(
                "the snapshot's tables do not match this plan's; resume with the pipeline that "
                "took it, or start over without the checkpoint"
            )
        self._check_python_owners(state["python"], state["pending"])
        self.vector = state["vector"]
        self.python = state["python"]
        self.codec = state["codec"]
        self.value_codecs = state["value_codecs"]
        self._pending = state["pending"]
        # A snapshot from before ownership was balanced holds keys where the hash put them.
        self.ownership = (
            state["ownership"] if "ownership" in state else Ownership.uniform(self.shard.count)
        )
        self._bounded = self._bounded_tables()
        link_twins(self.vector, self._twins)
        link_followers(self.vector, self._leaders)

    def _check_python_owners(
        self, python: dict[str, VersionedTable], pending: list[_Timer]
    ) -> None:
        """Refuse a snapshot whose Python-table keys (or timers) this worker does not own.

        A build before this one owned ``True`` apart from ``1``, ``1.0`` apart from ``1``, and
        so on; restored here, such state would sit on a worker that never sees its key again.
        """
        count, index = self.shard.count, self.shard.index
        if count == 1:
            return
        keys = [
            (name, key)
            for name, table in python.items()
            if name not in self.replicated
            for key in table.base
        ]
        keys += [(t.table, t.key) for t in pending if t.table not in self.replicated]
        for name, key in keys:
            if owner_of_key(key, count) != index:
                raise CheckpointError(
                    f"the snapshot's worker {index} holds key {key!r} of Python table "
                    f"{name!r}, which worker {owner_of_key(key, count)} owns in this build (an "
                    "older build owned keys such as True and 1.0 apart from 1); start the job "
                    "over without the checkpoint"
                )

    def _bounded_tables(self) -> list[VectorBounded]:
        """Tables with an allowed lateness: each epoch they get its stream-time clock."""
        return [
            cast(VectorBounded, self.vector[name])
            for name, ref in self.plan.pipeline.tables.items()
            if ref.builtin is not None and ref.builtin.lateness is not None
        ]

    def _plan_objects(self) -> PlanObjects:
        if self._objects is None:
            self._objects = PlanObjects(self.plan)
        return self._objects

    # -- epoch ----------------------------------------------------------------------------

    def process(
        self,
        epoch: Epoch,
        stats: RunStats | None = None,
        *,
        on_phase: Callable[[int], None] | None = None,
    ) -> list[OutputChunk]:
        """Run every phase over ``epoch``; return its output, in serial order, per stream.

        ``on_phase(p)`` is called once phase ``p`` is done (a worker's sign of progress).
        """
        cols = {kind: Columns(ev) for kind, ev in epoch.events.items()}
        if self.ownership is None and any(len(c) for c in cols.values()):
            # Until an epoch brings events no table holds a key, so the choice can wait.
            self.ownership = self._balanced_ownership(epoch, cols)
        self._epoch_owners = self.ownership or Ownership.uniform(self.shard.count)
        emitted: dict[str, list[_Emitted]] = {}
        self._writes = {}
        self._resolve_timers(epoch)
        if self._bounded:
            clock = EpochClock.of(epoch.seq_start, epoch.ts)
            for bounded in self._bounded:
                bounded.set_clock(clock)
        for phase in range(self.plan.phases):
            started = time.perf_counter()
            ops = self.plan.in_phase(phase)
            builtin_writes: dict[str, list[tuple[np.ndarray, ...]]] = {}
            python_groups: dict[str, list[PlannedOperator]] = {}
            parts: list[Part] = []
            for planned in ops:
                op = planned.op
                if isinstance(op, Update):
                    python_groups.setdefault(op.table.name, []).append(planned)
                    continue
                if isinstance(op, Builtin) and op.table.name in self._leaders:
                    continue  # its leader takes the same writes
                for kind in op.kinds:
                    c = cols.get(kind)
                    if c is None or len(c) == 0:
                        continue
                    op_started = time.perf_counter()
                    self._run_vector_op(epoch, planned, c, builtin_writes, emitted, parts)
                    if stats is not None:
                        stats.add_time(OPERATOR_PREFIX + op.name, time.perf_counter() - op_started)
            for name, writes in builtin_writes.items():
                op_started = time.perf_counter()
                self._flush_builtin(name, writes)
                if stats is not None:
                    stats.add_time(
                        f"{OPERATOR_PREFIX}{name} (write)", time.perf_counter() - op_started
                    )
            for follower, leader in self._leaders.items():
                if leader in builtin_writes:
                    self._writes[follower] = list(self._writes[leader])
                    lead = windowed(self.vector, leader)
                    windowed(self.vector, follower).follow_epoch(lead)
            for name, writers in python_groups.items():
                self._run_updates(epoch, name, writers, cols)
            # Every worker sees the same epoch and plan, so all skip the same exchanges.
            if self.placement is not None and self.exchange is not None:
                shared = [p for p in parts if self.placement.is_exchanged(p.kind, p.column)]
                if _exchanges(self.placement, ops, cols):
                    swap_started = time.perf_counter()
                    shared = self.exchange(shared)
                    swapped = time.perf_counter() - swap_started
                    started += swapped  # the phase's own time excludes the exchange
                    if stats is not None:
                        stats.add_time("exchange", swapped)
                local = [p for p in parts if not self.placement.is_exchanged(p.kind, p.column)]
                parts = local + shared
            assemble(parts, cols)
            if stats is not None:
                stats.add_time(self._phase_names[phase], time.perf_counter() - started)
            if on_phase is not None:
                on_phase(phase)
        for name, table in self.vector.items():
            op_started = time.perf_counter()
            table.end_epoch()
            if stats is not None:
                stats.add_time(
                    f"{OPERATOR_PREFIX}{name} (epoch end)", time.perf_counter() - op_started
                )
        for ptable in self.python.values():
            ptable.end_epoch()
        return [self._chunk(name, parts) for name, parts in emitted.items()]

    # -- operators --------------------------------------------------------------------------

    def _run_vector_op(
        self,
        epoch: Epoch,
        planned: PlannedOperator,
        c: Columns,
        builtin_writes: dict[str, list[tuple[np.ndarray, ...]]],
        emitted: dict[str, list[_Emitted]],
        parts: list[Part],
    ) -> None:
        op = planned.op
        try:
            if isinstance(op, Builtin):
                builtin_writes.setdefault(op.table.name, []).append(self._builtin_writes(op, c))
            elif isinstance(op, Lookup):
                rows, values = self._lookup(epoch, op, c)
                parts.append(Part(c.events.kind, op.column.name, rows, values))
            elif isinstance(op, Derive):
                span = self._home_rows(c)
                if op.batch_fn is not None and not op.reads:
                    values = np.asarray(op.batch_fn(c.for_operator(op, span)))
                    want = count_rows(span, len(c))
                    if len(values) != want:
                        raise EngineError(
                            f"batch_fn of {op.name!r} returned {len(values)} values for "
                            f"{want} events"
                        )
                else:
                    results = [
                        op.fn(e, self._view(planned, e)) for e in self._events(epoch, op, c, span)
                    ]
                    values = _to_array(results, op.column.dtype)
                parts.append(Part(c.events.kind, op.column.name, span, values))
            elif isinstance(op, Emit):
                emitted.setdefault(op.output.name, []).append(self._emit(epoch, planned, op, c))
        except (ExecutionError, UndeclaredReadError):
            raise
        except Exception as exc:
            raise ExecutionError(
                f"operator {op.name!r} raised {type(exc).__name__}: {exc} in the epoch of seq "
                f"{epoch.seq_start}..{epoch.seq_end - 1}",
                seq=epoch.seq_start,
                operator=op.name,
            ) from exc

    def _keyed(self, c: Columns, spec: KeySpec, partitioned: bool) -> Keyed:
        """Key ids of a kind's events, restricted to the keys this worker owns if
        ``partitioned``; computed once per epoch for each key spec."""
        slot = (spec, partitioned)
        keyed = c.keyed.get(slot)
        if keyed is None:
            fields = key_fields(spec)
            assert fields is not None
            ids = self.codec.encode(spec, {f: c.get(f) for f in fields})
            seqs, ts = c.events.seq, c.events.ts
            rows = None
            if partitioned:
                rows = np.flatnonzero(self._owners(ids) == self.shard.index)
                ids, seqs, ts = ids[rows], seqs[rows], ts[rows]
            keyed = c.keyed[slot] = Keyed(rows, ids, seqs, ts)
        return keyed

    def _owners(self, ids: np.ndarray) -> np.ndarray:
        return self._epoch_owners.owners(ids)

    def _balanced_ownership(self, epoch: Epoch, cols: Mapping[str, Columns]) -> Ownership:
        """Ownership that evens out this epoch's load: per key id, its rows times the
        partitioned built-in operators keyed by it (keys of event fields only: derived ones
        do not exist yet). The same on every worker, which all see the whole epoch."""
        uses: dict[tuple[str, KeySpec], int] = {}
        first_op: dict[tuple[str, KeySpec], str] = {}
        for planned in self.plan.operators:
            op = planned.op
            if not isinstance(op, Builtin | Lookup) or op.table.builtin is None:
                continue
            if op.table.name in self.replicated or op.table.name in self._leaders:
                continue
            fields = key_fields(op.key)
            if fields is None:
                continue
            for kind in op.kinds:
                c = cols.get(kind)
                if c is None or not len(c):
                    continue
                if all(f in ("seq", "ts") or f in c.events.columns for f in fields):
                    uses[(kind, op.key)] = uses.get((kind, op.key), 0) + 1
                    first_op.setdefault((kind, op.key), op.name)
        if not uses:
            return Ownership.uniform(self.shard.count)
        ids, weights = [], []
        for (kind, spec), n in uses.items():
            c = cols[kind]
            fields = key_fields(spec)
            assert fields is not None
            try:
                keys = self.codec.encode(spec, {f: c.get(f) for f in fields})
            except Exception as exc:  # as the operator would have raised it
                name = first_op[(kind, spec)]
                raise ExecutionError(
                    f"operator {name!r} raised {type(exc).__name__}: {exc} in the epoch of "
                    f"seq {epoch.seq_start}..{epoch.seq_end - 1}",
                    seq=epoch.seq_start,
                    operator=name,
                ) from exc
            ids.append(keys)
            weights.append(np.full(len(keys), float(n)))
        unique, at = np.unique(np.concatenate(ids), return_inverse=True)
        loads = np.bincount(at, weights=np.concatenate(weights), minlength=len(unique))
        ownership = balanced_ownership(unique, loads, self.shard.count)
        if self.shard.index == 0 and ownership.pinned.size:
            pinned = loads[np.searchsorted(unique, ownership.pinned)].sum()
            logger.info(
                "balanced key ownership over %d workers: %d heavy keys pinned, %.1f%% of the "
                "first epoch's keyed work",
                self.shard.count,
                ownership.pinned.size,
                100 * pinned / loads.sum(),
            )
        return ownership

    def _builtin_writes(self, op: Builtin, c: Columns) -> tuple[np.ndarray, ...]:
        spec = op.table.builtin
        assert spec is not None
        partitioned = self.shard.count > 1 and op.table.name not in self.replicated
        keyed = self._keyed(c, op.key, partitioned)
        keys, seqs, ts = keyed.ids, keyed.seqs, keyed.ts
        values: np.ndarray | None = None
        if op.value is not None:
            name = _name(op.value)
            raw = c.take(name, keyed.rows)
            if spec.kind == "distinct" and raw.dtype.kind not in "ib":
                # Every worker encodes the whole column, so that value ids agree everywhere.
                codec = self.value_codecs.setdefault(op.table.name, KeyCodec())
                values = _distinct_ids(codec, name, c.get(name))
                if keyed.rows is not None:
                    values = values[keyed.rows]
            else:
                values = np.asarray(raw, dtype=spec.dtype)
        mask = None
        if op.where is not None:
            where = _name(op.where)
            mask, keys, seqs, ts = keyed.where(
                where, lambda: np.asarray(c.take(where, keyed.rows), dtype=bool)
            )
            if values is not None:
                values = values[mask]
        sole = _SoleWrite(c.events.kind, op.key, partitioned, mask)
        self._writes.setdefault(op.table.name, []).append(sole)
        if values is None:
            return (keys, seqs, ts)
        return (keys, seqs, ts, values)

    def _flush_builtin(self, name: str, writes: list[tuple[np.ndarray, ...]]) -> None:
        if len(writes) == 1:
            parts = writes[0]
        else:
            # Several writers (or kinds): order by seq; ties keep declaration order.
            parts = tuple(np.concatenate([w[i] for w in writes]) for i in range(len(writes[0])))
            order = np.argsort(parts[1], kind="stable")
            parts = tuple(p[order] for p in parts)
        values = parts[3] if len(parts) > 3 else None
        self.vector[name].write_epoch(parts[0], parts[1], parts[2], values)

    def _home_rows(self, c: Columns) -> np.ndarray | slice | None:
        """The rows of ``c`` whose stateless work (derives, emits, reads of replicated
        tables) this worker does: its home rows (see :mod:`engine.executors.placement`)."""
        if self.placement is None:
            return None
        home = self.placement.home_key(c.events.kind)
        if home is None:
            return self._my_rows(len(c))
        rows = self._keyed(c, home, True).rows
        assert rows is not None  # a partitioned key's rows are indices
        c.set_home(rows)
        return rows

    def _known_latest(self, op: Lookup, c: Columns, partitioned: bool) -> np.ndarray | None:
        """For a lookup keyed like the only write of its table this epoch, by the same
        events: the write each of those events sees, found per key in one pass (None when
        the lookup is not of that shape). Every worker's rows of a key spec are the same for
        the write and the read, so the write's rows index the read's."""
        writes = self._writes.get(op.table.name)
        if writes is None or len(writes) != 1 or key_fields(op.key) is None:
            return None
        w = writes[0]
        if (
            w.kind != c.events.kind
            or w.partitioned != partitioned
            or key_fields(w.key) != key_fields(op.key)
            or isinstance(w.key, Unordered) != isinstance(op.key, Unordered)
        ):
            return None
        return self._keyed(c, op.key, partitioned).latest_writes(w.written, op.before)

    def _my_rows(self, n: int) -> slice | None:
        """This worker's share of stateless per-event work (None: all of it)."""
        return None if self.shard.count == 1 else self.shard.rows(n)

    def _lookup(
        self, epoch: Epoch, op: Lookup, c: Columns
    ) -> tuple[np.ndarray | slice | None, np.ndarray]:
        """Values of the lookup for the rows this worker answers, and those rows."""
        ref = op.table
        partitioned = self.shard.count > 1 and ref.name not in self.replicated
        if ref.builtin is not None:
            rows: np.ndarray | slice | None
            if key_fields(op.key) is not None:
                keyed = self._keyed(c, op.key, partitioned)
                rows, keys, seqs, ts = keyed.rows, keyed.ids, keyed.seqs, keyed.ts
                if not partitioned and self.shard.count > 1:
                    # Replicated table: any worker can answer, so each answers its home rows.
                    rows = self._home_rows(c)
                    keys, seqs, ts = keys[rows], seqs[rows], ts[rows]
            else:
                keys = np.fromiter(
                    (
                        self.codec.encode_one(scalar_key(op.key, e))
                        for e in self._events(epoch, op, c)
                    ),
                    dtype=np.int64,
                    count=len(c),
                )
                rows = self._home_rows(c)
                if partitioned:
                    rows = np.flatnonzero(self._owners(keys) == self.shard.index)
                seqs, ts = c.events.seq, c.events.ts
                if rows is not None:
                    keys, seqs, ts = keys[rows], seqs[rows], ts[rows]
            vtable = self.vector[ref.name]
            if (
                isinstance(vtable, ReadsLatest)
                and (latest := self._known_latest(op, c, partitioned)) is not None
            ):
                if rows is not None and not partitioned:
                    latest = latest[rows]  # the keyed rows are all rows; read the home ones
                values, present = vtable.read_latest(keys, latest, seqs, ts)
            else:
                values, present = vtable.read(keys, seqs, ts, before=op.before)
            return rows, _fill(values, present, op.default)
        table = self.python[ref.name]
        wanted = []
        out = []
        count = self.shard.count
        span = None if partitioned else self._home_rows(c)
        for i, e in enumerate(self._events(epoch, op, c, span)):
            key = scalar_key(op.key, e)
            if partitioned and owner_of_key(key, count) != self.shard.index:
                continue
            wanted.append(i)
            out.append(table.read(key, e.seq, before=op.before, default=op.default))
        values = _to_array(out, op.column.dtype)
        if partitioned:
            return np.asarray(wanted, dtype=np.int64), values
        return span, values

    def _emit(self, epoch: Epoch, planned: PlannedOperator, op: Emit, c: Columns) -> _Emitted:
        span = self._home_rows(c)
        if op.batch_fn is not None and not op.reads:
            result = op.batch_fn(c.for_operator(op, span))
            columns = {k: np.asarray(v) for k, v in result.items()}
            seq = c.events.seq if span is None else c.events.seq[span]
            n = len(seq)
            for k, v in columns.items():
                if len(v) != n:
                    raise EngineError(
                        f"batch_fn of {op.name!r} returned {len(v)} values of {k!r} for {n} "
                        "events; it must return one record per event"
                    )
            return _Emitted(
                seq,
                planned.phase,
                planned.index,
                np.zeros(n, dtype=np.int32),
                columns[op.output.key],
                columns,
            )
        seqs: list[int] = []
        index: list[int] = []
        records: list[tuple[Hashable, Mapping[str, Any]]] = []
        for e in self._events(epoch, op, c, span):
            for i, record in enumerate(op.fn(e, self._view(planned, e))):
                if not isinstance(record, Record):
                    raise EngineError(
                        f"emit {op.name!r} returned {record!r}; return Record(key, value)"
                    )
                seqs.append(e.seq)
                index.append(i)
                records.append((record.key, dict(record.value)))
        chunk = OutputChunk.from_records(op.output.name, seqs, records)
        return _Emitted(
            chunk.seq,
            planned.phase,
            planned.index,
            np.asarray(index, dtype=np.int32),
            chunk.keys,
            chunk.columns,
        )

    def _chunk(self, name: str, parts: list[_Emitted]) -> OutputChunk:
        if len(parts) == 1:
            p = parts[0]
            return OutputChunk(name, p.seq, p.keys, dict(p.columns))
        seq = np.concatenate([p.seq for p in parts])
        phase = np.concatenate([np.full(len(p.seq), p.phase, dtype=np.int32) for p in parts])
        opi = np.concatenate([np.full(len(p.seq), p.op, dtype=np.int32) for p in parts])
        index = np.concatenate([p.index for p in parts])
        order = np.lexsort((index, opi, phase, seq))
        keys = _concat([p.keys for p in parts])[order]
        names: list[str] = []
        for p in parts:
            names.extend(n for n in p.columns if n not in names)
        columns = {}
        for n in names:
            pieces = []
            for p in parts:
                col = p.columns.get(n)
                if col is None:
                    col = absent_column(len(p.seq))
                pieces.append(col)
            columns[n] = _concat(pieces)[order]
        return OutputChunk(name, seq[order], keys, columns)

    # -- Python merges ------------------------------------------------------------------------

    def _run_updates(
        self, epoch: Epoch, name: str, writers: list[PlannedOperator], cols: Mapping[str, Columns]
    ) -> None:
        table = self.python[name]
        # Every (event, writer) pair of this table, in (seq, declaration) order.
        streams: list[tuple[int, int, Event, PlannedOperator]] = []
        count, index = self.shard.count, self.shard.index
        partitioned = count > 1 and name not in self.replicated
        for planned in writers:
            op = planned.op
            assert isinstance(op, Update)
            for kind in op.kinds:
                c = cols.get(kind)
                if c is None or len(c) == 0:
                    continue
                for e in self._events(epoch, op, c):
                    if partitioned and owner_of_key(scalar_key(op.key, e), count) != index:
                        continue
                    streams.append((e.seq, planned.index, e, planned))
        streams.sort(key=lambda s: (s[0], s[1]))
        timers = [t for t in self._pending if t.table == name and t.fire >= 0]
        heapq.heapify(timers)
        for seq, _, event, planned in streams:
            while timers and timers[0].fire <= seq:
                self._fire(table, heapq.heappop(timers))
            op = planned.op
            assert isinstance(op, Update)
            try:
                key = scalar_key(op.key, event)
                view = self._view(planned, event, table=op.table, key=key, epoch=epoch)
                table.put(key, 2 * seq + 1, op.merge(table.latest(key), event, view))
            except (ExecutionError, UndeclaredReadError):
                raise
            except Exception as exc:
                raise ExecutionError(
                    f"operator {op.name!r} raised {type(exc).__name__}: {exc} at seq {seq} "
                    f"({event.topic}/{event.partition}@{event.offset})",
                    seq=seq,
                    operator=op.name,
                ) from exc
            for t in view.scheduled:
                t.fire = _first_at_or_after(epoch, seq + 1, t.at)
                if t.fire >= 0:
                    heapq.heappush(timers, t)
                self._pending.append(t)
        while timers:
            self._fire(table, heapq.heappop(timers))
        self._pending = [t for t in self._pending if not (t.table == name and t.fire >= 0)]

    def _fire(self, table: VersionedTable, timer: _Timer) -> None:
        table.put(timer.key, 2 * timer.fire, timer.fn(table.latest(timer.key)))

    def _resolve_timers(self, epoch: Epoch) -> None:
        for t in self._pending:
            if t.fire < 0:
                t.fire = _first_at_or_after(epoch, epoch.seq_start, t.at)

    # -- Python bodies ----------------------------------------------------------------------

    def _events(self, epoch: Epoch, op: Operator, c: Columns, rows: Rows = None) -> Iterable[Event]:
        ev = c.events if rows is None else c.events.take(np.arange(len(c))[rows])
        return events_from_columns(
            ev,
            epoch.topics,
            {n: c.take(n, rows).tolist() for n in ev.columns},
            {k: _python_values(c.take(k, rows)) for k in c.derived_names()},
            frozenset(x.name for x in op.inputs),
        )

    def _view(
        self,
        planned: PlannedOperator,
        event: Event,
        *,
        table: TableRef | None = None,
        key: Hashable = None,
        epoch: Epoch | None = None,
    ) -> _View:
        return _View(self, planned, event, table, key)


class _View:
    __slots__ = ("_event", "_key", "_op", "_runtime", "_table", "scheduled")

    def __init__(
        self,
        runtime: EpochRuntime,
        op: PlannedOperator,
        event: Event,
        table: TableRef | None,
        key: Hashable,
    ) -> None:
        self._runtime = runtime
        self._op = op
        self._event = event
        self._table = table
        self._key = key
        self.scheduled: list[_Timer] = []

    def get(self, table: TableRef | str, key: Hashable, *, before: bool = False) -> Any:
        name = table if isinstance(table, str) else table.name
        ref = next((t for t in self._op.op.reads if t.name == name), None)
        if ref is None:
            raise UndeclaredReadError(
                f"operator {self._op.name!r} read table {name!r} without declaring it; add it "
                "to the operator's `reads`"
            )
        rt = self._runtime
        seq = self._event.seq
        if ref.builtin is not None:
            # Without interning: this worker alone may run this read (its home rows), and
            # every worker's codec must give later keys the same ids.
            ident = rt.codec.known_id(key)
            if ident is None:
                return ref.default  # no column brought this key: no table holds it
            values, present = rt.vector[name].read(
                np.array([ident], dtype=np.int64),
                np.array([seq], dtype=np.int64),
                np.array([self._event.ts], dtype=np.int64),
                before=before,
            )
            if not present[0]:
                return ref.default
            v = values[0]
            return tuple(v.tolist()) if isinstance(v, np.ndarray) else v.item()
        return rt.python[name].read(key, seq, before=before, default=ref.default)

    def schedule(self, at: int, fn: Any) -> None:
        if self._table is None:
            raise EngineError(f"operator {self._op.name!r}: only update merges can schedule")
        order = (self._event.seq, self._op.index, len(self.scheduled))
        self.scheduled.append(_Timer(-1, int(at), order, self._table.name, self._key, fn))


def _exchanges(
    placement: Placement, ops: Sequence[PlannedOperator], cols: Mapping[str, Columns]
) -> bool:
    """Whether a phase derives a column that workers exchange, for any event of the epoch."""
    return any(
        isinstance(p.op, Lookup | Derive)
        and any(
            len(cols[k]) and placement.is_exchanged(k, p.op.column.name)
            for k in p.op.kinds
            if k in cols
        )
        for p in ops
    )


def _first_at_or_after(epoch: Epoch, seq: int, at: int) -> int:
    """The first seq >= ``seq`` in this epoch whose ts is >= ``at``, or -1."""
    start = seq - epoch.seq_start
    if start >= len(epoch.ts):
        return -1
    hits = np.flatnonzero(epoch.ts[start:] >= at)
    return int(hits[0]) + seq if len(hits) else -1


def _python_values(column: np.ndarray) -> list[Any]:
    # Pair-valued columns (ratio tables) are tuples in Python code, as in the serial executor.
    if column.ndim > 1:
        return [tuple(row) for row in column.tolist()]
    return column.tolist()  # type: ignore[no-any-return]


def _name(col: str | ColumnRef) -> str:
    return col if isinstance(col, str) else col.name


def _fill(values: np.ndarray, present: np.ndarray, default: Any) -> np.ndarray:
    if present.all():
        return values
    # Keep the oracle's Python types: an int default in a float column stays an int.
    if default is None or values.ndim > 1 or np.asarray(default).dtype != values.dtype:
        out = np.empty(len(values), dtype=object)
        out[:] = list(values) if values.ndim > 1 else values.tolist()
        out[~present] = default
        return out
    filled: np.ndarray = values.copy()
    filled[~present] = default
    return filled


def _distinct_ids(codec: KeyCodec, name: str, column: np.ndarray) -> np.ndarray:
    """Ids of a distinct table's values that are equal exactly when the serial executor's
    are (:func:`~engine.state.scalar.distinct_value`): strings and bytes as they are, any
    other value as the int64 it truncates to (2.5 counts as 2; NaN, infinities and values
    beyond int64 fail as they do there)."""
    if column.dtype.kind == "U":
        return codec.encode(name, {name: column})
    if column.dtype.kind == "u":
        # Compared as uint64: as float64, values just below 2**63 would round up to it.
        beyond = column >= np.uint64(1 << 63)
        if beyond.any():
            distinct_value(int(column[beyond][0]))  # raises as the oracle's
        return column.astype(np.int64)
    if column.dtype.kind == "f":
        if not np.isfinite(column).all():
            distinct_value(column[~np.isfinite(column)][0].item())  # raises as the oracle's
        whole: np.ndarray = np.trunc(column)
        # 2.0**63 is a float64 exactly, so these bounds are exact too.
        out_of_range = (whole >= 2.0**63) | (whole < -(2.0**63))
        if out_of_range.any():
            distinct_value(int(whole[out_of_range][0]))  # raises as the oracle's
        return whole.astype(np.int64)
    values = np.empty(len(column), dtype=object)
    values[:] = [distinct_value(v) for v in column.tolist()]
    return codec.encode(name, {name: values})


def _to_array(values: Sequence[Any], dtype: str) -> np.ndarray:
    if dtype == "object":
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    return np.asarray(values, dtype=dtype)


def _concat(parts: Sequence[np.ndarray]) -> np.ndarray:
    if any(p.dtype == object for p in parts):
        out = np.empty(sum(len(p) for p in parts), dtype=object)
        i = 0
        for p in parts:
            out[i : i + len(p)] = p.tolist() if p.dtype != object else p
            i += len(p)
        return out
    return np.concatenate(parts)
