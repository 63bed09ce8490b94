"""restream's replay engine: the log, tables and versions, operators, the planner, executors.

The engine knows nothing about Kafka: the connector feeds it columnar batches through the
:class:`engine.log.Source` protocol and takes its output records.
"""

from __future__ import annotations

from engine.errors import (
    CheckpointError,
    EngineError,
    ExecutionError,
    LogError,
    PipelineError,
    PlanError,
    UndeclaredReadError,
)

__all__ = [
    "CheckpointError",
    "EngineError",
    "ExecutionError",
    "LogError",
    "PipelineError",
    "PlanError",
    "UndeclaredReadError",
]
