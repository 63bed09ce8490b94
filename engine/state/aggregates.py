"""Built-in tables: counts, sums, min/max, first/last, ratios, time since last, distinct counts.

Each :class:`AggregateSpec` (kind, window, value dtype) has two implementations with the same
semantics (defined in :mod:`engine.state.spec`):

- :func:`make_scalar` builds a :class:`ScalarTable`, driven one event at a time by the serial
  executor (the oracle; plain code in :mod:`engine.state.scalar`);
- :func:`make_vector` builds a :class:`VectorTable`, driven one epoch at a time by the batch
  executors (numpy, in :mod:`engine.state.vector` and the modules it names).

They must give the same bits for every read; the unit tests check both against a naive
reference that stores every write.
"""

from __future__ import annotations

from engine.state.scalar import make_scalar
from engine.state.spec import AggregateKind, AggregateSpec, Dtype, ScalarTable, VectorTable
from engine.state.vector import make_vector

__all__ = [
    "AggregateKind",
    "AggregateSpec",
    "Dtype",
    "ScalarTable",
    "VectorTable",
    "make_scalar",
    "make_vector",
]
