"""Progress of a running job: a one-line bar on a terminal, periodic log lines otherwise.

Both read :class:`~connector.observability.metrics.JobMetrics`, so what a person sees and what
Prometheus scrapes are the same numbers.
"""

from __future__ import annotations

import logging
import time
from typing import TextIO

from connector.config import ProgressMode
from connector.observability.metrics import JobMetrics

__all__ = ["Progress"]

logger = logging.getLogger(__name__)

_BAR_WIDTH = 30


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Shows percent done, events/s, replay speed and ETA after each epoch."""

    def __init__(
        self, metrics: JobMetrics, mode: ProgressMode, stream: TextIO, *, every_s: float = 10.0
    ) -> None:
        if mode == "auto":
            mode = "bar" if stream.isatty() else "log"
        self.mode = mode
        self._metrics = metrics
        self._stream = stream
        self._every_s = every_s
        # None until the first line: the monotonic clock can be younger than every_s.
        self._last: float | None = None

    def update(self, *, final: bool = False) -> None:
        """Redraw the bar, or log a line if ``every_s`` passed (always when ``final``)."""
        if self.mode == "none":
            return
        snap = self._metrics.snapshot()
        done, rate = snap.done_ratio, snap.events_per_second
        speedup, eta = snap.replay_speedup, snap.eta_s
        if self.mode == "bar":
            filled = int(done * _BAR_WIDTH)
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            self._stream.write(
                f"\r[{bar}] {done * 100:5.1f}%  {rate:>10,.0f} ev/s  {speedup:>12,.0f}x real "
                f"time  ETA {_duration(eta)} "
            )
            if final:
                self._stream.write("\n")
            self._stream.flush()
            return
        now = time.monotonic()
        if final or self._last is None or now - self._last >= self._every_s:
            self._last = now
            logger.info(
                "progress %.1f%%, %.0f events/s, %.0fx real time, ETA %s",
                done * 100,
                rate,
                speedup,
                _duration(eta),
                extra={
                    "fields": {
                        "progress": round(done, 4),
                        "events_per_second": round(rate, 1),
                        "replay_speedup": round(speedup, 1),
                        "eta_seconds": round(eta, 1),
                    }
                },
            )
