"""What a built-in table computes (:class:`AggregateSpec`) and the two interfaces that run it.

The value of a read is an aggregate over the *members*: the writes of the read's key that the
read can see (``write.seq <= read.seq``, or ``<`` with ``before=True``) and, for a windowed
table, whose event time lies in the read's window (see :mod:`engine.windows`). Members are
taken in log order (seq, then the order of the writes within one seq).

====================  ==========================================================  ==========
kind                  value                                                       empty
====================  ==========================================================  ==========
``count``             number of members (int64)                                   0
``sum``               int64 sum, wrapping like numpy int64; float64 only when     0
                      unwindowed, exactly ``acc = 0.0; acc = acc + v`` in order
``min``, ``max``      smallest / largest value; floats by IEEE 754 totalOrder     absent
                      (``-nan < -inf < ... < -0.0 < +0.0 < ... < +inf < +nan``)
``first``, ``last``   value of the earliest / latest member                       absent
``ratio``             ``(hits, total)``: members with a true value, all members   (0, 0)
``since_last``        ``r - t`` of the latest member (r: the reader's time)        absent
``distinct``          number of distinct int64 values                             0
====================  ==========================================================  ==========

totalOrder makes min and max exact and associative on floats: ``-0.0`` and ``+0.0`` are
different values, and a NaN is an ordinary (extreme) value instead of poisoning comparisons.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeAlias, get_args, runtime_checkable

import numpy as np

from engine.errors import PipelineError
from engine.windows import Hopping, Sliding, Window

__all__ = [
    "AggregateKind",
    "AggregateSpec",
    "Dtype",
    "ReadsLatest",
    "ScalarTable",
    "VectorTable",
    "float_order_key",
    "float_order_keys",
    "float_from_order_keys",
]

AggregateKind: TypeAlias = Literal[
    "count", "sum", "min", "max", "first", "last", "ratio", "since_last", "distinct"
]
Dtype: TypeAlias = Literal["int64", "float64", "bool"]

_KINDS: tuple[str, ...] = get_args(AggregateKind)
_DTYPES: tuple[str, ...] = get_args(Dtype)
# Which value dtypes each kind accepts; kinds that ignore values accept any.
_ALLOWED: dict[str, tuple[str, ...]] = {
    "count": _DTYPES,
    "sum": ("int64", "float64"),
    "min": ("int64", "float64"),
    "max": ("int64", "float64"),
    "first": _DTYPES,
    "last": _DTYPES,
    "ratio": ("bool",),
    "since_last": _DTYPES,
    "distinct": ("int64",),
}
_FLIP = 0x7FFF_FFFF_FFFF_FFFF


@dataclass(frozen=True, slots=True)
class AggregateSpec:
    """A built-in table: the aggregate, its window (None: all writes so far), the value dtype."""

    kind: AggregateKind
    window: Window | None = None
    dtype: Dtype = "int64"

    @property
    def lateness(self) -> int | None:
        """The window's allowed lateness (None: unwindowed, or keeps every write)."""
        return None if self.window is None else self.window.lateness

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise PipelineError(
                f"AggregateSpec.kind must be one of {', '.join(_KINDS)}; got {self.kind!r}"
            )
        if self.window is not None and not isinstance(self.window, Sliding | Hopping):
            raise PipelineError(
                "AggregateSpec.window must be None, Sliding(...), Hopping(...) or "
                f"Tumbling(...); got {self.window!r}"
            )
        if self.dtype not in _DTYPES:
            raise PipelineError(
                f"AggregateSpec.dtype must be one of {', '.join(_DTYPES)}; got {self.dtype!r}"
            )
        allowed = _ALLOWED[self.kind]
        if self.dtype not in allowed:
            raise PipelineError(
                f"AggregateSpec.dtype: a {self.kind} table takes {' or '.join(allowed)} "
                f"values, got {self.dtype}"
            )
        if self.kind == "sum" and self.dtype == "float64" and self.window is not None:
            raise PipelineError(
                "AggregateSpec.dtype: windowed sums need integer values (float sums are only "
                "bit-exact when added in log order); use int64 values, e.g. in fixed-point units"
            )


class ScalarTable(Protocol):
    """One event at a time (the serial executor). Keys are any hashable."""

    def write(self, key: Hashable, seq: int, ts: int, value: object) -> None:
        """Record a write; calls come in seq order."""

    def read(self, key: Hashable, seq: int, ts: int, *, before: bool) -> tuple[bool, object]:
        """``(present, value)`` as of ``seq`` (>= every write so far) at reader time ``ts``."""


class VectorTable(Protocol):
    """One epoch at a time (the batch executors). Keys are int64 ids."""

    def write_epoch(
        self, keys: np.ndarray, seqs: np.ndarray, ts: np.ndarray, values: np.ndarray | None
    ) -> None:
        """All writes of the epoch, in seq order (``values`` None when the kind ignores it)."""

    def read(
        self, keys: np.ndarray, seqs: np.ndarray, ts: np.ndarray, *, before: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(values, present)`` for reads at positions in the current epoch (any order)."""

    def end_epoch(self) -> None:
        """Collapse the epoch's versions; keep only what later reads can need."""

    def state_nbytes(self) -> int:
        """Bytes of numpy state held across epochs."""


@runtime_checkable
class ReadsLatest(Protocol):
    """A vector table that can answer reads whose latest visible epoch write is known.

    The runtime knows it without searching when a lookup reads the table with the key and
    the events of the table's only writer (a count of a sender's messages, read by the
    sender's messages): see ``engine.executors.runtime``.
    """

    def read_latest(
        self, keys: np.ndarray, latest: np.ndarray, seqs: np.ndarray, ts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`VectorTable.read` given each read's latest visible write of the epoch
        (its index among the epoch's writes, -1 for none)."""


def float_order_key(value: float) -> int:
    """An int whose order is IEEE 754 totalOrder of ``value`` (an involution on the bits)."""
    bits: int = struct.unpack("<q", struct.pack("<d", value))[0]
    return bits if bits >= 0 else bits ^ _FLIP


def float_order_keys(values: np.ndarray) -> np.ndarray:
    """:func:`float_order_key` over a float64 array, as int64."""
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.int64)
    return np.where(bits >= 0, bits, bits ^ np.int64(_FLIP))


def float_from_order_keys(keys: np.ndarray) -> np.ndarray:
    """The inverse of :func:`float_order_keys`."""
    bits = np.where(keys >= 0, keys, keys ^ np.int64(_FLIP))
    return np.ascontiguousarray(bits, dtype=np.int64).view(np.float64)
