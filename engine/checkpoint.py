"""Checkpoints of a run: where in the log it stands, and its state, for crash-safe replay.

A run that dies at 80% must be able to restart and finish with output identical to an
uninterrupted run. The log is deterministic (DESIGN.md section 1), so a checkpoint taken at the
end of an epoch needs only:

* the :class:`~engine.positions.LogPosition`: the next ``seq`` and epoch index, and per
  partition the offset after its last record in the log so far and the running maximum of its
  timestamps (the merge key's first part), so that the merge of the rest continues exactly
  where it stood;
* the executor's state: one opaque blob per worker (see
  :meth:`engine.executors.runtime.EpochRuntime.snapshot`).

Executors that can checkpoint take ``checkpoints=`` (a :class:`CheckpointStore`, owned by the
caller: it decides when and where) and ``resume=`` (an :class:`EngineSnapshot`). On resume the
caller hands the executor a source that starts each partition of the position at its
``next_offset`` (other partitions at their usual start); the executor then produces exactly the
output that the uninterrupted run produced after the checkpointed epoch, with the same ``seq`` s
and the same epochs (index and cut points).
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import numpy as np

from engine.errors import CheckpointError
from engine.log import Epoch
from engine.positions import LogPosition, PartitionPosition

__all__ = [
    "CheckpointStore",
    "EngineSnapshot",
    "PositionTracker",
    "check_resume",
]

_MAGIC = b"RESTREAM-SNAPSHOT"
_VERSION = 1
_HEAD = struct.Struct("<HII")  # version, crc32 of the rest, metadata length
_LENGTH = struct.Struct("<Q")


@dataclass(frozen=True, slots=True, eq=False)
class EngineSnapshot:
    """Everything an executor needs to resume after the epoch before ``position.epoch``.

    ``states`` holds one opaque blob per worker (one for the batch executor). ``executor``,
    ``workers`` and ``epoch_size`` must match the resuming executor.
    """

    position: LogPosition
    executor: str
    workers: int
    epoch_size: int
    states: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if len(self.states) != self.workers:
            raise CheckpointError(
                f"a snapshot of {self.workers} worker(s) needs {self.workers} state blob(s), "
                f"got {len(self.states)}"
            )

    @property
    def nbytes(self) -> int:
        """Total size of the state blobs."""
        return sum(len(s) for s in self.states)

    def to_bytes(self) -> bytes:
        """A self-checking serialisation (see :meth:`from_bytes`) for the caller to store."""
        return b"".join(self.pieces())

    def write_to(self, out: BinaryIO) -> int:
        """Write :meth:`to_bytes` to ``out`` without joining it in memory; return its size."""
        size = 0
        for piece in self.pieces():
            out.write(piece)
            size += len(piece)
        return size

    def pieces(self) -> list[bytes]:
        """:meth:`to_bytes` in pieces whose concatenation it is (the state blobs among
        them, not copied), for writers that stream them."""
        meta = {
            "executor": self.executor,
            "workers": self.workers,
            "epoch_size": self.epoch_size,
            "seq": self.position.seq,
            "epoch": self.position.epoch,
            "partitions": [
                [topic, partition, pos.next_offset, pos.max_ts]
                for (topic, partition), pos in sorted(self.position.partitions.items())
            ],
            "states": [len(s) for s in self.states],
        }
        encoded = json.dumps(meta, separators=(",", ":")).encode()
        body = [_LENGTH.pack(len(encoded)), encoded, *self.states]
        crc = 0
        for piece in body:
            crc = zlib.crc32(piece, crc)
        return [_MAGIC + _HEAD.pack(_VERSION, crc, len(encoded)), *body]

    @classmethod
    def from_bytes(cls, data: bytes) -> EngineSnapshot:
        """Read what :meth:`to_bytes` wrote; a damaged or foreign file raises CheckpointError."""
        view = memoryview(data)
        if bytes(view[: len(_MAGIC)]) != _MAGIC or len(view) < len(_MAGIC) + _HEAD.size:
            raise CheckpointError(
                "this is not a restream engine snapshot (bad magic); point the job at the "
                "checkpoint it wrote, or start over without one"
            )
        version, crc, _ = _HEAD.unpack_from(view, len(_MAGIC))
        if version != _VERSION:
            raise CheckpointError(
                f"engine snapshot format {version} is not supported (this engine reads format "
                f"{_VERSION}); resume with the restream version that wrote it, or start over"
            )
        body = view[len(_MAGIC) + _HEAD.size :]
        if zlib.crc32(body) != crc:
            raise CheckpointError(
                "the engine snapshot is damaged (checksum mismatch, e.g. a torn write); delete "
                "it to start over, or resume from an older checkpoint"
            )
        (length,) = _LENGTH.unpack_from(body, 0)
        pos = _LENGTH.size
        meta = json.loads(bytes(body[pos : pos + length]))
        pos += length
        states = []
        for size in meta["states"]:
            states.append(bytes(body[pos : pos + size]))
            pos += size
        partitions = {
            (str(topic), int(partition)): PartitionPosition(int(offset), int(max_ts))
            for topic, partition, offset, max_ts in meta["partitions"]
        }
        return cls(
            LogPosition(int(meta["seq"]), int(meta["epoch"]), partitions),
            str(meta["executor"]),
            int(meta["workers"]),
            int(meta["epoch_size"]),
            tuple(states),
        )


class CheckpointStore(Protocol):
    """The caller's side of checkpointing: when to take snapshots, and where they go."""

    def due(self, epoch: Epoch) -> bool:
        """Asked once per epoch before it is processed: snapshot right after this epoch?"""
        ...

    def save(self, snapshot: EngineSnapshot) -> None:
        """Keep ``snapshot`` (state as of the end of a due epoch).

        Called after the sink's ``write`` of that epoch returned, so everything before the
        snapshot's position has been handed to the sink. A store may make it durable later
        than ``save`` returns (once the sink has delivered that output, say); until then a
        restart uses the store's previous snapshot. The snapshot is immutable bytes, so
        keeping it is safe.
        """
        ...


class PositionTracker:
    """Follows the epochs a run has finished and says where it stands in the log."""

    def __init__(self, start: LogPosition | None = None) -> None:
        self._seq = 0 if start is None else start.seq
        self._epoch = 0 if start is None else start.epoch
        # (topic, partition) -> [next offset, max ts]
        self._parts: dict[tuple[str, int], list[int]] = (
            {}
            if start is None
            else {k: [p.next_offset, p.max_ts] for k, p in start.partitions.items()}
        )

    def advance(self, epoch: Epoch) -> None:
        """Account for ``epoch``, the next epoch of the log."""
        if epoch.index != self._epoch or epoch.seq_start != self._seq:
            raise CheckpointError(
                f"epoch {epoch.index} (seq {epoch.seq_start}..) does not follow the tracked "
                f"position (epoch {self._epoch}, seq {self._seq}); epochs must come in order"
            )
        for ev in epoch.events.values():
            if not len(ev):
                continue
            key = (ev.topic.astype(np.int64) << 32) | ev.partition.astype(np.int64)
            # Stable: each partition's records stay in log order, so its last one has the
            # greatest offset.
            order = np.argsort(key, kind="stable")
            sorted_key = key[order]
            starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
            ends = np.r_[starts[1:], len(order)] - 1
            last = ev.offset[order][ends]
            top = np.maximum.reduceat(ev.ts[order], starts)
            topics = ev.topic[order][starts]
            partitions = ev.partition[order][starts]
            for t, p, off, ts in zip(
                topics.tolist(), partitions.tolist(), last.tolist(), top.tolist(), strict=True
            ):
                name = (epoch.topics[t], p)
                entry = self._parts.get(name)
                if entry is None:
                    self._parts[name] = [off + 1, ts]
                else:
                    entry[0] = off + 1
                    entry[1] = max(entry[1], ts)
        self._seq = epoch.seq_end
        self._epoch = epoch.index + 1

    @property
    def position(self) -> LogPosition:
        """The position after the last epoch passed to :meth:`advance`."""
        return LogPosition(
            self._seq,
            self._epoch,
            {k: PartitionPosition(v[0], v[1]) for k, v in sorted(self._parts.items())},
        )


def check_resume(snapshot: EngineSnapshot, *, executor: str, workers: int, epoch_size: int) -> None:
    """Raise :class:`CheckpointError` unless an executor so configured can resume ``snapshot``."""
    if snapshot.executor != executor or snapshot.workers != workers:
        raise CheckpointError(
            f"the checkpoint was taken by the {snapshot.executor} executor with "
            f"{snapshot.workers} worker(s); it cannot be resumed by the {executor} executor with "
            f"{workers} worker(s) (state is partitioned per worker): resume with the same "
            "executor and worker count, or start over without the checkpoint"
        )
    if snapshot.epoch_size != epoch_size:
        raise CheckpointError(
            f"the checkpoint was taken with epoch_size {snapshot.epoch_size}, this run has "
            f"{epoch_size}; resume with the same epoch size, or start over without the checkpoint"
        )
