"""restream's replay engine: the log, tables and versions, operators, the planner, executors.

A backtest is written against this package alone::

    from engine import Pipeline, Record, Sliding, Unordered

    HOUR = 3_600_000
    p = Pipeline("example")
    links = p.count("friend_links", on="friendship", key=Unordered("user_a", "user_b"))
    is_friend = p.lookup(
        "is_friend", on="message", table=links, key=Unordered("sender", "recipient")
    )
    sent_1h = p.count("sent_1h", on="message", key="sender", window=Sliding(HOUR))
    n = p.lookup("n_1h", on="message", table=sent_1h, key="sender")
    out = p.output("alerts", key="sender", fields=["sender", "n"])
    p.emit(
        "alert",
        on="message",
        output=out,
        inputs=[is_friend, n],
        fn=lambda e, view: (
            [Record(e.sender, {"sender": e.sender, "n": e.n_1h})]
            if e.n_1h > 100 and not e.is_friend
            else []
        ),
    )

:mod:`engine.testing` runs a pipeline on in-memory events (to unit-test its rules);
``restream run`` runs it over Kafka topics. The engine knows nothing about Kafka: the
connector feeds it columnar batches through the :class:`engine.log.Source` protocol and takes
its output records.
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
from engine.keys import Unordered
from engine.pipeline import Pipeline, Record
from engine.windows import Hopping, Sliding, Tumbling, Window

__all__ = [
    "CheckpointError",
    "EngineError",
    "ExecutionError",
    "Hopping",
    "LogError",
    "Pipeline",
    "PipelineError",
    "PlanError",
    "Record",
    "Sliding",
    "Tumbling",
    "UndeclaredReadError",
    "Unordered",
    "Window",
]
