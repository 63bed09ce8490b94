"""What an allowed lateness saves: windowed state and speed, with and without one.

A pipeline of short windows per sender (messages in the last hour, distinct recipients in the
last hour, messages per calendar day) replays the social data set once per lateness setting,
on the batch runtime in this process. For each it reports the time, the windowed tables' bytes
(at the end and the peak over epochs), the size of a snapshot at the end, and a digest of the
output: with a lateness at least as large as the data set's disorder the digest equals the
unbounded run's, which shows the bound changed nothing but the memory.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.examples.social.data import SocialData
from engine.examples.social.source import social_source
from engine.executors.runtime import EpochRuntime
from engine.merge import merge_log
from engine.pipeline import Pipeline, Record
from engine.planner import plan
from engine.windows import Sliding, Tumbling

__all__ = ["LatenessRun", "measure_lateness", "window_pipeline"]

HOUR = 3_600_000
DAY = 24 * HOUR


@dataclass(frozen=True, slots=True)
class LatenessRun:
    """One lateness setting: median seconds over the repeats, state and output."""

    lateness: int | None
    seconds: float
    events: int
    state_end: int
    state_peak: int
    snapshot: int
    digest: str

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def window_pipeline(lateness: int | None) -> Pipeline:
    """Short windows per sender, each with ``lateness``."""
    p = Pipeline("windows")
    m = "message"
    tables = [
        p.count("sent_1h", on=m, key="sender", window=Sliding(HOUR, lateness)),
        p.distinct(
            "recipients_1h", on=m, key="sender", value="recipient", window=Sliding(HOUR, lateness)
        ),
        p.count("sent_today", on=m, key="sender", window=Tumbling(DAY, lateness)),
    ]
    looks = [p.lookup(f"n_{t.name}", on=m, table=t, key="sender") for t in tables]
    out = p.output("windows", key="sender")
    names = [c.name for c in looks]
    p.emit(
        "features",
        on=m,
        output=out,
        inputs=looks,
        fn=lambda e, _v: [
            Record(e.sender, {"sender": e.sender, **{n: getattr(e, n) for n in names}})
        ],
        batch_fn=lambda c: {"sender": c["sender"], **{n: c[n] for n in names}},
    )
    return p


def _replay(data: SocialData, lateness: int | None, epoch_size: int) -> LatenessRun:
    runtime = EpochRuntime(plan(window_pipeline(lateness)))
    digest = hashlib.sha256()
    peak = events = 0
    started = time.perf_counter()
    for epoch in merge_log(social_source(data), epoch_size=epoch_size):
        events += len(epoch)
        for chunk in runtime.process(epoch):
            digest.update(chunk.seq.tobytes())
            for name in sorted(chunk.columns):
                digest.update(name.encode())
                digest.update(np.ascontiguousarray(chunk.columns[name]).tobytes())
        peak = max(peak, sum(t.state_nbytes() for t in runtime.vector.values()))
    seconds = time.perf_counter() - started
    end = sum(t.state_nbytes() for t in runtime.vector.values())
    snapshot = len(runtime.snapshot())
    return LatenessRun(lateness, seconds, events, end, peak, snapshot, digest.hexdigest()[:16])


def measure_lateness(
    data: SocialData,
    latenesses: Sequence[int | None],
    *,
    repeat: int = 3,
    epoch_size: int = 65536,
) -> list[LatenessRun]:
    """One :class:`LatenessRun` per setting; the settings alternate within each repeat so
    that a drifting machine slows all of them alike."""
    runs: dict[int | None, list[LatenessRun]] = {lat: [] for lat in latenesses}
    for _ in range(repeat):
        for lateness in latenesses:
            runs[lateness].append(_replay(data, lateness, epoch_size))
    out = []
    for lateness, tries in runs.items():
        median = statistics.median(r.seconds for r in tries)
        first = tries[0]
        out.append(
            LatenessRun(
                lateness,
                median,
                first.events,
                first.state_end,
                max(r.state_peak for r in tries),
                first.snapshot,
                first.digest,
            )
        )
    return out
