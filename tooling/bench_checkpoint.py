"""``restream bench checkpoint``: what crash safety costs, and how fast a killed job is back.

On one broker (embedded Tansu unless ``--bootstrap``) with the social data set written once,
it measures ``--repeat`` times each:

- **plain**: ``restream run`` without checkpoints;
- **checkpointed**: the same with ``checkpoint_dir`` and the given cadence, reporting the
  checkpoints written, their mean duration and size;
- **crash and resume**: a job run as a subprocess that SIGKILLs itself (fail point
  ``sink.epoch``) at ``--kill-at`` of its epochs, then restarted with the same job id: the time
  from the restart to its first new output record, and the restart's total wall time.

It prints medians.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from connector.config import RunConfig, setting
from connector.errors import ConnectorError
from connector.job.run import RunReport, run_job
from connector.pipeline_loader import SOCIAL_SPAM
from connector.runtime.failpoints import ENV as FAILPOINTS_ENV
from engine.examples.social.data import generate_social
from tooling.dataset import broker_for, unique_prefix, write_social_topics

__all__ = ["CheckpointResult", "run_checkpoint_bench"]


@dataclass(slots=True)
class CheckpointResult:
    """Measurements of every repetition."""

    events: int
    plain_s: list[float] = field(default_factory=list)
    checkpointed_s: list[float] = field(default_factory=list)
    checkpoints: list[int] = field(default_factory=list)
    checkpoint_seconds: list[float] = field(default_factory=list)
    checkpoint_bytes: list[int] = field(default_factory=list)
    first_output_s: list[float] = field(default_factory=list)
    resume_wall_s: list[float] = field(default_factory=list)
    resumed_from: list[int] = field(default_factory=list)

    def table(self) -> str:
        """The medians as text."""
        plain = statistics.median(self.plain_s)
        ckpt = statistics.median(self.checkpointed_s)
        lines = [
            f"plain run:          {plain:8.2f} s  {self.events / plain:>10,.0f} events/s",
            f"with checkpoints:   {ckpt:8.2f} s  {self.events / ckpt:>10,.0f} events/s  "
            f"({(ckpt / plain - 1) * 100:+.1f}%; {statistics.median(self.checkpoints):.0f} "
            f"checkpoints per run)",
        ]
        if self.checkpoint_seconds:
            lines.append(
                f"one checkpoint:     {statistics.median(self.checkpoint_seconds):8.2f} s "
                f"(writing it; the output flush runs alongside), "
                f"{statistics.median(self.checkpoint_bytes) / 2**20:,.0f} MiB"
            )
        if self.first_output_s:
            lines += [
                f"restart -> first new output record: "
                f"{statistics.median(self.first_output_s):.2f} s (resumed at seq "
                f"{statistics.median(self.resumed_from):,.0f} of {self.events:,})",
                f"restart -> done:    {statistics.median(self.resume_wall_s):8.2f} s",
            ]
        return "\n".join(lines)


def _config(bootstrap: str, inputs: tuple[tuple[str, str], ...], **kw: Any) -> RunConfig:
    return RunConfig(
        job_id=unique_prefix("ckpt"),
        pipeline=SOCIAL_SPAM,
        bootstrap_servers=bootstrap,
        inputs=inputs,
        progress="none",
        **kw,
    )


def _environment(config: RunConfig) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTREAM_")}
    for name, value in config.summary().items():
        if value is None or name == "kafka" or isinstance(value, dict):
            continue
        text = ",".join(f"{t}={k}" for t, k in value) if name == "inputs" else str(value)
        env[setting(name).env] = text
    return env


def run_checkpoint_bench(
    *,
    events: int,
    users: int,
    days: int,
    partitions: int,
    repeat: int,
    workers: int,
    epoch_size: int,
    every_epochs: int,
    kill_at: float,
    bootstrap: str | None,
    progress: Callable[[str], None],
) -> CheckpointResult:
    """Measure (see the module docstring)."""
    with (
        broker_for(bootstrap) as broker,
        tempfile.TemporaryDirectory(prefix="restream-ckpt-") as root,
    ):
        data = generate_social(users=users, events=events, days=days, partitions=partitions)
        topics = write_social_topics(
            data, bootstrap=broker.bootstrap, prefix=unique_prefix("bench")
        )
        inputs, written = topics.inputs, topics.written
        result = CheckpointResult(events=written.records)
        base = {"workers": workers, "epoch_size": epoch_size}
        epochs = -(-written.records // epoch_size)
        for i in range(repeat):
            plain = run_job(_config(broker.bootstrap, inputs, **base), out=sys.stderr)
            result.plain_s.append(plain.wall_seconds)
            checked = _config(
                broker.bootstrap,
                inputs,
                checkpoint_dir=root,
                checkpoint_every_epochs=every_epochs,
                checkpoint_every_seconds=3600,
                **base,
            )
            report = run_job(checked, out=sys.stderr)
            result.checkpointed_s.append(report.wall_seconds)
            result.checkpoints.append(report.checkpoints)
            if report.checkpoints:
                result.checkpoint_seconds.append(report.checkpoint_seconds / report.checkpoints)
                result.checkpoint_bytes.append(report.checkpoint_bytes)
            crash = replace(checked, job_id=unique_prefix("crash"))
            resumed = _crash_and_resume(crash, max(1, int(epochs * kill_at)))
            result.first_output_s.append(resumed.first_output_s or float("nan"))
            result.resume_wall_s.append(resumed.wall_seconds)
            result.resumed_from.append(resumed.resumed_from or 0)
            progress(
                f"repetition {i + 1}/{repeat}: plain {plain.wall_seconds:.2f} s, checkpointed "
                f"{report.wall_seconds:.2f} s ({report.checkpoints} checkpoints), restart to "
                f"first output {resumed.first_output_s or float('nan'):.2f} s"
            )
    return result


def _crash_and_resume(config: RunConfig, kill_epoch: int) -> RunReport:
    env = _environment(config)
    env[FAILPOINTS_ENV] = f"sink.epoch:{kill_epoch}"
    crashed = subprocess.run(
        [sys.executable, "-m", "connector.cli", "run"],
        env=env,
        capture_output=True,
        start_new_session=True,
        check=False,
    )
    if crashed.returncode != -signal.SIGKILL:
        raise ConnectorError(
            f"the crash run exited {crashed.returncode} instead of being killed: "
            + crashed.stdout.decode(errors="replace")[-2000:]
            + crashed.stderr.decode(errors="replace")[-2000:]
        )
    time.sleep(0.1)
    return run_job(config, out=sys.stderr)


def bench_checkpoint_command(args: Any, out: TextIO) -> int:
    """``restream bench checkpoint``: run and print the medians."""
    result = run_checkpoint_bench(
        events=args.events,
        users=args.users,
        days=args.days,
        partitions=args.partitions,
        repeat=args.repeat,
        workers=args.workers,
        epoch_size=args.epoch_size,
        every_epochs=args.every_epochs,
        kill_at=args.kill_at,
        bootstrap=args.bootstrap,
        progress=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True),
    )
    print(result.table(), file=out)
    return 0
