"""What operator code sees: one event, and a view of the tables it declared.

:class:`Event` exposes the event's fields, its metadata (``kind``, ``seq``, ``ts``, ``topic``,
``partition``, ``offset``) and the derived columns the operator declared as ``inputs``. Asking
for a derived column it did not declare raises :class:`~engine.errors.UndeclaredReadError`, so
a pipeline that runs under the serial executor cannot silently depend on an order that a
parallel executor does not keep.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from engine.errors import UndeclaredReadError
from engine.log import Events

__all__ = ["Event", "View", "events_from_columns"]


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
        derived: dict[str, Any] | None = None,
        allowed: frozenset[str] = frozenset(),
    ) -> None:
        """``derived``: the event's derived columns so far (the executor may :meth:`derive`
        more); ``allowed``: those the operator about to run declared (see :meth:`allow`)."""
        self.__dict__.update(fields)
        self.kind = kind
        self.seq = seq
        self.ts = ts
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self._fields = fields
        self._derived: dict[str, Any] = {} if derived is None else derived
        self._allowed: frozenset[str] = allowed

    def allow(self, names: frozenset[str]) -> None:
        """Let the operator about to run read these derived columns (its declared inputs)."""
        self._allowed = names

    def derive(self, name: str, value: Any) -> None:
        """Set the derived column ``name`` (computed before any operator that reads it)."""
        self._derived[name] = value

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


def events_from_columns(
    ev: Events,
    topics: Sequence[str],
    fields: Mapping[str, Sequence[Any]],
    derived: Mapping[str, Sequence[Any]] | None = None,
    allowed: frozenset[str] = frozenset(),
) -> Iterator[Event]:
    """The rows of ``ev`` as :class:`Event` s, in their order: ``fields`` and ``derived``
    hold each column's values as Python objects, one per row; ``topics`` names the topic
    ids; ``allowed`` are the derived columns the reading operator declared."""
    names = list(fields)
    lists = list(fields.values())
    kind = ev.kind
    for i, (seq, ts, tp, part, off) in enumerate(
        zip(
            ev.seq.tolist(),
            ev.ts.tolist(),
            ev.topic.tolist(),
            ev.partition.tolist(),
            ev.offset.tolist(),
            strict=True,
        )
    ):
        yield Event(
            kind,
            seq,
            ts,
            topics[tp],
            part,
            off,
            {n: col[i] for n, col in zip(names, lists, strict=True)},
            None if derived is None else {k: v[i] for k, v in derived.items()},
            allowed,
        )


class View(Protocol):
    """Tables as of the current event, for operator code."""

    def get(self, table: Any, key: Hashable, *, before: bool = False) -> Any:
        """The value of ``table`` at ``key`` as of this event (``before``: without its writes)."""
        ...

    def schedule(self, at: int, fn: Callable[[Any], Any]) -> None:
        """Apply ``fn(old)`` to the key being updated before the first later event at >= ``at``."""
        ...
