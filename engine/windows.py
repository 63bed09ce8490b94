"""Event-time windows for the built-in tables.

A window decides which of a key's writes a read sees, by the writes' event times ``t`` and
the reader's event time ``r`` (integers, any unit, as long as writers and readers agree):

- :class:`Sliding` ``(length)``: the writes with ``r - length < t <= r``.
- :class:`Hopping` ``(size, slide)``: windows ``[k*slide, k*slide + size)`` aligned at time 0
  (floor division, so negative times work). A read at ``r`` uses the window that contains
  ``r`` and ends soonest: ``end = (r // slide) * slide + slide``, ``start = end - size``; it
  sees the writes with ``start <= t < end`` (including writes with ``t > r`` that are already
  in the log).
- ``Tumbling(size)`` is ``Hopping(size, size)``.

"So far" is by log position, not by time: the window only filters, by event time, the writes
that the read can see. Timestamps may go backwards; membership stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from engine.errors import PipelineError

__all__ = ["Hopping", "Sliding", "Tumbling", "Window", "hopping_bounds"]


def _positive_int(value: object, field: str, owner: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PipelineError(
            f"{owner}.{field} must be an int (event-time units), got {type(value).__name__}"
        )
    if value <= 0:
        raise PipelineError(f"{owner}.{field} must be positive, got {value}")


@dataclass(frozen=True, slots=True)
class Sliding:
    """A sliding window: a read at ``r`` sees the writes with ``r - length < t <= r``."""

    length: int

    def __post_init__(self) -> None:
        _positive_int(self.length, "length", "Sliding")


@dataclass(frozen=True, slots=True)
class Hopping:
    """Hopping windows ``[k*slide, k*slide + size)``; a read uses the one ending soonest."""

    size: int
    slide: int

    def __post_init__(self) -> None:
        _positive_int(self.size, "size", "Hopping")
        _positive_int(self.slide, "slide", "Hopping")
        if self.slide > self.size:
            raise PipelineError(
                f"Hopping.slide ({self.slide}) must not exceed Hopping.size ({self.size}); "
                "a slide larger than the size would leave times that no window covers"
            )


def Tumbling(size: int) -> Hopping:  # noqa: N802 - reads as a window type, like its siblings
    """Tumbling windows ``[k*size, (k+1)*size)``: ``Hopping(size, size)``."""
    _positive_int(size, "size", "Tumbling")
    return Hopping(size, size)


Window: TypeAlias = Sliding | Hopping


def hopping_bounds(window: Hopping, r: int) -> tuple[int, int]:
    """``(start, end)`` of the window a read at time ``r`` uses: members have start <= t < end."""
    end = (r // window.slide) * window.slide + window.slide
    return end - window.size, end
