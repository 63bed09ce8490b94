"""Positions in the log: where a checkpointed prefix of the log ends.

A :class:`LogPosition` is the next ``seq`` and epoch index, and per partition a
:class:`PartitionPosition` (the offset after its last record in the prefix and the running
maximum of its timestamps), so that a merge of the rest (:func:`engine.merge.merge_log`)
continues exactly where it stood. :mod:`engine.checkpoint` stores them with the executor's
state; they live here, apart from it and from the merge, so that both can use them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["LogPosition", "PartitionPosition"]


@dataclass(frozen=True, slots=True)
class PartitionPosition:
    """Where one partition stands in the checkpointed prefix of the log.

    ``next_offset`` is the offset after its last record in the prefix (the source resumes
    there); ``max_ts`` is the greatest timestamp among its records in the prefix (the running
    maximum that orders its later records in the merge). Only partitions with at least one
    record in the prefix have a position.
    """

    next_offset: int
    max_ts: int


@dataclass(frozen=True, slots=True)
class LogPosition:
    """The end of a checkpointed prefix of the log: the next ``seq`` and epoch index, and
    every partition that contributed to the prefix, keyed by ``(topic, partition)``."""

    seq: int
    epoch: int
    partitions: Mapping[tuple[str, int], PartitionPosition]
