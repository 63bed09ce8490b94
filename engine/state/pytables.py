"""Versioned tables for Python merges, one epoch at a time (batch and parallel executors).

A table holds a base value per key (the state as of the epoch's start) and, for the keys written
in the epoch, every version with its position. A position is coded ``2 * seq`` for a scheduled
write that fires before event ``seq`` and ``2 * seq + 1`` for event ``seq``'s own write, so a
read as of ``seq`` sees codes ``<= 2 * seq + 1``, and with ``before=True`` codes ``<= 2 * seq``.
At the end of the epoch the versions collapse into the base (garbage collection).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Hashable
from typing import Any

__all__ = ["VersionedTable"]


class VersionedTable:
    """Key -> value with the versions written in the current epoch."""

    __slots__ = ("base", "current", "default", "name", "versions")

    def __init__(self, name: str, default: Any) -> None:
        self.name = name
        self.default = default
        self.base: dict[Hashable, Any] = {}
        # The latest value of every key written this epoch (what the writer sees as `old`).
        self.current: dict[Hashable, Any] = {}
        self.versions: dict[Hashable, tuple[list[int], list[Any]]] = {}

    def latest(self, key: Hashable) -> Any:
        """The newest value of ``key`` (for the writer processing events in order)."""
        if key in self.current:
            return self.current[key]
        return self.base.get(key, self.default)

    def put(self, key: Hashable, code: int, value: Any) -> None:
        """Record a version at position ``code`` (non-decreasing per key)."""
        self.current[key] = value
        entry = self.versions.get(key)
        if entry is None:
            self.versions[key] = ([code], [value])
        else:
            entry[0].append(code)
            entry[1].append(value)

    def read(self, key: Hashable, seq: int, *, before: bool, default: Any) -> Any:
        """The value as of event ``seq`` (without its own write when ``before``)."""
        entry = self.versions.get(key)
        if entry is not None:
            i = bisect_right(entry[0], 2 * seq + (0 if before else 1))
            if i:
                return entry[1][i - 1]
        return self.base.get(key, default)

    def end_epoch(self) -> None:
        """Collapse this epoch's versions into the base."""
        self.base.update(self.current)
        self.current.clear()
        self.versions.clear()

    def __len__(self) -> int:
        return len(self.base) + sum(1 for k in self.current if k not in self.base)
