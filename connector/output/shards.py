"""The output split over several sink processes, each owning a fixed set of output partitions.

One sink process writes about 225,000 records a second with full headers (~4.5 µs a record:
keys, encoding, headers and the Kafka client's produce calls), whatever the number of workers.
With ``sink_processes`` K > 1, :class:`~connector.output.sink_process.SinkProcess` runs K
children and each output partition belongs to exactly one of them for the whole run
(:func:`assign_partitions`), so a partition still receives its records in serial order from
one producer, and a resume's skip (per partition) happens where the partition is written.

Where the partitions are computed. The parent (the run's coordinator) computes each record's
output partition once, vectorised (~0.1 µs a record for integer keys), and hands every child
only its own rows together with their partitions (:func:`split_chunks`, ~0.05 µs a record),
so the child builds only its own keys' bytes. The alternative, every child loading the whole
epoch and hashing every key to keep its own, costs K times the hashing and K times the
unpickling of object columns, on CPUs that the workers share; the parent's share is a few
per cent of the sink's per-record cost it hands on. With K = 1 nothing is split: the one child
computes the partitions, as it always has.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from connector.errors import SerdeError
from connector.output.sink import OutputTarget, key_partitions
from connector.runtime.cpus import CpuBudget
from engine.output import OutputChunk

__all__ = [
    "CPUS_PER_SINK",
    "Owners",
    "PartitionRouter",
    "SinkShare",
    "assign_partitions",
    "auto_sink_processes",
    "describe_partitions",
    "owned_partitions",
    "sink_process_count",
    "split_chunks",
]

logger = logging.getLogger(__name__)

#: ``sink_processes`` 0 starts one sink process per this many usable CPUs (at least one): a
#: sink process keeps about one core busy, and the rest of a pod's cores are the workers'.
#: Never more than workers either: a pod without a CPU limit sees the node's CPUs, and each
#: sink process holds up to ~0.5 GiB (its Kafka client's queue), which a pod sized for its
#: workers may not have.
CPUS_PER_SINK = 4

#: Per output topic, the sink process (0..K-1) that owns each of its partitions.
Owners = Mapping[str, npt.NDArray[np.intp]]
#: One child's part of an epoch: its chunks, and per chunk each record's output partition.
SinkShare = tuple[list[OutputChunk], list[npt.NDArray[np.int32]]]


def auto_sink_processes(cpus: int, partitions: int, workers: int) -> int:
    """``sink_processes`` 0: one per :data:`CPUS_PER_SINK` usable CPUs, at least one, no more
    than there are output partitions (a process without partitions has nothing to do) nor
    than the run's ``workers``."""
    return max(1, min(cpus // CPUS_PER_SINK, partitions, workers))


def sink_process_count(
    requested: int, targets: Mapping[str, OutputTarget], cpus: CpuBudget, workers: int
) -> int:
    """The run's sink processes for the ``sink_processes`` setting (``requested``; 0: from
    ``cpus`` and ``workers``), at most one per output partition of ``targets``; logged."""
    partitions = sum({t.topic: t.partitions for t in targets.values()}.values())
    if not requested:
        count = auto_sink_processes(cpus.count, partitions, workers)
        logger.info(
            "%s sink process%s (sink_processes 0: one per %s usable CPUs, at most one per "
            "worker and per output partition; %s workers, %s output partitions; %s)",
            count,
            "" if count == 1 else "es",
            CPUS_PER_SINK,
            workers,
            partitions,
            cpus.source,
        )
        return count
    count = min(requested, max(1, partitions))
    if count < requested:
        logger.warning(
            "sink_processes %s: the output has only %s partitions, so %s sink processes write it",
            requested,
            partitions,
            count,
        )
    else:
        logger.info("%s sink process%s (sink_processes)", count, "" if count == 1 else "es")
    return count


def assign_partitions(
    partitions: Mapping[str, int], processes: int
) -> dict[str, npt.NDArray[np.intp]]:
    """Each output partition's sink process: round-robin over every (topic, partition), the
    topics in name order, so that every process gets the same number of partitions give or
    take one, overall and within each topic. Computed once per run."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, not {processes}")
    owners: dict[str, npt.NDArray[np.intp]] = {}
    start = 0
    for topic in sorted(partitions):
        count = partitions[topic]
        owners[topic] = (start + np.arange(count, dtype=np.intp)) % processes
        start += count
    return owners


def owned_partitions(owners: Owners, process: int) -> list[tuple[str, int]]:
    """The (topic, partition) pairs that sink process ``process`` writes, in order."""
    return [
        (topic, p)
        for topic in sorted(owners)
        for p in np.flatnonzero(owners[topic] == process).tolist()
    ]


def describe_partitions(pairs: Iterable[tuple[str, int]]) -> str:
    """``scores/0,3,6 alerts/1`` for error messages and logs."""
    by_topic: dict[str, list[int]] = {}
    for topic, p in pairs:
        by_topic.setdefault(topic, []).append(p)
    return " ".join(f"{t}/{','.join(map(str, ps))}" for t, ps in by_topic.items()) or "(none)"


def split_chunks(
    chunks: Sequence[OutputChunk],
    targets: Mapping[str, OutputTarget],
    owners: Owners,
    processes: int,
) -> list[SinkShare]:
    """Per sink process, the rows of ``chunks`` in partitions it owns (in their order, so each
    stays in serial order) and their output partitions."""
    shares: list[SinkShare] = [([], []) for _ in range(processes)]
    for chunk in chunks:
        n = len(chunk)
        if not n:
            continue
        target = targets.get(chunk.output)
        if target is None:
            raise SerdeError(f"no output topic configured for stream {chunk.output!r}")
        partitions = key_partitions(chunk.keys, target.partitions)
        process = owners[target.topic][partitions]
        # A stable sort of small integers (numpy's radix sort): each process's rows in order.
        order = np.argsort(process, kind="stable")
        bounds = np.searchsorted(process[order], np.arange(processes + 1)).tolist()
        for i in range(processes):
            rows = order[bounds[i] : bounds[i + 1]]
            if not len(rows):
                continue
            if len(rows) == n:
                shares[i][0].append(chunk)
                shares[i][1].append(partitions)
                continue
            shares[i][0].append(_rows(chunk, rows))
            shares[i][1].append(partitions[rows])
    return shares


def _rows(chunk: OutputChunk, rows: npt.NDArray[Any]) -> OutputChunk:
    return OutputChunk(
        chunk.output,
        chunk.seq[rows],
        chunk.keys[rows],
        {name: column[rows] for name, column in chunk.columns.items()},
    )


@dataclass(frozen=True, slots=True)
class PartitionRouter:
    """The :class:`~engine.output.OutputRouter` of sink actors: each record goes to the
    writer that owns the output partition the Java client picks for its key (the split of
    :func:`split_chunks`, computed by the ray executor's workers where the records are made).
    A stream without a topic goes to writer 0, whose sink names it."""

    parts: int
    #: Per output stream, its topic and partition count.
    topics: Mapping[str, tuple[str, int]]
    owners: Owners

    @classmethod
    def of(cls, targets: Mapping[str, OutputTarget], owners: Owners, parts: int) -> PartitionRouter:
        """The router for ``targets`` split among ``parts`` writers by ``owners``."""
        return cls(parts, {s: (t.topic, t.partitions) for s, t in targets.items()}, owners)

    def __call__(self, chunk: OutputChunk) -> npt.NDArray[np.intp]:
        """Each record's writer."""
        found = self.topics.get(chunk.output)
        if found is None:
            return np.zeros(len(chunk), dtype=np.intp)
        topic, partitions = found
        return self.owners[topic][key_partitions(chunk.keys, partitions)]
