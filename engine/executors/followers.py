"""Leader/follower window sharing: sliding tables of one kind written identically keep one
history (see :class:`engine.state.windowed.WindowedTable`). This module finds which tables of
a plan can follow which and links them; :class:`~engine.executors.runtime.EpochRuntime` then
writes only to the leaders and lets each follower catch up after its leader's writes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.pipeline import Builtin, ColumnRef
from engine.planner import Plan
from engine.state.aggregates import VectorTable
from engine.state.epoch import SharesKeys
from engine.state.windowed import WindowedTable

__all__ = ["find_followers", "find_twins", "link_followers", "link_twins", "windowed"]


def _writers(plan: Plan, *, values: bool) -> dict[str, list[tuple[Any, ...]]]:
    """Per built-in table, each writer's phase, kinds, key, condition (and value)."""
    writers: dict[str, list[tuple[Any, ...]]] = {}
    for planned in plan.operators:
        op = planned.op
        if isinstance(op, Builtin):
            value = None if op.value is None or not values else _name(op.value)
            where = None if op.where is None else _name(op.where)
            writers.setdefault(op.table.name, []).append(
                (planned.phase, op.kinds, op.key, value, where)
            )
    return writers


def find_followers(
    plan: Plan, vector: Mapping[str, VectorTable], replicated: frozenset[str]
) -> dict[str, str]:
    """Windowed tables that can share another's history: follower -> leader (the first
    declared of those with the same kind and exactly the same writes: kinds, key, value,
    condition and phase of every writer, and the same partitioning)."""
    writers = _writers(plan, values=True)
    leaders: dict[tuple[Any, ...], list[str]] = {}
    out: dict[str, str] = {}
    for name, table in vector.items():
        if not isinstance(table, WindowedTable) or name not in writers:
            continue
        signature = (tuple(writers[name]), name in replicated)
        candidates = leaders.setdefault(signature, [])
        leader = next((c for c in candidates if table.can_follow(windowed(vector, c))), None)
        if leader is None:
            candidates.append(name)
        else:
            out[name] = leader
    return out


def find_twins(
    plan: Plan,
    vector: Mapping[str, VectorTable],
    replicated: frozenset[str],
    leaders: Mapping[str, str],
) -> dict[str, str]:
    """Tables written with the same keys and seqs every epoch, of any kind and value: twin
    -> the first declared of them (same kinds, key, condition and phase of every writer,
    and the same partitioning). Followers are left out: they use their leader's keys."""
    writers = _writers(plan, values=False)
    first: dict[tuple[Any, ...], str] = {}
    out: dict[str, str] = {}
    for name, table in vector.items():
        if name in leaders or name not in writers or not isinstance(table, SharesKeys):
            continue
        signature = (tuple(writers[name]), name in replicated)
        if signature in first:
            out[name] = first[signature]
        else:
            first[signature] = name
    return out


def link_twins(vector: Mapping[str, VectorTable], twins: Mapping[str, str]) -> None:
    """Make each twin use its first twin's key slots (after construction or a restore; the
    runtime links followers after this, so that they take their leader's)."""
    for twin, first in twins.items():
        table, other = vector[twin], vector[first]
        assert isinstance(table, SharesKeys) and isinstance(other, SharesKeys)
        table.share_keys(other)


def link_followers(vector: Mapping[str, VectorTable], leaders: Mapping[str, str]) -> None:
    """Make each follower share its leader's history (after construction or a restore)."""
    for follower, leader in leaders.items():
        windowed(vector, follower).follow(windowed(vector, leader))


def windowed(vector: Mapping[str, VectorTable], name: str) -> WindowedTable:
    """The windowed table ``name`` (a leader or follower)."""
    table = vector[name]
    assert isinstance(table, WindowedTable)
    return table


def _name(col: str | ColumnRef) -> str:
    return col if isinstance(col, str) else col.name
