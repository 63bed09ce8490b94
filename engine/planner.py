"""The planner: orders a pipeline's operators into phases.

Rules (DESIGN.md §2):

* every operator that writes table T (or derives column C) runs in an earlier phase than any
  operator that reads T (or C);
* all writers of one table run in the same phase, so a table's versions within an event are
  ordered by declaration order alone;
* within a phase, operators run in declaration order.

An operator reading what it writes, or a cycle through several operators, is rejected with a
:class:`~engine.errors.PlanError` that names every operator and table in the cycle.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import PlanError
from engine.pipeline import (
    Builtin,
    ColumnRef,
    Derive,
    Emit,
    Lookup,
    Operator,
    Pipeline,
    TableRef,
    Update,
)

__all__ = ["Plan", "PlannedOperator", "plan"]


@dataclass(frozen=True, slots=True)
class PlannedOperator:
    """An operator with its place in the plan."""

    index: int
    phase: int
    op: Operator

    @property
    def name(self) -> str:
        """The operator's name."""
        return self.op.name


@dataclass(frozen=True, slots=True)
class Plan:
    """Operators in execution order: by phase, then declaration order."""

    pipeline: Pipeline
    operators: tuple[PlannedOperator, ...]
    phases: int

    def by_kind(self, kind: str) -> tuple[PlannedOperator, ...]:
        """The operators that subscribe to ``kind``, in execution order."""
        return tuple(p for p in self.operators if kind in p.op.kinds)

    def in_phase(self, phase: int) -> tuple[PlannedOperator, ...]:
        """The operators of one phase, in declaration order."""
        return tuple(p for p in self.operators if p.phase == phase)

    def kinds(self) -> tuple[str, ...]:
        """Every event kind some operator subscribes to, sorted."""
        return tuple(sorted({k for p in self.operators for k in p.op.kinds}))

    def describe(self) -> str:
        """A readable rendering of the plan, phase by phase."""
        lines = [
            f"pipeline {self.pipeline.name}: {len(self.operators)} operators, {self.phases} phases"
        ]
        for phase in range(self.phases):
            lines.append(f"phase {phase}:")
            for p in self.in_phase(phase):
                reads = sorted(_label(r) for r in _reads(p.op))
                lines.append(
                    f"  {p.index:>3} {_op_kind(p.op):<8} {p.name:<28} on {','.join(p.op.kinds)}"
                    f"  writes {_label(_writes(p.op))}"
                    + (f"  reads {', '.join(reads)}" if reads else "")
                )
        return "\n".join(lines)


Resource = TableRef | ColumnRef


def _label(r: Resource) -> str:
    if isinstance(r, TableRef):
        kind = r.builtin.kind if r.builtin is not None else "table"
        window = f" {r.builtin.window}" if r.builtin is not None and r.builtin.window else ""
        return f"table {r.name} ({kind}{window})"
    return f"column {r.kind}.{r.name}"


def _op_kind(op: Operator) -> str:
    return type(op).__name__.lower()


def _writes(op: Operator) -> Resource:
    if isinstance(op, Update | Builtin):
        return op.table
    if isinstance(op, Lookup | Derive):
        return op.column
    return _OutputMarker


def _reads(op: Operator) -> set[Resource]:
    reads: set[Resource] = set(op.inputs)
    reads.update(op.reads)
    if isinstance(op, Lookup):
        reads.add(op.table)
    return reads


# An emit writes an output stream, which no operator reads.
_OutputMarker = ColumnRef("<output>", "<output>", "object")


def _resource_key(r: Resource) -> str:
    return f"table:{r.name}" if isinstance(r, TableRef) else f"column:{r.kind}.{r.name}"


def plan(pipeline: Pipeline) -> Plan:
    """Assign phases to the operators of ``pipeline``; raise PlanError if impossible."""
    ops: Sequence[Operator] = pipeline.operators
    if not ops:
        raise PlanError(f"pipeline {pipeline.name!r} has no operators")
    writers: dict[str, list[int]] = {}
    for i, op in enumerate(ops):
        if isinstance(op, Emit):
            continue
        writers.setdefault(_resource_key(_writes(op)), []).append(i)
    for op in ops:
        for r in _reads(op):
            if isinstance(r, TableRef) and _resource_key(r) not in writers:
                raise PlanError(
                    f"operator {op.name!r} reads table {r.name!r}, but no operator writes it; "
                    "declare a writer (update or a built-in) or remove the read"
                )
    # deps[i] = operators that must run in an earlier phase than i.
    deps: list[set[int]] = [set() for _ in ops]
    for i, op in enumerate(ops):
        for r in _reads(op):
            deps[i].update(writers.get(_resource_key(r), ()))
    _reject_cycles(ops, deps)
    phase = [0] * len(ops)
    # Longest-path layering; writers of one table are lifted to a common phase, which can
    # lift their readers in turn, so iterate to a fixpoint (bounded: the graph is acyclic).
    changed = True
    while changed:
        changed = False
        for i in range(len(ops)):
            want = max((phase[d] + 1 for d in deps[i]), default=0)
            if want > phase[i]:
                phase[i], changed = want, True
        for group in writers.values():
            top = max(phase[i] for i in group)
            for i in group:
                if phase[i] != top:
                    phase[i], changed = top, True
    used = sorted(set(phase))
    renumber = {p: n for n, p in enumerate(used)}
    planned = sorted(
        (PlannedOperator(i, renumber[phase[i]], op) for i, op in enumerate(ops)),
        key=lambda p: (p.phase, p.index),
    )
    return Plan(pipeline, tuple(planned), len(used))


def _reject_cycles(ops: Sequence[Operator], deps: list[set[int]]) -> None:
    # Writers of one table share a phase, so "A writes T, B writes T, A reads what B's
    # readers write" is a cycle too: join co-writers into one node for the search.
    state = [0] * len(ops)  # 0 new, 1 on stack, 2 done
    stack: list[int] = []

    def visit(i: int) -> None:
        state[i] = 1
        stack.append(i)
        for d in sorted(deps[i]):
            if state[d] == 1:
                cycle = [*stack[stack.index(d) :], d]
                raise PlanError(_cycle_message(ops, cycle, via))
            if state[d] == 0:
                visit(d)
        stack.pop()
        state[i] = 2

    # via[(i, d)] = j: i waits for d only because it shares a table with j, which reads d's.
    via: dict[tuple[int, int], int] = {}
    co_writers: dict[str, list[int]] = {}
    for i, op in enumerate(ops):
        if not isinstance(op, Emit):
            co_writers.setdefault(_resource_key(_writes(op)), []).append(i)
    for group in co_writers.values():
        for i in group:
            for j in group:
                # i shares j's phase, so whatever j waits for, i waits for too.
                if i != j:
                    for d in deps[j] - deps[i]:
                        if d not in group:
                            deps[i].add(d)
                            via[(i, d)] = j
    for i in range(len(ops)):
        if i in deps[i]:
            op = ops[i]
            raise PlanError(
                f"operator {op.name!r} reads {_label(_writes(op))}, which it writes itself; "
                "an update sees its own key's value as `old`, and a table cannot be read in "
                "the phase that writes it"
            )
        if state[i] == 0:
            visit(i)


def _cycle_message(
    ops: Sequence[Operator], cycle: list[int], via: dict[tuple[int, int], int]
) -> str:
    # cycle lists operators so that each one depends on (reads what is written by) the next.
    steps = []
    involved = set(cycle)
    for a, b in itertools.pairwise(cycle):
        read = f"reads {_label(_writes(ops[b]))} written by {ops[b].name!r}"
        j = via.get((a, b))
        if j is None:
            steps.append(f"{ops[a].name!r} {read}")
        else:
            involved.add(j)
            steps.append(
                f"{ops[a].name!r} writes {_label(_writes(ops[a]))} in the same phase as "
                f"{ops[j].name!r}, which {read}"
            )
    names = sorted({ops[i].name for i in involved})
    return (
        f"cycle between operators {', '.join(repr(n) for n in names)}: "
        + "; ".join(steps)
        + ". Break it by reading with an earlier table or splitting a table in two"
    )
