"""What a running job tells people and machines: metrics, progress, log lines.

::

    metrics.py        JobMetrics (one snapshot read by both Prometheus and the progress
                      output), METRICS (every metric's name and help), MetricsServer
    progress.py       Progress: a bar on a TTY, JSON log lines otherwise
    logging_setup.py  configure_logging: text or JSON log lines (not the engine's event
                      log, which is :mod:`engine.log`)
"""

from __future__ import annotations

from connector.observability.logging_setup import JsonFormatter, configure_logging
from connector.observability.metrics import METRICS, JobMetrics, MetricsServer, Snapshot
from connector.observability.progress import Progress

__all__ = [
    "METRICS",
    "JobMetrics",
    "JsonFormatter",
    "MetricsServer",
    "Progress",
    "Snapshot",
    "configure_logging",
]
