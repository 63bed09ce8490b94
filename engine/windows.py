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

**Allowed lateness.** Without a bound a table must keep every write forever, because an event
arbitrarily far back in time may still come and read a window there. ``lateness=L`` bounds
that, the way a grace period does in Kafka Streams. The *stream time* ``T`` at an event is the
largest timestamp of the log's events up to and including it. At that event the table keeps
only the writes with ``t >= horizon(T)``: the start of the window that a read at ``T - L``
would use (sliding: ``T - L - length + 1``; hopping: ``start`` of the window ``T - L`` falls
in). A read sees only kept writes, and a write below the horizon is dropped. So an event at
most ``L`` behind the stream time reads exactly what it would read without the bound; an
event further behind sees its window cut at the horizon. The serial oracle applies the same
rule, so it is part of the output, not an approximation. ``lateness=None`` (the default)
keeps everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from engine.errors import PipelineError

__all__ = ["Hopping", "Sliding", "Tumbling", "Window", "hopping_bounds", "horizon"]


_I64_MAX = (1 << 63) - 1


def _positive_int(value: object, field: str, owner: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PipelineError(
            f"{owner}.{field} must be an int (event-time units), got {type(value).__name__}"
        )
    if value <= 0:
        raise PipelineError(f"{owner}.{field} must be positive, got {value}")
    if value > _I64_MAX:
        raise PipelineError(f"{owner}.{field} must fit an int64 (at most 2**63 - 1), got {value}")


def _lateness(value: object, owner: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise PipelineError(
            f"{owner}.lateness must be None (keep every write) or an int in event-time units, "
            f"got {type(value).__name__}"
        )
    if value < 0:
        raise PipelineError(f"{owner}.lateness must be >= 0, got {value}")
    if value > _I64_MAX:
        raise PipelineError(
            f"{owner}.lateness must fit an int64 (at most 2**63 - 1), got {value}; "
            "use None to keep every write"
        )


@dataclass(frozen=True, slots=True)
class Sliding:
    """A sliding window: a read at ``r`` sees the writes with ``r - length < t <= r``.

    ``lateness``: how far behind the stream time an event may be and still be handled
    exactly (see the module docstring); None keeps every write.
    """

    length: int
    lateness: int | None = None

    def __post_init__(self) -> None:
        _positive_int(self.length, "length", "Sliding")
        _lateness(self.lateness, "Sliding")


@dataclass(frozen=True, slots=True)
class Hopping:
    """Hopping windows ``[k*slide, k*slide + size)``; a read uses the one ending soonest.

    ``lateness``: as for :class:`Sliding`; a window stays open until the stream time passes
    its end by ``lateness``.
    """

    size: int
    slide: int
    lateness: int | None = None

    def __post_init__(self) -> None:
        _positive_int(self.size, "size", "Hopping")
        _positive_int(self.slide, "slide", "Hopping")
        _lateness(self.lateness, "Hopping")
        if self.slide > self.size:
            raise PipelineError(
                f"Hopping.slide ({self.slide}) must not exceed Hopping.size ({self.size}); "
                "a slide larger than the size would leave times that no window covers"
            )


def Tumbling(size: int, lateness: int | None = None) -> Hopping:  # noqa: N802 - a window type
    """Tumbling windows ``[k*size, (k+1)*size)``: ``Hopping(size, size, lateness)``."""
    _positive_int(size, "size", "Tumbling")
    _lateness(lateness, "Tumbling")
    return Hopping(size, size, lateness)


Window: TypeAlias = Sliding | Hopping


def hopping_bounds(window: Hopping, r: int) -> tuple[int, int]:
    """``(start, end)`` of the window a read at time ``r`` uses: members have start <= t < end."""
    end = (r // window.slide) * window.slide + window.slide
    return end - window.size, end


def horizon(window: Window, stream_time: int) -> int:
    """The earliest write time that a table with ``window`` keeps at ``stream_time`` (the
    window's ``lateness`` must be set): the start of the window of a read at
    ``stream_time - lateness``."""
    assert window.lateness is not None
    r = stream_time - window.lateness
    if isinstance(window, Sliding):
        return r - window.length + 1
    return hopping_bounds(window, r)[0]
