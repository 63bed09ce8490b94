"""A backtest job, start to finish, and the checkpoints that make it crash safe.

::

    run.py          run_job: settings -> positions -> output topics -> the replay (reader,
                    executor, sink process) -> metrics; build_job and resolve_ranges for
                    ``restream positions``
    checkpoints.py  the manifest (settings fingerprint, ranges of the first start) and the
                    engine's snapshots on disk, written atomically; resuming from them; the
                    done marker of a finished job

The engine's half of a checkpoint (the snapshot format) is :mod:`engine.checkpoint`; the
pipeline a job runs comes from :mod:`connector.pipeline_loader`.
"""

from __future__ import annotations

from connector.job.checkpoints import FileCheckpoints, Manifest, Stopped, fingerprint
from connector.job.run import JobPlan, RunReport, build_job, resolve_ranges, run_job

__all__ = [
    "FileCheckpoints",
    "JobPlan",
    "Manifest",
    "RunReport",
    "Stopped",
    "build_job",
    "fingerprint",
    "resolve_ranges",
    "run_job",
]
