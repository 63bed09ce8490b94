"""``restream plan``, ``restream bench engine`` and ``restream bench lateness``: the engine
without Kafka."""

from __future__ import annotations

import argparse
import json
import sys

from connector.cli.options import option
from connector.config import setting
from connector.errors import ConfigError
from connector.pipeline_loader import load_pipeline
from engine.benchmark import (
    IMPLEMENTATIONS,
    BenchResult,
    run_engine_bench,
    valid_implementation,
)
from engine.examples.social.data import SCENARIOS, Skew, resolve_scenario
from engine.executors.base import OPERATOR_PREFIX
from engine.planner import plan

__all__ = [
    "add_bench_engine_arguments",
    "add_bench_lateness_arguments",
    "add_plan_arguments",
    "bench_engine",
    "bench_lateness",
    "data_shape",
    "data_shape_options",
    "parse_latenesses",
    "show_plan",
]


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``restream plan``: the pipeline, required like ``restream run``'s."""
    option(
        parser,
        "pipeline",
        str,
        None,
        "pipeline name (social-spam: the demo's spam rules), path/to/file.py:ATTRIBUTE or "
        "package.module:ATTRIBUTE (from the working directory); required",
    )


def show_plan(args: argparse.Namespace) -> int:
    """Print the phases of a pipeline."""
    label = f"pipeline (PIPELINE, {setting('pipeline').env})"
    if not args.pipeline:
        raise ConfigError(label, "is required")
    print(plan(load_pipeline(args.pipeline, field=label)).describe())
    return 0


def data_shape(args: argparse.Namespace) -> tuple[Skew, int]:
    """``(skew, jitter_ms)`` from the flags of :func:`data_shape_options`; a bad value is a
    :class:`ConfigError` (exit 2) naming the flags."""
    skew, jitter = resolve_scenario(
        args.scenario,
        jitter_ms=args.jitter_ms,
        hot_share=args.hot_share,
        heavy_share=args.heavy_share,
        heavy_users=args.heavy_users,
        clock_ms=args.clock_ms,
    )
    problems = skew.problems(args.users)
    if jitter < 0:
        problems.append(f"jitter_ms must be >= 0, got {jitter}")
    if problems:
        raise ConfigError(
            "--scenario/--hot-share/--heavy-share/--heavy-users/--clock-ms/--jitter-ms",
            "; ".join(problems),
        )
    return skew, jitter


def data_shape_options(parser: argparse.ArgumentParser) -> None:
    """How far the generated data departs from the friendly default (hot keys, disorder):
    the same flags, variables and defaults in ``generate social`` and every bench."""
    option(
        parser,
        "--scenario",
        str,
        "uniform",
        "data-set shape: uniform, or skewed (one user sends 40%% of the messages, 30 users "
        "another 30%%, a 1-minute clock, up to 3 h of backwards jitter); the flags below "
        "override its settings",
        choices=sorted(SCENARIOS),
    )
    option(
        parser,
        "--jitter-ms",
        int,
        None,
        "shift record timestamps back by up to this much (default: the scenario's)",
    )
    option(parser, "--hot-share", float, None, "share of messages sent by one hot user")
    option(parser, "--heavy-share", float, None, "share of messages sent by a heavy group")
    option(parser, "--heavy-users", int, None, "users in the heavy group")
    option(parser, "--clock-ms", int, None, "timestamp resolution (60000: a minute clock)")


def add_bench_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``restream bench engine``."""
    option(parser, "--events", int, 1_000_000, "events in the generated log")
    option(parser, "--users", int, 100_000, "users")
    option(parser, "--days", int, 30, "days of event time")
    data_shape_options(parser)
    option(
        parser,
        "--epoch-size",
        int,
        0,
        "events per epoch; 0: what restream run picks for a replay of this length "
        "(125,000 per worker within 250,000..2,000,000, cut to give at least 8 epochs "
        "of at least 20,000 events)",
    )
    option(parser, "--repeat", int, 3, "runs per implementation; the median is reported")
    option(
        parser,
        "--only",
        str,
        ",".join(IMPLEMENTATIONS),
        f"comma-separated implementations: {','.join(IMPLEMENTATIONS)}, or "
        "parallel-wN for N workers, or ray-wN for N actors on the Ray cluster of RAY_ADDRESS "
        "(else a local one; needs the ray extra)",
    )
    option(parser, "--json", str, "bench-engine.json", "where to write the JSON report")


def bench_engine(args: argparse.Namespace) -> int:
    """Run the engine benchmark and print a table."""
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(name for name in only if not valid_implementation(name))
    if unknown or not only:
        print(
            f"restream: --only: unknown implementation(s) {unknown}; "
            f"choose from {', '.join(IMPLEMENTATIONS)}, parallel-wN or ray-wN",
            file=sys.stderr,
        )
        return 2
    if any(name.startswith("ray-w") for name in only):
        from engine.errors import EngineError
        from engine.executors.ray_executor import import_ray

        try:
            import_ray()
        except EngineError as exc:
            print(f"restream: --only: {exc}", file=sys.stderr)
            return 2
    if args.epoch_size < 0:
        print("restream: --epoch-size must be >= 0 (0: automatic)", file=sys.stderr)
        return 2
    for name in ("events", "users", "days", "repeat"):
        if getattr(args, name) < 1:
            print(f"restream: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    skew, jitter_ms = data_shape(args)
    result = run_engine_bench(
        events=args.events,
        users=args.users,
        days=args.days,
        jitter_ms=jitter_ms,
        skew=skew,
        scenario=args.scenario,
        epoch_size=args.epoch_size or None,
        repeat=args.repeat,
        only=only,
        progress=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True),
    )
    print(format_table(result))
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(result.to_json(), f, indent=2)
    print(f"JSON report: {args.json}")
    return 0 if result.agree() else 1


def format_table(result: BenchResult) -> str:
    """The benchmark as a plain-text table."""
    shape = result.scenario
    if result.skew and (result.skew.get("hot_share") or result.skew.get("heavy_share")):
        shape += (
            f" (hot key {result.skew['hot_share']:.0%}, {result.skew['heavy_users']:.0f} heavy "
            f"users {result.skew['heavy_share']:.0%}, clock {result.skew['clock_ms']:.0f} ms)"
        )
    lines = [
        f"spam backtest: {result.events:,} events, {result.users:,} users, {result.days} days, "
        f"{shape}, jitter {result.jitter_ms} ms, epoch {_epochs(result)}, "
        f"median of {result.repeat}",
        f"{'implementation':<14} {'median s':>9} {'events/s':>12} {'vs hand':>8} "
        f"{'vs whole':>9} {'RSS MiB':>9} {'PSS MiB':>9}  output",
    ]
    ref = next(m for m in result.measurements if m.name == result.reference)
    for m in result.measurements:
        same = "reference" if m is ref else ("same" if m.digest == ref.digest else "DIFFERENT")
        lines.append(
            f"{m.name:<14} {m.median:>9.2f} {m.events_per_second:>12,.0f} "
            f"{_times(result.speedup(m, 'handwritten'), 8)} "
            f"{_times(result.speedup(m, 'wholelog'), 9)} {m.peak_rss_mib:>9,.0f} "
            f"{_mib(m.peak_pss_mib):>9}  {same}"
        )
    lines.append(
        "RSS: the sum of every process's peak RSS (coordinator and workers; the workers are\n"
        "  started before the data set is loaded, so they do not map it).\n"
        "PSS: the peak of the processes' summed proportional set size (sampled every 1 s);\n"
        "  it counts each page once, as a container's memory limit does."
    )
    scaling = result.scaling()
    if scaling:
        lines.append("parallel scaling: " + ", ".join(f"{k} {v:.2f}x" for k, v in scaling.items()))
    lines.append("")
    lines.append("where the time goes (seconds summed over processes, median run):")
    for m in result.measurements:
        if not m.phase_seconds:
            continue
        activities = {k: v for k, v in m.phase_seconds.items() if not k.startswith(OPERATOR_PREFIX)}
        total = sum(activities.values()) or 1.0
        phases = sum(v for k, v in m.phase_seconds.items() if k.startswith("phase"))
        moving = m.phase_seconds.get("move", 0.0) + m.phase_seconds.get("exchange", 0.0)
        other = total - phases - moving
        lines.append(
            f"{m.name:<14} operators {phases / total:>4.0%}  data movement {moving / total:>4.0%}"
            f"  reading/merging/sink {other / total:>4.0%}  ("
            + ", ".join(f"{k} {v:.2f}" for k, v in activities.items())
            + ")"
        )
    lines.extend(_operator_table(result))
    return "\n".join(lines)


def _operator_table(result: BenchResult) -> list[str]:
    """Microseconds per input event spent in each operator (and each table's write and
    epoch end), summed over processes, per executor: where the next bottleneck is."""
    runs = [
        m
        for m in result.measurements
        if any(k.startswith(OPERATOR_PREFIX) for k in m.phase_seconds)
    ]
    if not runs:
        return []
    names = sorted(
        {k for m in runs for k in m.phase_seconds if k.startswith(OPERATOR_PREFIX)},
        key=lambda k: -max(m.phase_seconds.get(k, 0.0) for m in runs),
    )
    width = max(len(n) - len(OPERATOR_PREFIX) for n in names)
    lines = [
        "",
        "us per event per operator (summed over processes, median run):",
        f"{'operator':<{width}} " + " ".join(f"{m.name:>12}" for m in runs),
    ]
    for name in names:
        cells = " ".join(f"{m.phase_seconds.get(name, 0.0) / m.events * 1e6:>12.3f}" for m in runs)
        lines.append(f"{name[len(OPERATOR_PREFIX) :]:<{width}} {cells}")
    compile_cells = " ".join(f"{m.phase_seconds.get('compile', 0.0):>12.2f}" for m in runs)
    lines.append(f"{'kernel warm-up (s, in the run)':<{width}} {compile_cells}")
    return lines


def _epochs(result: BenchResult) -> str:
    """The epoch size, or each executor's when they chose their own."""
    if result.epoch_size is not None:
        return f"{result.epoch_size:,}"
    sizes = [f"{m.name} {m.epoch_size:,}" for m in result.measurements if m.epoch_size]
    return "auto (" + ", ".join(sizes) + ")" if sizes else "auto"


def _times(ratio: float | None, width: int) -> str:
    """A speedup right-aligned in ``width`` columns, or a dash when there is no baseline."""
    text = "-" if ratio is None else f"{ratio:.2f}x"
    return f"{text:>{width}}"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def add_bench_lateness_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``restream bench lateness``."""
    option(parser, "--events", int, 2_000_000, "events in the generated log")
    option(parser, "--users", int, 20_000, "users")
    option(parser, "--days", int, 30, "days of event time")
    option(parser, "--jitter-ms", int, 60_000, "backwards timestamp jitter of the data set")
    option(parser, "--repeat", int, 3, "runs per setting; the median time is reported")
    option(
        parser,
        "--lateness",
        str,
        "none,300000,0",
        "comma-separated allowed lateness settings in ms, 'none' for no bound",
    )


def parse_latenesses(text: str) -> list[int | None]:
    """``none,300000,0`` -> [None, 300000, 0]; ValueError naming the bad item."""
    out: list[int | None] = []
    for item in (part.strip() for part in text.split(",")):
        if item.lower() == "none":
            out.append(None)
            continue
        try:
            value = int(item)
        except ValueError:
            raise ValueError(f"{item!r} is not an int or 'none'") from None
        if value < 0:
            raise ValueError(f"{item!r} is negative")
        out.append(value)
    if not out or len(set(out)) != len(out):
        raise ValueError("give each setting once")
    return out


def bench_lateness(args: argparse.Namespace) -> int:
    """Replay short windows with each lateness setting and print what each keeps."""
    from engine.examples.social.data import generate_social
    from engine.examples.social.lateness import measure_lateness

    try:
        latenesses = parse_latenesses(args.lateness)
    except ValueError as exc:
        print(f"restream: --lateness: {exc}", file=sys.stderr)
        return 2
    for name in ("events", "users", "days", "repeat"):
        if getattr(args, name) < 1:
            print(f"restream: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    if args.jitter_ms < 0:
        print("restream: --jitter-ms must be >= 0", file=sys.stderr)
        return 2
    data = generate_social(
        users=args.users, events=args.events, days=args.days, jitter_ms=args.jitter_ms
    )
    runs = measure_lateness(data, latenesses, repeat=args.repeat)
    base = runs[0]
    print(
        f"short windows per sender: {base.events:,} events, {args.users:,} users, "
        f"{args.days} days, jitter {args.jitter_ms} ms, median of {args.repeat}"
    )
    print(
        f"{'lateness ms':>12} {'seconds':>8} {'events/s':>10} {'state MiB':>10} "
        f"{'peak MiB':>9} {'snapshot MiB':>13}  output"
    )
    for run in runs:
        same = "same as" if run.digest == base.digest else "differs from"
        print(
            f"{'none' if run.lateness is None else run.lateness:>12} {run.seconds:>8.2f} "
            f"{run.events_per_second:>10,.0f} {run.state_end / 2**20:>10.1f} "
            f"{run.state_peak / 2**20:>9.1f} {run.snapshot / 2**20:>13.1f}  "
            f"{run.digest} ({same} the first)"
        )
    return 0
