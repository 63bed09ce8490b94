"""Vectorised built-in tables: :func:`make_vector` picks the implementation for a spec."""

from __future__ import annotations

from engine.state.distinct import DistinctWindowedTable
from engine.state.spec import AggregateSpec, VectorTable
from engine.state.unwindowed import UnwindowedTable
from engine.state.windowed import WindowedTable

__all__ = ["make_vector"]


def make_vector(spec: AggregateSpec) -> VectorTable:
    """The vectorised table for ``spec``."""
    if spec.window is None:
        return UnwindowedTable(spec)
    if spec.kind == "distinct":
        return DistinctWindowedTable(spec)
    return WindowedTable(spec)
