"""Where each operator's work runs in a sharded runtime, and which columns cross workers.

Every event of a kind has a *home* worker: the owner of its key under the kind's *home key*,
the key spec that most of its partitioned built-in tables use (for direct messages: the
sender). An operator *runs at home* when a worker processes exactly its home rows:

* derives and emits (stateless: any worker could, so the home worker does);
* writes and lookups of a partitioned built-in table keyed by the home key (the owner of a
  row's key is its home worker);
* lookups of a replicated table (every worker holds all of it).

Everything else (tables keyed otherwise, Python merges, callable keys, replicated writes) runs
on rows that are not the home rows, so the columns it reads must be complete on every worker.

A derived column made at home and only ever read at home never leaves its worker. Only the
others are *exchanged* (every worker's share to every worker) at the end of the phase that
makes them. For the spam backtest that is two columns of ~35 (the friendship and reply
lookups, keyed by user pairs), one exchange per epoch instead of one per phase; on W workers
that is what keeps data movement from growing with W.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from engine.keys import KeySpec, Unordered, key_fields
from engine.pipeline import Builtin, Derive, Emit, Lookup, Operator, Update
from engine.planner import Plan

__all__ = ["Placement", "place"]

#: A key spec up to spelling: ``"a"`` and ``("a",)`` make the same ids.
_SpecShape = tuple[bool, tuple[str, ...]]


def _shape(spec: KeySpec) -> _SpecShape | None:
    fields = key_fields(spec)
    return None if fields is None else (isinstance(spec, Unordered), fields)


@dataclass(frozen=True, slots=True)
class Placement:
    """The home key of each event kind and the derived columns that must be exchanged."""

    home: Mapping[str, KeySpec]
    exchanged: frozenset[tuple[str, str]]

    def home_key(self, kind: str) -> KeySpec | None:
        """The home key of ``kind`` (None: home rows are an even split of the rows)."""
        return self.home.get(kind)

    def at_home(self, op: Operator, kind: str, replicated: frozenset[str]) -> bool:
        """Whether ``op`` processes exactly the home rows of ``kind`` on each worker."""
        if isinstance(op, Derive | Emit):
            return True
        if isinstance(op, Lookup):
            if op.table.name in replicated:
                return True
            if op.table.builtin is None:
                return False
        elif not isinstance(op, Builtin) or op.table.name in replicated:
            return False
        home = self.home.get(kind)
        return home is not None and _shape(op.key) == _shape(home)

    def is_exchanged(self, kind: str, column: str) -> bool:
        """Whether every worker needs all of derived column ``column`` of ``kind``."""
        return (kind, column) in self.exchanged


def _columns_read(op: Operator, derived: frozenset[str]) -> set[str]:
    """The derived columns ``op`` reads: inputs, and key, value and filter columns."""
    names = {c.name for c in op.inputs}
    if isinstance(op, Builtin | Lookup | Update):
        names.update(key_fields(op.key) or ())
    if isinstance(op, Builtin):
        for ref in (op.value, op.where):
            if ref is not None:
                names.add(ref if isinstance(ref, str) else ref.name)
    return names & derived


def _home_keys(plan: Plan, replicated: frozenset[str]) -> dict[str, KeySpec]:
    """Per kind, the key spec most used by its partitioned built-in tables (first on ties)."""
    derived: dict[str, set[str]] = {}
    for kind, name in plan.pipeline.columns:
        derived.setdefault(kind, set()).add(name)
    uses: dict[str, Counter[_SpecShape]] = {}
    first: dict[tuple[str, _SpecShape], KeySpec] = {}
    for planned in plan.operators:
        op = planned.op
        if not isinstance(op, Builtin | Lookup) or op.table.builtin is None:
            continue
        if op.table.name in replicated:
            continue
        shape = _shape(op.key)
        if shape is None:
            continue
        for kind in op.kinds:
            # Home rows must be known before any column is derived.
            if set(shape[1]) & derived.get(kind, set()):
                continue
            uses.setdefault(kind, Counter())[shape] += 1
            first.setdefault((kind, shape), op.key)
    home: dict[str, KeySpec] = {}
    for kind, counter in uses.items():
        best = max(counter.values())
        shape = next(s for s, n in counter.items() if n == best)
        home[kind] = first[(kind, shape)]
    return home


def place(plan: Plan, replicated: Iterable[str]) -> Placement:
    """The placement of ``plan``'s work over workers, given its replicated tables."""
    rep = frozenset(replicated)
    trial = Placement(_home_keys(plan, rep), frozenset())
    derived = {kind: set[str]() for kind, _ in plan.pipeline.columns}
    for kind, name in plan.pipeline.columns:
        derived[kind].add(name)
    exchanged: set[tuple[str, str]] = set()
    for planned in plan.operators:
        op = planned.op
        for kind in op.kinds:
            home = trial.at_home(op, kind, rep)
            if isinstance(op, Lookup | Derive) and not home:
                exchanged.add((kind, op.column.name))
            reads = _columns_read(op, frozenset(derived.get(kind, ())))
            # Key columns decide which rows a worker takes, so they are needed on every row.
            keys = set(key_fields(op.key) or ()) if isinstance(op, Builtin | Lookup) else set()
            if not home or isinstance(op, Update):
                exchanged.update((kind, name) for name in reads)
            else:
                exchanged.update((kind, name) for name in reads & keys)
            if isinstance(op, Builtin | Lookup | Update) and key_fields(op.key) is None:
                # A callable key sees the whole event.
                exchanged.update((kind, name) for name in derived.get(kind, ()))
    return Placement(trial.home, frozenset(exchanged))
