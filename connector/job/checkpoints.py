"""Checkpoints on disk: the engine's snapshots plus the job's manifest, written atomically.

Layout under ``checkpoint_dir`` (a mounted volume in Kubernetes)::

    <checkpoint_dir>/<job_id>/manifest.json           fingerprint and resolved offset ranges
    <checkpoint_dir>/<job_id>/ckpt-<seq:020d>.snap    engine snapshots (newest = highest seq)
    <checkpoint_dir>/<job_id>/ckpt-<seq:020d>.out.json  what the snapshot's output is: per
                                                      output and dead-letter partition its
                                                      last offset and seq (see
                                                      connector.output.verify)
    <checkpoint_dir>/<job_id>/done.json               written when the job finished: its
                                                      fingerprint, when, how many events, and
                                                      the final output marks

The **manifest** is written once, before any output, and pins what the job is: the
fingerprint of its settings (pipeline and plan, inputs, schemas, outputs, formats, epoch size,
executor and worker count, start and end as given) and the offset ranges resolved at its first
start. A restarted job reads its ranges from the manifest, never re-resolving ``latest`` (which
may have moved), so its log is the same log. A manifest whose fingerprint differs from the
settings of the restarted job is refused, naming the settings that changed.

**Snapshots** are written to a temporary name, fsynced, renamed, and the directory fsynced, so
a crash leaves either the old or the new file, never half of one. Before writing, the output
producer is flushed: everything the snapshot claims is done is in the output topics. A damaged
snapshot (checksum) is skipped with a warning and the previous one used. Older snapshots
beyond ``keep`` are deleted.

Each snapshot's **output marks** are written (atomically) just before it, once the output it
covers is delivered: a restart checks that the output topics still hold that output
(:func:`connector.output.verify.verify_outputs`) before it skips any of it.

The **done marker** is written once a run has replayed every range and its output is
delivered and marked. A rerun of the same job (same fingerprint) that finds it replays
nothing: it checks that the output topics still hold what the marker recorded and exits (see
:func:`read_done`). A new manifest (a fresh start) removes it first, and so does starting over.

The store is also where SIGTERM lands (:meth:`FileCheckpoints.request_stop`): the next epoch
becomes due, and once its snapshot is saved :class:`Stopped` ends the run.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connector.config import setting
from connector.errors import ConfigError, ConnectorError
from connector.observability.metrics import JobMetrics
from connector.output.verify import OutputMarks
from connector.positions.ranges import PartitionRange
from connector.runtime import failpoints
from engine.checkpoint import EngineSnapshot
from engine.errors import CheckpointError
from engine.log import Epoch

__all__ = [
    "DoneMarker",
    "FileCheckpoints",
    "Manifest",
    "Stopped",
    "fingerprint",
    "read_done",
    "read_manifest",
]

logger = logging.getLogger(__name__)

_SETTING = setting("checkpoint_dir").label


class Stopped(ConnectorError):  # noqa: N818 - it is a condition, not an error of the user
    """The run was asked to stop (SIGTERM) and stopped after saving a checkpoint."""


def fingerprint(parts: Mapping[str, Any]) -> str:
    """A stable hash of the settings that define a job's output."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a job is: its settings' fingerprint (and the parts hashed), its offset ranges,
    and the schemas inferred for its JSON kinds at its first start (kind: schema text)."""

    job: str
    fingerprint: str
    parts: Mapping[str, Any]
    ranges: tuple[PartitionRange, ...]
    inferred: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        """The manifest file's text."""
        return json.dumps(
            {
                "job": self.job,
                "fingerprint": self.fingerprint,
                "parts": self.parts,
                "ranges": [
                    [r.topic, r.partition, r.start, r.end, r.low, r.high] for r in self.ranges
                ],
                "inferred": dict(self.inferred),
            },
            indent=1,
            sort_keys=True,
            default=str,
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse a manifest file's text (ValueError/KeyError/TypeError when malformed)."""
        data = json.loads(text)
        ranges = tuple(
            PartitionRange(str(t), int(p), int(s), int(e), int(lo), int(hi))
            for t, p, s, e, lo, hi in data["ranges"]
        )
        # Manifests written before schemas were inferred have none.
        inferred = {str(k): str(v) for k, v in data.get("inferred", {}).items()}
        return cls(
            str(data["job"]), str(data["fingerprint"]), dict(data["parts"]), ranges, inferred
        )


_DONE = "done.json"


@dataclass(frozen=True, slots=True)
class DoneMarker:
    """A finished job: its fingerprint, when it finished (ISO-8601, UTC), the events its log
    held, and the output marks of everything it wrote (:class:`OutputMarks`)."""

    job: str
    fingerprint: str
    finished_at: str
    events: int
    marks: OutputMarks

    def records(self) -> dict[str, int]:
        """Records per output and dead-letter topic, from the marks (offsets of a topic
        that holds only this job's records, written without transactions: one per record)."""
        out = dict.fromkeys(sorted(self.marks.topics), 0)
        for mark in self.marks.marks.values():
            out[mark.topic] = out.get(mark.topic, 0) + mark.offset + 1 - mark.low
        return out

    def describe(self) -> str:
        """The line a rerun of the finished job logs and prints."""
        counts = [
            f"{n:,}{' records' if i == 0 else ''} in {topic}"
            for i, (topic, n) in enumerate(self.records().items())
        ]
        return (
            f"job {self.job} already finished at {self.finished_at}: "
            f"{', '.join(counts) or 'no output'} ({self.events:,} events replayed), nothing to do"
        )

    def to_json(self) -> str:
        """The marker file's text."""
        return json.dumps(
            {
                "job": self.job,
                "fingerprint": self.fingerprint,
                "finished_at": self.finished_at,
                "events": self.events,
                "marks": json.loads(self.marks.to_json()),
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> DoneMarker:
        """Parse :meth:`to_json` (ValueError, KeyError or TypeError when malformed)."""
        data = json.loads(text)
        return cls(
            str(data["job"]),
            str(data["fingerprint"]),
            str(data["finished_at"]),
            int(data["events"]),
            OutputMarks.from_json(json.dumps(data["marks"])),
        )


def read_done(root: str | os.PathLike[str], job: str, expected: str) -> DoneMarker | None:
    """Job ``job``'s done marker under ``root`` when it finished with the fingerprint
    ``expected`` (its manifest's, already checked against the settings); None otherwise. A
    damaged marker, or one of other settings, is ignored with a warning: the job then
    resumes from its checkpoints as it would without one."""
    path = Path(root) / job / _DONE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(_SETTING, f"cannot read {path}: {exc}") from exc
    try:
        done = DoneMarker.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring the damaged done marker %s (%s)", path, exc)
        return None
    if done.job != job or done.fingerprint != expected:
        logger.warning(
            "ignoring the done marker %s: it is of %s, not of job %s's manifest",
            path,
            f"job {done.job!r}" if done.job != job else "other settings",
            job,
        )
        return None
    return done


def read_manifest(
    root: str | os.PathLike[str], job: str, expected: str, parts: Mapping[str, Any]
) -> Manifest | None:
    """Job ``job``'s manifest under ``root``, if one was written; refused (ConfigError) if
    it is another job's or its fingerprint differs from ``expected``. Creates and deletes
    nothing: a run asks before it holds the job's lease."""
    directory = Path(root) / job
    path = directory / "manifest.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(_SETTING, f"cannot read {path}: {exc}") from exc
    try:
        manifest = Manifest.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConnectorError(
            f"the checkpoint manifest {path} is damaged ({exc}); delete {directory} to start "
            f"job {job} over"
        ) from exc
    if manifest.job != job:
        raise ConfigError(
            _SETTING,
            f"{path} belongs to job {manifest.job!r}, not {job!r}; a job never resumes "
            "another's checkpoints: point checkpoint_dir elsewhere or remove it",
        )
    if manifest.fingerprint != expected:
        changed = sorted(
            k
            for k in set(parts) | set(manifest.parts)
            if json.dumps(parts.get(k), default=str, sort_keys=True)
            != json.dumps(manifest.parts.get(k), default=str, sort_keys=True)
        )
        what = ", ".join(_change(k, manifest.parts, parts) for k in changed) or "unknown"
        raise ConfigError(
            _SETTING,
            f"{directory} holds checkpoints of job {job} with different settings "
            f"(changed: {what}); restore those settings to resume, or use a new job id (or "
            f"delete {directory} and the job's output topics) to start over",
        )
    return manifest


def _write_atomically(path: Path, pieces: Sequence[bytes], failpoint: str | None = None) -> int:
    """Write ``pieces`` one after the other to a temporary file, fsync it, rename it to
    ``path`` and fsync the directory; return the size. ``failpoint`` fires when half of the
    bytes are on disk (the crash tests' torn write). Pieces are written as they are: joining
    a snapshot's state blobs (hundreds of MiB) would copy, and hold, all of it once more."""
    tmp = path.with_name(path.name + ".tmp")
    total = sum(len(p) for p in pieces)
    half = total // 2
    done = 0
    point = failpoint or ""
    fired = not point
    try:
        with open(tmp, "wb") as f:
            for piece in pieces:
                if not fired and done <= half < done + len(piece):
                    view = memoryview(piece)
                    f.write(view[: half - done])
                    f.flush()
                    failpoints.hit(point)
                    fired = True
                    f.write(view[half - done :])
                else:
                    f.write(piece)
                done += len(piece)
            f.flush()
            if not fired:  # nothing to write: "half" of it is all of it
                failpoints.hit(point)
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full volume should not stay fuller until a restart
        raise
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return total


class FileCheckpoints:
    """An :class:`engine.checkpoint.CheckpointStore` in a directory; see the module docstring."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        job: str,
        every_epochs: int,
        every_seconds: float,
        keep: int = 2,
        before_save: Callable[[], None] = lambda: None,
        flush_then: Callable[[Callable[[], None]], None] | None = None,
        metrics: JobMetrics | None = None,
        output_marks: Callable[[], OutputMarks] | None = None,
    ) -> None:
        self.directory = Path(root) / job
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if exc.errno in _VOLUME_ERRNOS:
                raise _volume_error(exc, self.directory, "the job's checkpoint directory") from exc
            raise ConfigError(_SETTING, f"cannot create {self.directory}: {exc}") from exc
        if not os.access(self.directory, os.W_OK):
            raise ConfigError(
                _SETTING,
                f"{self.directory} is not writable (a read-only volume, or no permission): "
                "mount it read-write, fix its permissions, or point checkpoint_dir elsewhere",
            )
        for torn in self.directory.glob("*.tmp"):
            # A write that a crash interrupted before its rename: never a valid checkpoint.
            logger.info("removing %s, left by an interrupted checkpoint write", torn)
            torn.unlink(missing_ok=True)
        self.job = job
        self.every_epochs = every_epochs
        self.every_seconds = every_seconds
        self.keep = keep
        self._before_save = before_save
        self._flush_then = flush_then
        self._metrics = metrics
        # Asked once the output before a snapshot is delivered (after before_save or inside
        # flush_then), so what it returns is that output's.
        self._output_marks = output_marks
        self._since_epochs = 0
        self._last_save = time.monotonic()
        self._stop = False
        self._stopping_after: int | None = None
        #: Snapshots written by this run, their total seconds (the run's wait for them:
        #: flush and write, or only the write when the flush runs alongside), last size.
        self.saved = 0
        self.seconds = 0.0
        self.last_bytes = 0

    # -- manifest ---------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        """Where the job's manifest lives."""
        return self.directory / "manifest.json"

    def manifest(self, expected: str, parts: Mapping[str, Any]) -> Manifest | None:
        """The job's manifest, if one was written; refused if its fingerprint differs."""
        return read_manifest(self.directory.parent, self.job, expected, parts)

    def write_manifest(self, manifest: Manifest) -> None:
        """Pin the job's settings and ranges (before any output is written). A done marker
        left from before (a manifest deleted by hand) goes first: it is not this start's."""
        try:
            self.done_path.unlink(missing_ok=True)
            _write_atomically(self.manifest_path, [manifest.to_json().encode()])
        except OSError as exc:
            raise _volume_error(exc, self.directory, "the job's manifest") from exc

    # -- done marker ------------------------------------------------------------------------
    @property
    def done_path(self) -> Path:
        """Where the job's done marker lives."""
        return self.directory / _DONE

    def write_done(self, done: DoneMarker) -> None:
        """Record that the job finished (its output delivered and marked)."""
        try:
            _write_atomically(self.done_path, [done.to_json().encode()])
        except OSError as exc:
            raise _volume_error(exc, self.directory, "the job's done marker") from exc
        logger.info("job %s finished: done marker %s written", self.job, self.done_path)

    # -- snapshots --------------------------------------------------------------------------
    def _snapshots(self) -> list[Path]:
        return sorted(self.directory.glob("ckpt-*.snap"), reverse=True)

    def latest(self) -> EngineSnapshot | None:
        """The newest readable snapshot; damaged ones are skipped with a warning."""
        paths = self._snapshots()
        for path in paths:
            try:
                snapshot = EngineSnapshot.from_bytes(path.read_bytes())
            except (OSError, CheckpointError) as exc:
                logger.warning("skipping checkpoint %s: %s", path, exc)
                if self._metrics is not None:
                    self._metrics.checkpoint_damaged()
                continue
            logger.info("resuming from checkpoint %s (seq %d)", path, snapshot.position.seq)
            return snapshot
        if paths:
            raise ConnectorError(
                f"every checkpoint in {self.directory} is damaged ({len(paths)} files); delete "
                f"the ckpt-*.snap files there to restart job {self.job} from its first record "
                "(its output is deduplicated against what is already written)"
            )
        return None

    def due(self, epoch: Epoch) -> bool:
        """Whether to snapshot after ``epoch`` (every N epochs or T seconds, or when stopping)."""
        self._since_epochs += 1
        if self._stop:
            if self._stopping_after is None:
                self._stopping_after = epoch.index
            return True
        return (
            self._since_epochs >= self.every_epochs
            or time.monotonic() - self._last_save >= self.every_seconds
        )

    def save(self, snapshot: EngineSnapshot) -> None:
        """Flush the output, then write ``snapshot`` atomically and prune old ones.

        With ``flush_then``, the run does not wait for the flush: ``flush_then(write)`` asks
        for it and the snapshot is written when it is done (from a later call into the
        output), unless the run is stopping, which waits. Until then the previous snapshot
        stays the one a restart resumes from, so the output it skips is always delivered.
        The snapshot's bytes stay in memory meanwhile (about two epochs with the sink
        process), and its write is timed as the output's (the run's ``sink`` time), not as
        the engine's checkpoint time.
        """
        self._since_epochs = 0
        self._last_save = time.monotonic()
        stopping = self._stopping_after is not None and snapshot.position.epoch > (
            self._stopping_after
        )
        if self._flush_then is None or stopping:
            started = time.monotonic()
            self._before_save()
            self._write(snapshot, started)
        else:
            self._flush_then(lambda: self._write(snapshot, time.monotonic()))
        if stopping:
            raise Stopped(
                f"stopped on request after a checkpoint at seq {snapshot.position.seq}; run "
                f"job {self.job} again to resume"
            )

    def _marks_path(self, seq: int) -> Path:
        return self.directory / f"ckpt-{seq:020d}.out.json"

    def output_marks(self, snapshot: EngineSnapshot) -> OutputMarks | None:
        """The output marks written with ``snapshot``; None if it has none (a snapshot of a
        restream from before output marks)."""
        path = self._marks_path(snapshot.position.seq)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return OutputMarks.from_json(text)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConnectorError(
                f"the output marks {path} are damaged ({exc}); run job {self.job} with "
                "--restart-from-scratch to start it over"
            ) from exc

    def discard(self) -> int:
        """Delete the job's manifest, snapshots, marks and done marker (starting over);
        returns how many snapshots went."""
        snapshots = self._snapshots()
        for path in [
            *snapshots,
            *self.directory.glob("ckpt-*.out.json"),
            *self.directory.glob("*.tmp"),
            self.done_path,
            self.manifest_path,
        ]:
            path.unlink(missing_ok=True)
        return len(snapshots)

    def _write(self, snapshot: EngineSnapshot, started: float) -> None:
        failpoints.hit("checkpoint.flushed")
        seq = snapshot.position.seq
        path = self.directory / f"ckpt-{seq:020d}.snap"
        try:
            if self._output_marks is not None:
                # Before the snapshot: a snapshot is never there without its marks.
                marks = self._output_marks()
                _write_atomically(self._marks_path(seq), [marks.to_json().encode()])
            size = _write_atomically(path, snapshot.pieces(), "checkpoint.write")
        except OSError as exc:
            raise _volume_error(
                exc, self.directory, f"checkpoint {path.name} ({snapshot.nbytes:,} bytes of state)"
            ) from exc
        kept = self._snapshots()
        for old in kept[self.keep :]:
            old.unlink(missing_ok=True)
        names = {p.name.removesuffix(".snap") for p in kept[: self.keep]}
        for marks_path in self.directory.glob("ckpt-*.out.json"):
            if marks_path.name.removesuffix(".out.json") not in names:
                marks_path.unlink(missing_ok=True)  # an old snapshot's, or an orphan of a crash
        seconds = time.monotonic() - started
        self.saved += 1
        self.seconds += seconds
        self.last_bytes = size
        if self._metrics is not None:
            self._metrics.checkpoint_saved(seconds, size)
        logger.info(
            "checkpoint at seq %d: %d bytes in %.3f s",
            snapshot.position.seq,
            size,
            seconds,
            extra={"fields": {"seq": snapshot.position.seq, "bytes": size}},
        )

    def request_stop(self) -> None:
        """Snapshot after the next epoch, then stop the run with :class:`Stopped`."""
        self._stop = True


#: Errors of the volume rather than of the path: full, read-only, forbidden.
_VOLUME_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def _volume_error(exc: OSError, where: Path, what: str) -> ConnectorError:
    """The error for a failed write of ``what`` in directory ``where``: a full volume (exit
    1: room may come), a read-only or forbidden one (exit 2: a setting or a mount to fix), or
    another."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ConnectorError(
            f"cannot write {what} to {where}: its volume is full ({exc.strerror}); make "
            "room on checkpoint_dir's volume (each snapshot is about the size of the job's "
            "state; checkpoint_keep of them are kept, plus the one being written) or point "
            f"{_SETTING} elsewhere"
        )
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ConfigError(
            _SETTING,
            f"cannot write {what} to {where}: "
            + (
                "the volume is mounted read-only"
                if exc.errno == errno.EROFS
                else f"permission denied ({exc.strerror})"
            )
            + "; checkpoints need a writable directory: mount it read-write, fix its "
            "permissions, or point checkpoint_dir elsewhere",
        )
    return ConnectorError(f"cannot write {what} to {where}: {exc}")


def resume_ranges(
    ranges: Sequence[PartitionRange], snapshot: EngineSnapshot | None
) -> tuple[PartitionRange, ...]:
    """The ranges still to read after ``snapshot``: each partition from its next offset."""
    if snapshot is None:
        return tuple(ranges)
    positions = snapshot.position.partitions
    out = []
    for r in ranges:
        pos = positions.get((r.topic, r.partition))
        start = r.start if pos is None else max(r.start, min(pos.next_offset, r.end))
        out.append(PartitionRange(r.topic, r.partition, start, r.end, r.low, r.high))
    return tuple(out)


def _change(key: str, before: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    """``key``, with its old and new value when both are short scalars (an epoch size that a
    new default changed, say), so the user sees what to set to resume."""
    old, new = before.get(key), now.get(key)
    if all(isinstance(v, (int, str)) and len(str(v)) <= 40 for v in (old, new)):
        return f"{key} was {old!r}, now {new!r}"
    return key
