"""The ``restream`` command line.

Every flag also reads an environment variable ``RESTREAM_<FLAG>`` (``--jitter-ms`` reads
``RESTREAM_JITTER_MS``, in every command that has it; :mod:`connector.cli.options`); the flag
wins. Exit codes: 0 success, 2 bad configuration, 1 failure.
Each subcommand's logic lives in its own module; this file only maps flags to calls.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import get_args

from connector import __version__
from connector.cli.options import option as _option
from connector.cli.options import resolve_env_defaults
from connector.errors import ConfigError, ConnectorError, RefusedError
from connector.runtime.hugepages import prefer_small_pages
from engine.errors import EngineError

__all__ = ["build_parser", "main"]


def _data_set_options(parser: argparse.ArgumentParser) -> None:
    _option(parser, "--users", int, 100_000, "users in the social network")
    _option(parser, "--events", int, 1_000_000, "events: messages plus friendships")
    _option(parser, "--days", int, 30, "days of messages")
    _option(parser, "--seed", int, 0, "random seed; the same arguments give the same data")
    _option(parser, "--partitions", int, 4, "partitions of each topic")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level argument parser with one subcommand per job."""
    from connector.cli import engine_commands  # the engine without Kafka: plan and benchmark
    from connector.config import (
        ExecutorName,
        InputReaderChoice,
        OutputHeaders,
        OutputWriter,
        add_settings_arguments,
    )
    from tooling.load import FILE_FORMATS

    parser = argparse.ArgumentParser(
        prog="restream",
        description="Replay Kafka topics through stateful logic, serial-equivalent and fast.",
        epilog="Exit codes: 0 success, 2 bad configuration, 1 failure.",
    )
    parser.add_argument("--version", action="version", version=f"restream {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    broker = commands.add_parser(
        "broker",
        help="run a local Kafka-compatible broker in the foreground until Ctrl-C",
        description="Run a local broker (the embedded Tansu by default) and print its address.",
    )
    _option(
        broker, "--kind", str, "tansu", "which broker to run", choices=["tansu", "testcontainers"]
    )
    broker.set_defaults(handler=_broker)

    generate = commands.add_parser("generate", help="write a synthetic data set to Kafka")
    data_sets = generate.add_subparsers(dest="data_set", metavar="DATA_SET", required=True)
    social = data_sets.add_parser(
        "social",
        help="the reference social network (messages and friendships)",
        description="Generate the social network and write it to two topics, printing the rate.",
    )
    _data_set_options(social)
    engine_commands.data_shape_options(social)
    _option(social, "--bootstrap", str, None, "Kafka bootstrap servers, host:port (required)")
    _option(social, "--messages-topic", str, "social.messages", "topic for messages")
    _option(social, "--friendships-topic", str, "social.friendships", "topic for friendships")
    _option(social, "--format", str, "avro", "value format", choices=["avro", "avro-confluent"])
    _option(social, "--schema-registry", str, None, "Schema Registry URL (format avro-confluent)")
    _option(social, "--workers", int, 1, "writer processes (help only when cores are idle)")
    social.set_defaults(handler=_generate_social)

    load = commands.add_parser(
        "load",
        help="write a JSON-lines, CSV or Parquet file to a topic, one record per row",
        description="Bring your own data to a broker (the local one of `restream broker`, "
        "say): each row becomes a JSON record, keyed by --key, timestamped by --timestamp. "
        "The last record of each partition is written in a batch of its own, so that "
        "`--end latest` reads every record also on the embedded broker.",
        epilog="Exit codes: 0 done, 2 bad input or configuration, 1 failure.",
    )
    load.add_argument("file", metavar="FILE", help="the file to load")
    _option(load, "--bootstrap", str, None, "Kafka bootstrap servers, host:port (required)")
    _option(load, "--topic", str, None, "the topic to write (created when missing; required)")
    _option(
        load,
        "--timestamp",
        str,
        None,
        "column with each row's time: epoch ms or ISO-8601 (required)",
    )
    _option(load, "--key", str, None, "column whose value (as text) keys each record")
    _option(load, "--partitions", int, 1, "partitions of a topic created by the load")
    _option(
        load,
        "--format",
        str,
        None,
        "file format (default: from the suffix)",
        choices=list[str](FILE_FORMATS),
    )
    load.set_defaults(handler=_load)

    demo = commands.add_parser(
        "demo",
        help="embedded broker: write the social data set, replay it through the spam rules",
        description="The demo: embedded broker, 1M events written, read back and replayed.",
    )
    _data_set_options(demo)
    _option(demo, "--bootstrap", str, None, "use this cluster instead of an embedded broker")
    _option(demo, "--workers", int, 0, "worker processes of the parallel executor; 0: per CPU")
    demo.set_defaults(handler=_demo, interrupt_on_term=True)

    run = commands.add_parser(
        "run",
        help="replay topics from stored offsets through a pipeline into output topics",
        description="Run one backtest: resolve the offset ranges, replay them through the "
        "pipeline, write serial-equivalent output topics, report speed and metrics. Every "
        "setting can be a flag, an environment variable or a key of the --config YAML file "
        "(flag > env > file > default).",
        epilog="Exit codes: 0 done, 2 bad configuration (nothing written), 1 failure.",
    )
    add_settings_arguments(run)
    run.set_defaults(handler=_run)
    positions = commands.add_parser(
        "positions",
        help="print the offset ranges a run would read, without reading them",
        description="Resolve start and end positions to offset ranges and print them with "
        "record counts and time spans. Takes the same settings as `restream run`.",
        epilog="Exit codes: 0 done, 2 bad configuration or unreadable ranges, 1 failure.",
    )
    add_settings_arguments(positions)
    positions.set_defaults(handler=_positions)

    plan = commands.add_parser("plan", help="print the phases the planner assigns a pipeline")
    engine_commands.add_plan_arguments(plan)
    plan.set_defaults(handler=engine_commands.show_plan)
    bench = commands.add_parser("bench", help="benchmarks")
    benches = bench.add_subparsers(dest="bench", metavar="TARGET", required=True)
    bench_engine = benches.add_parser(
        "engine", help="the executors on a generated log, against hand-written baselines"
    )
    engine_commands.add_bench_engine_arguments(bench_engine)
    bench_engine.set_defaults(handler=engine_commands.bench_engine, interrupt_on_term=True)
    bench_lateness = benches.add_parser(
        "lateness", help="windowed state and speed with and without an allowed lateness"
    )
    engine_commands.add_bench_lateness_arguments(bench_lateness)
    bench_lateness.set_defaults(handler=engine_commands.bench_lateness, interrupt_on_term=True)
    bench_e2e = benches.add_parser(
        "e2e",
        help="Kafka -> engine -> Kafka on a broker, against consume and produce ceilings",
        description="Write the social data set, then measure a consume-only pass, a "
        "produce-only pass and `restream run` with the spam backtest (medians of --repeat).",
    )
    _data_set_options(bench_e2e)
    engine_commands.data_shape_options(bench_e2e)
    _option(bench_e2e, "--repeat", int, 3, "repetitions of each measurement")
    _option(bench_e2e, "--workers", int, 0, "worker processes; 0: one per CPU")
    _option(
        bench_e2e,
        "--executor",
        str,
        "parallel",
        "executor of the e2e pass",
        choices=get_args(ExecutorName),
    )
    _option(bench_e2e, "--bootstrap", str, None, "use this cluster instead of an embedded broker")
    _option(
        bench_e2e,
        "--output-headers",
        str,
        "full",
        "headers of the e2e run's output records (setting output_headers)",
        choices=get_args(OutputHeaders),
    )
    _option(
        bench_e2e,
        "--output-writer",
        str,
        "auto",
        "what writes the e2e run's output (setting output_writer)",
        choices=get_args(OutputWriter),
    )
    _option(
        bench_e2e,
        "--input-reader",
        str,
        "auto",
        "what reads the e2e run's input (setting input_reader)",
        choices=get_args(InputReaderChoice),
    )
    _option(
        bench_e2e,
        "--ray-readers",
        int,
        0,
        "reader actors of a ray e2e run (setting ray_readers; 0: one per node when the "
        "workers span several)",
    )
    _option(
        bench_e2e,
        "--ray-sinks",
        int,
        0,
        "sink actors of a ray e2e run (setting ray_sinks; 0: one per node with CPUs when "
        "there are several)",
    )
    _option(bench_e2e, "--json", str, None, "also write the figures to this JSON file")
    bench_e2e.set_defaults(handler=_bench_e2e, interrupt_on_term=True)
    bench_scale = benches.add_parser(
        "scale",
        help="project the Ray executor's rate on N nodes from a bench e2e report",
        description="Project events/s for clusters of N nodes from the measured per-stage "
        "costs of `restream bench e2e --executor ray --json FILE`, and say what limits each "
        "size (driver, sink, cores or network).",
    )
    _option(
        bench_scale, "--report", str, "bench-e2e-ray.json", "bench e2e --json report of a ray run"
    )
    _option(bench_scale, "--nodes", str, "1,2,4,8,16,32", "cluster sizes (comma-separated)")
    _option(bench_scale, "--cores", int, 16, "cores per node")
    _option(
        bench_scale,
        "--sink-actors",
        int,
        1,
        "sink actors a node (setting ray_sinks); 0: --sink-processes on the driver's node",
    )
    _option(
        bench_scale,
        "--sink-processes",
        int,
        4,
        "sink processes on the driver's node, with --sink-actors 0",
    )
    _option(bench_scale, "--nic-gbit", float, 10.0, "network bandwidth per node, Gbit/s")
    bench_scale.set_defaults(handler=_bench_scale)
    bench_ckpt = benches.add_parser(
        "checkpoint",
        help="cost of checkpoints, and restart-to-first-output after a kill",
        description="Replay the social data set without and with checkpoints, then kill a "
        "run near its end and time its restart (medians of --repeat).",
    )
    _data_set_options(bench_ckpt)
    _option(bench_ckpt, "--repeat", int, 3, "repetitions of each measurement")
    _option(bench_ckpt, "--workers", int, 0, "worker processes; 0: one per CPU")
    _option(
        bench_ckpt,
        "--epoch-size",
        int,
        100_000,
        "events per epoch (fixed here, not automatic, so that checkpoints come as often for "
        "any worker count)",
    )
    _option(bench_ckpt, "--every-epochs", int, 10, "checkpoint after this many epochs")
    _option(bench_ckpt, "--kill-at", float, 0.8, "share of the epochs after which to kill")
    _option(bench_ckpt, "--bootstrap", str, None, "use this cluster instead of an embedded broker")
    bench_ckpt.set_defaults(handler=_bench_checkpoint, interrupt_on_term=True)
    return parser


def _broker(args: argparse.Namespace) -> int:
    from tooling.broker import serve

    return serve(args.kind, out=sys.stdout)


def _generate_social(args: argparse.Namespace) -> int:
    from connector.cli import engine_commands
    from tooling.generate import generate_social_command

    if not args.bootstrap:
        raise ConfigError(
            "--bootstrap", "set it or RESTREAM_BOOTSTRAP (start a broker with `restream broker`)"
        )
    return generate_social_command(
        users=args.users,
        events=args.events,
        days=args.days,
        seed=args.seed,
        shape=engine_commands.data_shape(args),
        partitions=args.partitions,
        bootstrap=args.bootstrap,
        messages_topic=args.messages_topic,
        friendships_topic=args.friendships_topic,
        value_format=args.format,
        schema_registry=args.schema_registry,
        workers=args.workers,
        out=sys.stdout,
    )


def _load(args: argparse.Namespace) -> int:
    from tooling.load import load_command

    for flag in ("topic", "timestamp"):
        if not getattr(args, flag):
            raise ConfigError(f"--{flag}", f"set it or RESTREAM_{flag.upper()}")
    return load_command(
        path=args.file,
        bootstrap=args.bootstrap,
        topic=args.topic,
        timestamp=args.timestamp,
        key=args.key,
        partitions=args.partitions,
        file_format=args.format,
        out=sys.stdout,
    )


def _demo(args: argparse.Namespace) -> int:
    from tooling.demo import run_demo

    return run_demo(
        users=args.users,
        events=args.events,
        days=args.days,
        seed=args.seed,
        partitions=args.partitions,
        workers=args.workers,
        bootstrap=args.bootstrap,
        out=sys.stdout,
    )


def _bench_e2e(args: argparse.Namespace) -> int:
    from connector.cli import engine_commands
    from tooling.bench_e2e import bench_e2e_command

    for name in ("events", "users", "days", "partitions", "repeat"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name}", "must be >= 1")
    if args.ray_readers < 0:
        raise ConfigError("--ray-readers", f"must be >= 0, got {args.ray_readers}")
    if args.ray_sinks < 0:
        raise ConfigError("--ray-sinks", f"must be >= 0, got {args.ray_sinks}")
    return bench_e2e_command(args, sys.stdout, engine_commands.data_shape(args))


def _bench_scale(args: argparse.Namespace) -> int:
    from tooling.scale_model import scale_command

    return scale_command(args, sys.stdout)


def _bench_checkpoint(args: argparse.Namespace) -> int:
    from tooling.bench_checkpoint import bench_checkpoint_command

    for name in ("events", "users", "days", "partitions", "repeat", "epoch_size", "every_epochs"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}", "must be >= 1")
    if not 0 < args.kill_at < 1:
        raise ConfigError("--kill-at", "must be between 0 and 1")
    return bench_checkpoint_command(args, sys.stdout)


def _run(args: argparse.Namespace) -> int:
    from connector.config import config_from_args
    from connector.job.run import run_job
    from connector.observability.logging_setup import configure_logging

    config = config_from_args(args)
    configure_logging(config.log_format, config.log_level)
    report = run_job(config, out=sys.stderr)
    if report.already_finished is not None:
        print(f"restream: {report.already_finished.describe()}", file=sys.stdout)
        return 0
    written = ", ".join(f"{n:,} to {t}" for t, n in sorted(report.outputs.items())) or "none"
    print(
        f"restream: job {report.job} done: {report.events:,} events in "
        f"{report.wall_seconds:.2f} s = {report.events_per_second:,.0f} events/s, "
        f"{report.replay_speedup:,.0f}x real time; output records {written}"
        + (f"; bad records {report.bad_records}" if report.bad_records else "")
        + (
            f"; {sum(report.skipped.values()):,} records already in the output not written again"
            if any(report.skipped.values())
            else ""
        ),
        file=sys.stdout,
    )
    return 0


def _positions(args: argparse.Namespace) -> int:
    from connector.config import config_from_args
    from connector.job.run import build_job, resolve_ranges
    from connector.positions.ranges import KafkaOffsets
    from connector.positions.table import describe_ranges

    config = config_from_args(args)
    if config.job_id is None:
        config = replace(config, job_id="positions")
    if config.inputs and config.pipeline is None:
        # Explicit inputs are all it reads; the pipeline, when given, also checks their kinds.
        topics = [t for t, _ in config.inputs]
    else:
        topics = [t for t, _ in build_job(config, schemas=False).inputs]
    ranges = resolve_ranges(config, topics)
    with KafkaOffsets(config.client_config()) as client:
        print(describe_ranges(ranges, client))
    return 0


@contextlib.contextmanager
def _terminate_as_interrupt(enabled: bool) -> Iterator[None]:
    """While the demo or a bench runs, SIGTERM (``kill``, a Job's deletion) is handled as
    Ctrl-C: their temporary data sets, brokers and measuring processes are cleaned up rather
    than left behind. (``restream run`` has its own SIGTERM handling: a last checkpoint.)"""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    me = os.getpid()

    def interrupt(signum: int, _frame: object) -> None:
        if os.getpid() != me:
            # A process forked meanwhile inherited this handler: it dies of SIGTERM, as it
            # would have without it, rather than running its cleanup.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        # A second SIGTERM must not cut the cleanup short (a Job sends SIGKILL after its
        # grace period anyway).
        signal.signal(signum, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def report_native_crashes() -> None:
    """On a fatal signal (SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL: a fault in native code,
    the Kafka client's or a compiled kernel's) print every thread's Python stack to stderr
    before dying, here and in the processes the job starts: forked ones inherit the handler,
    spawned ones (the sink process) read ``PYTHONFAULTHANDLER``. A Job's log then says where
    a crash happened instead of only its exit signal."""
    if not faulthandler.is_enabled():
        faulthandler.enable(all_threads=True)
    os.environ.setdefault("PYTHONFAULTHANDLER", "1")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    report_native_crashes()
    prefer_small_pages()
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_env_defaults(args)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        with _terminate_as_interrupt(getattr(args, "interrupt_on_term", False)):
            return handler(args)
    except ConfigError as exc:
        print(f"restream: bad configuration: {exc}", file=sys.stderr)
        return 2
    except RefusedError as exc:
        print(f"restream: refused: {exc}", file=sys.stderr)
        return 2
    except (ConnectorError, EngineError) as exc:
        print(f"restream: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("restream: interrupted", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
