"""``restream bench scale``: how far the Ray executor scales, projected from measured costs.

The projection starts from a ``restream bench e2e --executor ray --json FILE`` report
(:class:`Costs`: CPU per input event of the driver process, the readers and the workers'
compute, and the sink's own CPU per output record) and from what this command measures itself
on the social data set (:func:`measure_epoch`): the bytes each node receives per event, the
bytes of an output record, and what assembling an epoch from the readers' pieces costs a
worker. For ``N`` nodes of ``c`` cores it takes the smallest of four limits (:func:`project`):

- **driver**: one process merges the sort keys and routes every epoch: ``1 / driver``;
- **sink**: ``S`` sink actors on every node write the output: ``N * S / (sink * records per
  event)``; without sink actors, ``K`` sink processes on the driver's node: ``K / (the same)``;
- **cores**: the cluster's cores less the driver's and one per sink share the readers, the
  workers' compute and the assembly: every worker assembles the whole epoch, so that term
  grows with the worker count (``W * assemble``) and is where adding nodes stops paying;
- **network**: every node receives every epoch's rows (its workers read the whole epoch) and
  its sinks' share of the output (the driver's node all of it, without sink actors):
  ``NIC bandwidth / those bytes per event``.

Assumptions (the README's "Scale-out" section repeats them): one worker per core; CPU per
event as measured on the benchmark's machine (a faster core only helps); the workers' compute
per event, summed, stays what it was at the measured worker count: work a worker does per
event of the whole epoch besides assembling it (finding its shard's rows, the exchange's fixed
part) is not modelled, so the projection is an upper bound; reading and decoding spread
evenly over the nodes; a sink keeps at most one core busy; nothing else on the cluster.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np

from connector.errors import ConfigError
from engine.examples.social.data import generate_social
from engine.examples.social.source import social_source
from engine.examples.social.spam import build_spam_pipeline
from engine.executors.batch import BatchExecutor
from engine.executors.ray_readers import ReaderShare, assemble
from engine.log import Epoch, PartitionBatch, PartitionSpec, StringColumn
from engine.merge import merge_log
from engine.output import collect
from engine.planner import plan

__all__ = [
    "Costs",
    "EpochShape",
    "Limit",
    "Projection",
    "costs_from_report",
    "measure_epoch",
    "project",
]

Limit = Literal["driver", "sink", "cores", "network"]


@dataclass(frozen=True, slots=True)
class Costs:
    """Measured costs, µs of CPU per input event unless said otherwise."""

    #: The driver process, every thread (key merge, routing, hand-offs, output merge).
    driver: float
    #: The readers, summed (consume, decode, cutting pieces).
    readers: float
    #: The workers' phases, summed over workers (the exchange included).
    compute: float
    #: The sink, per output record.
    sink_per_record: float
    #: Output records per input event.
    records_per_event: float


@dataclass(frozen=True, slots=True)
class Projection:
    """The projected rate of one cluster size and what limits it."""

    nodes: int
    workers: int
    limits: Mapping[Limit, float]

    @property
    def events_per_second(self) -> float:
        """The smallest limit."""
        return min(self.limits.values())

    @property
    def bottleneck(self) -> Limit:
        """The limit that sets the rate."""
        return min(self.limits, key=lambda k: self.limits[k])


#: The sink's rows that sum the others.
_SINK_TOTALS = ("write (all but flush)", "CPU (all but flush)")


def _stage(stages: Sequence[Mapping[str, Any]], process: str, stage: str) -> float:
    for row in stages:
        if row["process"] == process and row["stage"] == stage:
            return float(row["us_per_record"])
    return 0.0


def costs_from_report(report: Mapping[str, Any]) -> Costs:
    """The costs in a ``bench e2e --json`` report of a Ray run with readers; ConfigError
    (naming what is missing) for a report of another kind."""
    stages = report.get("stages")
    if not isinstance(stages, list):
        raise ConfigError("--report", "the report has no stages: write it with bench e2e --json")
    if report.get("executor") != "ray" or not any(
        r["process"] == "readers (summed)" for r in stages
    ):
        raise ConfigError(
            "--report",
            "the report is not of a Ray run with reader actors: write it with restream bench "
            "e2e --executor ray --json FILE",
        )
    driver = _stage(stages, "coordinator", "process CPU, all threads")
    if driver == 0.0:
        raise ConfigError("--report", "the report lacks the driver's process CPU: rerun bench e2e")
    readers = sum(float(r["us_per_record"]) for r in stages if r["process"] == "readers (summed)")
    # The sink's own CPU when the report has it (the stages are wall times, which count
    # waiting for a core on the benchmark's busy machine), else the stages' sum.
    sink = _stage(stages, "sink", "CPU (all but flush)") or sum(
        float(r["us_per_record"])
        for r in stages
        if r["process"] == "sink" and r["stage"] not in _SINK_TOTALS
    )
    return Costs(
        driver=driver,
        readers=readers,
        compute=_stage(stages, "workers (summed)", "compute (phases)"),
        sink_per_record=sink,
        records_per_event=float(report["outputs"]) / float(report["events"]),
    )


def project(
    costs: Costs,
    shape: EpochShape,
    nodes: int,
    cores: int,
    sink_processes: int,
    nic_gbit: float,
    sink_actors: int = 0,
) -> Projection:
    """The rate of ``nodes`` nodes of ``cores`` cores each (see the module docstring);
    ``shape``: the epoch's bytes and assembly cost with one reader a node. ``sink_actors``:
    sink actors a node (0: ``sink_processes`` on the driver's node write everything)."""
    workers = nodes * cores
    sinks = nodes * sink_actors if sink_actors else sink_processes
    spare = workers - 1 - sinks  # cores left once the driver and the sinks have theirs
    per_event = costs.readers + costs.compute + workers * shape.assemble_us
    output = costs.records_per_event * shape.output_bytes_per_record
    # What the busiest node receives a second per event: every epoch's rows, and the output
    # its sinks write (all of it on the driver's node, a node's share with sink actors).
    received = shape.bytes_per_event + (output / nodes if sink_actors else output)
    limits: dict[Limit, float] = {
        "driver": 1e6 / costs.driver,
        "sink": sinks * 1e6 / max(costs.sink_per_record * costs.records_per_event, 1e-9),
        "cores": max(spare, 0) * 1e6 / per_event,
        "network": nic_gbit * 1e9 / 8 / max(received, 1e-9),
    }
    return Projection(nodes, workers, limits)


@dataclass(frozen=True, slots=True)
class EpochShape:
    """What an epoch of the social data set costs a worker to receive and assemble."""

    #: Bytes of decoded rows per event (what every node receives).
    bytes_per_event: float
    #: µs per event for one worker to assemble an epoch from ``readers`` pieces.
    assemble_us: float
    readers: int
    #: Bytes of an output record as the workers hand it to the sinks (the spam scores).
    output_bytes_per_record: float = 0.0


def measure_epoch(readers: int, events: int = 250_000, repeat: int = 5) -> EpochShape:
    """Cut a social epoch of ``events`` events over ``readers`` reader shares (no Ray: the
    reader's own code, :class:`~engine.executors.ray_readers.ReaderShare`) and time
    :func:`~engine.executors.ray_readers.assemble` (median of ``repeat``)."""
    data = generate_social(
        events=events, users=max(1_000, events // 10), partitions=max(4, readers)
    )
    source = social_source(data, batch_size=events)
    shares = [ReaderShare(part, keys_per_call=2 * events) for part in source.split(readers)]
    batches: list[PartitionBatch] = []
    for share in shares:
        done = False
        while not done:
            got, _report, done = share.read()
            batches.extend(got)
    keys = _Batches(tuple(source.partitions()), batches)
    epoch = next(iter(merge_log(keys, epoch_size=2 * events)))
    pieces = [share.cut(epoch) for share in shares]
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        whole = assemble(epoch, pieces)
        times.append(time.perf_counter() - began)
    return EpochShape(
        _epoch_bytes(whole) / len(epoch),
        statistics.median(times) * 1e6 / len(epoch),
        readers,
        _output_bytes(data),
    )


def _output_bytes(data: Any) -> float:
    """Bytes per output record of the spam backtest on ``data`` (its columns, seq and key)."""
    sink = collect()
    BatchExecutor().run(plan(build_spam_pipeline()), social_source(data), sink)
    records = sum(len(c) for c in sink.chunks)
    total = sum(
        c.seq.nbytes + c.keys.nbytes + sum(col.nbytes for col in c.columns.values())
        for c in sink.chunks
    )
    return total / max(records, 1)


@dataclass(frozen=True, slots=True)
class _Batches:
    """A source of batches already read (the readers' key-only batches)."""

    specs: tuple[PartitionSpec, ...]
    read: list[PartitionBatch]

    def partitions(self) -> tuple[PartitionSpec, ...]:
        return self.specs

    def batches(self) -> Iterator[PartitionBatch]:
        return iter(self.read)


def _epoch_bytes(epoch: Epoch) -> int:
    total = epoch.ts.nbytes + epoch.kind.nbytes
    for ev in epoch.events.values():
        total += ev.seq.nbytes + ev.ts.nbytes + ev.topic.nbytes + ev.partition.nbytes
        total += ev.offset.nbytes
        for column in ev.columns.values():
            if isinstance(column, StringColumn):
                total += column.codes.nbytes + sum(len(str(s)) + 1 for s in column.values)
            else:
                total += np.asarray(column).nbytes
    return total


def scale_command(args: Any, out: TextIO) -> int:
    """``restream bench scale``: print the projection table."""
    path = Path(args.report)
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError("--report", f"cannot read {path}: {exc}") from None
    nodes = _counts(args.nodes)
    for name, value in (("--cores", args.cores), ("--sink-processes", args.sink_processes)):
        if value < 1:
            raise ConfigError(name, f"must be >= 1, got {value}")
    if args.sink_actors < 0:
        raise ConfigError("--sink-actors", f"must be >= 0, got {args.sink_actors}")
    if args.nic_gbit <= 0:
        raise ConfigError("--nic-gbit", f"must be > 0, got {args.nic_gbit}")
    costs = costs_from_report(report)
    # One reader a node: one piece an epoch on one node, several beyond (measured at 4).
    shapes = {1: measure_epoch(1), 2: measure_epoch(4)}
    many = shapes[2]
    print(
        f"measured (µs per input event): driver {costs.driver:.3f}, readers {costs.readers:.3f}, "
        f"compute {costs.compute:.3f} (summed over workers); sink {costs.sink_per_record:.3f} "
        f"per record x {costs.records_per_event:.2f} records an event; assembly "
        f"{many.assemble_us:.4f} per worker ({many.readers} readers); "
        f"{many.bytes_per_event:.0f} bytes an event to every node, "
        f"{many.output_bytes_per_record:.0f} bytes an output record to its sink",
        file=out,
    )
    print(
        f"{'nodes':>5}{'workers':>9}{'events/s':>13}  {'bottleneck':<10}"
        f"{'driver':>12}{'sink':>12}{'cores':>12}{'network':>13}",
        file=out,
    )
    best = 0.0
    stops = None
    previous = nodes[0]
    for n in nodes:
        shape = shapes[min(n, 2)]
        p = project(
            costs, shape, n, args.cores, args.sink_processes, args.nic_gbit, args.sink_actors
        )
        lim = p.limits
        print(
            f"{n:>5}{p.workers:>9}{p.events_per_second:>13,.0f}  {p.bottleneck:<10}"
            f"{lim['driver']:>12,.0f}{lim['sink']:>12,.0f}{lim['cores']:>12,.0f}"
            f"{lim['network']:>13,.0f}",
            file=out,
        )
        if stops is None and best and p.events_per_second < best * 1.1:
            stops = previous
        best = max(best, p.events_per_second)
        previous = n
    sinks = (
        f"{args.sink_actors} sink actor{'s' if args.sink_actors > 1 else ''} a node"
        if args.sink_actors
        else f"{args.sink_processes} sink processes on the driver's node"
    )
    print(
        f"{args.cores} cores a node, one worker per core, {sinks}, {args.nic_gbit:g} Gbit/s "
        "per node; "
        + (
            f"beyond {stops} nodes, more nodes add less than 10%"
            if stops
            else "still scaling at the largest size"
        ),
        file=out,
    )
    return 0


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError("--nodes", f"a comma-separated list of counts, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise ConfigError("--nodes", f"counts must be >= 1, got {text!r}")
    return sorted(set(counts))
