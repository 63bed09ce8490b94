"""What operator code sees: one event, and a view of the tables it declared.

:class:`Event` exposes the event's fields, its metadata (``kind``, ``seq``, ``ts``, ``topic``,
``partition``, ``offset``) and the derived columns the operator declared as ``inputs``. Asking
for a derived column it did not declare raises :class:`~engine.errors.UndeclaredReadError`, so
a pipeline that runs under the serial executor cannot silently depend on an order that a
parallel executor does not keep.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, Protocol

from engine.errors import UndeclaredReadError

__all__ = ["Event", "View"]


class Event:
    """One event of the log, as a Python object with attribute access to its fields.

    Fields are plain instance attributes (fast to read); derived columns are checked against
    the reading operator's declared inputs on every access.
    """

    def __init__(
        self,
        kind: str,
        seq: int,
        ts: int,
        topic: str,
        partition: int,
        offset: int,
        fields: Mapping[str, Any],
    ) -> None:
        self.__dict__.update(fields)
        self.kind = kind
        self.seq = seq
        self.ts = ts
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self._fields = fields
        self._derived: dict[str, Any] = {}
        self._allowed: frozenset[str] = frozenset()

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not fields or metadata: the derived columns.
        derived = self.__dict__.get("_derived", {})
        if name in derived:
            if name not in self.__dict__["_allowed"]:
                raise UndeclaredReadError(
                    f"column {name!r} was read but not declared; add it to the operator's `inputs`"
                )
            return derived[name]
        raise AttributeError(
            f"{self.kind} event has no field or column {name!r}; if it is a derived column, "
            "declare it in the operator's `inputs` so that it is computed first"
        )

    def as_dict(self) -> dict[str, Any]:
        """The event's fields and the derived columns visible to the current operator."""
        out = dict(self._fields)
        out.update({k: v for k, v in self._derived.items() if k in self._allowed})
        return out

    def __repr__(self) -> str:
        return (
            f"Event({self.kind} seq={self.seq} ts={self.ts} "
            f"{self.topic}/{self.partition}@{self.offset} {dict(self._fields)!r})"
        )


class View(Protocol):
    """Tables as of the current event, for operator code."""

    def get(self, table: Any, key: Hashable, *, before: bool = False) -> Any:
        """The value of ``table`` at ``key`` as of this event (``before``: without its writes)."""
        ...

    def schedule(self, at: int, fn: Callable[[Any], Any]) -> None:
        """Apply ``fn(old)`` to the key being updated before the first later event at >= ``at``."""
        ...
