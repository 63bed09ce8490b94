"""The output sink in processes of its own, so that writing overlaps reading.

In one process the coordinator of a replay reads and decodes the input (epoch e+1) and
writes the output (epoch e-1) one after the other, under one GIL: the Kafka client costs a
few µs a record either way, and writing was two thirds of a 10M-event run. :class:`SinkProcess`
is the engine's :class:`~engine.output.Sink` for ``restream run``: it hands each epoch's
output chunks, and the coordinates of the epoch's events, to a child process that runs a
:class:`~connector.output.sink.KafkaSink` with its own producer, and returns at once.

Several children (``processes``, the ``sink_processes`` setting). One child writes about
225,000 records a second however many workers compute them; with K > 1 children each owns a
fixed share of the output partitions for the whole run (:mod:`connector.output.shards`: the
parent computes each record's partition and hands every child only its own rows). Every
child receives every epoch (some with nothing to write), so they all move in step, and
everything below holds per child: order, bounds, flushes, failures. With K = 1 the one child
computes the partitions itself.

Order and bounds. A child writes epochs in the order it receives them, and an output
partition is written by one child only, so every output partition still receives its
records in serial order. At most ``max_pending`` epochs are handed to a child and not yet
written; :meth:`SinkProcess.write` waits beyond that (back-pressure, bounded memory).
:meth:`SinkProcess.flush` returns once everything handed on is written and delivered by
every child; :meth:`SinkProcess.flush_then` asks for the same without waiting and calls back
when it is done, which is how a checkpoint's snapshot waits for the output before it (a
restart skips that output, so it must be delivered) while the run goes on. A flush's marks
count only once every child has answered it.

Failure. An exception in a child comes back and is raised by the next call of the
parent (the same type for the connector's errors, else :class:`~connector.errors.SinkError`
with its text, the child's traceback logged); a child that dies raises SinkError with its
exit code (a SIGKILL is reported as a possible out-of-memory kill, with the child's peak RSS
as last sampled). The watchdog: besides its reports, a child sends a heartbeat every
``heartbeat_s`` from a thread of its own, saying how long its main thread has been inside
one step (writing an epoch, flushing); a child that sends nothing for ``timeout_s`` while
the parent waits (stopped, frozen), or whose step lasts longer than ``busy_limit_s`` (its
producer gives up on a lost broker after ``broker_timeout``, so a step never legitimately
lasts much longer), is killed and raises :class:`~connector.errors.WatchdogError` naming its
pid, state, and the epoch and ``seq`` range it was writing. Messages name a child as "the
sink process (pid N)", or with K > 1 as "the sink process 2 of 3 (pid N, output partitions
scores/1,4)". Once one child failed, :meth:`SinkProcess.close` kills the others rather than
letting them finish. A child dies with the thread that started it (Linux
``PR_SET_PDEATHSIG``) and when its pipe closes: it keeps no copy of the parent's ends.

Moving the data. The chunks go as a file per child, and the coordinates as one file that
the children share, in a run directory on ``/dev/shm`` (:mod:`engine.executors.arena`:
pickle 5, arrays out of band), so that the parent's hand-off is a memory copy and the pipes
carry only small messages: a large pickle through a pipe would make the parent wait on the
child's reads, which take the GIL chunk by chunk while the child's main thread produces. A
child removes its chunks' file once loaded, the parent the coordinates' once every child has
written the epoch; the directory goes at :meth:`SinkProcess.close`, and one left by a killed
parent is swept by the next run.

Pipe messages, parent to child: ``("epoch", index, path or None, coordinates path or
None)``, ``("flush", mark)``, ``("stop",)``. Child to parent: ``("written", index, written,
skipped, first_write_at, broker_errors, seconds, stages)`` per epoch, ``("flushed",
broker_errors, marks, seconds)``, ``("failed", exception or None, text, traceback or
None)``, and ``("alive", busy_seconds)`` heartbeats. A flush with ``mark`` (a checkpoint's)
also reads back the last record of every partition the child wrote since the last such
flush and reports its :class:`~connector.output.verify.PartitionMark` (``marks``, else an
empty dict); the parent keeps the newest per partition in :attr:`SinkProcess.marks`. The
children's seconds of encoding and producing are added to the run's times as ``write``
(summed over children; the executor's ``sink`` is the coordinator's hand-off, the split by
partition and waits for a busy child included), and broken down by stage (``stage write
load``, ``... keys``, ``skip``, ``encode``, ``headers``, ``produce``, ``flush``: see
:data:`~connector.observability.metrics.STAGE_PREFIX`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from connector.errors import ConnectorError, RefusedError, SinkError, WatchdogError
from connector.observability.metrics import STAGE_PREFIX, JobMetrics
from connector.output.shards import (
    assign_partitions,
    describe_partitions,
    owned_partitions,
    split_chunks,
)
from connector.output.sink import Coordinates, epoch_done
from connector.output.verify import PartitionMark
from connector.output.writer import FlushOrder, PartitionWriter, SinkSettings
from connector.runtime import failpoints
from connector.runtime.gcpolicy import replay_collection
from connector.runtime.processes import process_context
from engine.errors import EngineError
from engine.executors.arena import RunDir, load, store
from engine.executors.base import RunStats
from engine.log import Epoch
from engine.output import OutputChunk
from engine.parentdeath import die_with_parent
from engine.procmem import Watched

__all__ = ["SinkProcess", "SinkSettings"]

logger = logging.getLogger(__name__)

#: Epochs handed to the child and not yet written. One lets the coordinator hand on epoch e
#: while the child writes e-1; each more would hold another epoch's output in /dev/shm
#: (about 100 bytes a record, with the coordinates) for a stage that is already the slower.
DEFAULT_MAX_PENDING = 1
#: Seconds the parent waits for a report before it declares the child stuck.
DEFAULT_TIMEOUT_S = 300.0
#: Until the child's first sign of life, it may take this long at least: started from a
#: forkserver (the parent has Kafka client threads), it imports numpy, polars and the Kafka
#: client first, seconds on a cold machine (no compiled bytecode yet).
STARTUP_S = 60.0
_POLL_S = 0.2


class _Child:
    """One sink process as the parent sees it: its pipes, the epochs handed to it and not yet
    reported written, and its answers to flushes that not every child has answered yet."""

    def __init__(
        self,
        number: int,
        of: int,
        partitions: Sequence[tuple[str, int]],
        process: Any,
        to_child: Connection,
        from_child: Connection,
    ) -> None:
        self.number = number
        self.of = of
        #: The output partitions it writes (empty when it is the only one: it writes all).
        self.partitions = tuple(partitions)
        self.process = process
        self.to_child = to_child
        self.from_child = from_child
        self.watched = Watched(process.pid)
        self.started = False  # heard from it yet
        #: time.monotonic() of its last message.
        self.heard = time.monotonic()
        #: Epochs handed on, not yet reported written: (index, seq_start, seq_end).
        self.pending: list[tuple[int, int, int]] = []

    @property
    def pid(self) -> int | None:
        """Its process id."""
        return self.process.pid  # type: ignore[no-any-return]

    @property
    def name(self) -> str:
        """How messages name it: ``the sink process (pid 12)`` when it is the only one, else
        ``the sink process 2 of 3 (pid 12, output partitions scores/1,4)``."""
        if self.of == 1:
            return f"the sink process (pid {self.pid})"
        return (
            f"the sink process {self.number + 1} of {self.of} (pid {self.pid}, output "
            f"partitions {describe_partitions(self.partitions)})"
        )


class SinkProcess:
    """A :class:`~engine.output.Sink` that writes through child processes, one by default or
    ``processes`` of them, each owning a share of the output partitions; see the module
    docstring. Use it as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        settings: SinkSettings,
        *,
        processes: int = 1,
        metrics: JobMetrics | None = None,
        stats: RunStats | None = None,
        on_epoch: Callable[[Epoch], None] | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        busy_limit_s: float | None = None,
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, not {max_pending}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s}")
        counts = {t.topic: t.partitions for t in settings.targets.values()}
        if processes < 1 or (processes > 1 and processes > sum(counts.values())):
            raise ValueError(
                f"processes must be between 1 and the {sum(counts.values())} output "
                f"partitions, not {processes}"
            )
        # Several heartbeats within the timeout, so that one late beat is no stall.
        settings = replace(settings, heartbeat_s=min(settings.heartbeat_s, timeout_s / 4))
        self._targets = settings.targets
        self._timeout_s = timeout_s
        self._busy_limit_s = busy_limit_s
        self._metrics = metrics
        self._stats = stats
        self._on_epoch = on_epoch
        self._max_pending = max_pending
        #: Per output topic, the child that owns each partition (None: one child, owning all).
        self._owners = assign_partitions(counts, processes) if processes > 1 else None
        # Flushes asked of every child, complete once all of them answered.
        self._flushes = FlushOrder(processes)
        # Per epoch with records: its coordinates' file, and how many children have yet to
        # write the epoch (the file goes when none has).
        self._coords: dict[int, Path] = {}
        self._coords_readers: dict[int, int] = {}
        self._failed = False  # a child failed, died or was stopped by the watchdog
        #: Records written (queued to the children's producers) and skipped, per topic.
        self.written: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        #: time.monotonic() (system-wide) when a child handed the run's first record on.
        self.first_write_at: float | None = None
        self._dir = RunDir.create()
        self._children: list[_Child] = []
        self._closed = False
        try:
            context = process_context()
            for number in range(processes):
                self._children.append(self._start(context, settings, number, processes))
        except BaseException:
            self._closed = True
            for child in self._children:
                child.process.kill()
                child.process.join()
            self._close_ends()
            raise
        self._by_conn = {child.from_child: child for child in self._children}

    def _start(self, context: Any, settings: SinkSettings, number: int, of: int) -> _Child:
        owned = owned_partitions(self._owners, number) if self._owners is not None else []
        if self._owners is not None:
            mine = set(owned)
            settings = replace(
                settings, resume={k: r for k, r in settings.resume.items() if k in mine}
            )
        to_child_r, to_child = context.Pipe(duplex=False)
        from_child, from_child_w = context.Pipe(duplex=False)
        forked = context.get_start_method() == "fork"
        # A forked child also holds copies of the parent's ends of the children started
        # before it: it closes them, so that each child sees its inbox close with the parent.
        parent_ends = [to_child, from_child]
        for other in self._children:
            parent_ends += [other.to_child, other.from_child]
        process = context.Process(
            target=sink_main,
            args=(
                settings,
                to_child_r,
                from_child_w,
                tuple(parent_ends),
                os.getpid() if forked else None,
            ),
            name="restream-sink" if of == 1 else f"restream-sink-{number}",
            daemon=True,
        )
        try:
            process.start()
        except BaseException:
            to_child.close()
            from_child.close()
            raise
        finally:
            to_child_r.close()
            from_child_w.close()
        child = _Child(number, of, owned, process, to_child, from_child)
        if of == 1:
            logger.debug("sink process %s started (%s)", process.pid, context.get_start_method())
        else:
            logger.debug(
                "sink process %s of %s started: pid %s, output partitions %s (%s)",
                number + 1,
                of,
                process.pid,
                describe_partitions(owned),
                context.get_start_method(),
            )
        return child

    @property
    def marks(self) -> Mapping[tuple[str, int], PartitionMark]:
        """Per partition written by this run, its newest mark (from flushes with ``mark``)."""
        return self._flushes.marks

    @property
    def pid(self) -> int | None:
        """The (first) child's process id."""
        return self._children[0].pid

    @property
    def pids(self) -> list[int | None]:
        """Every child's process id, in order."""
        return [child.pid for child in self._children]

    def __enter__(self) -> SinkProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, chunks: Sequence[OutputChunk], epoch: Epoch) -> None:
        """Hand one epoch's output to the children (see :class:`engine.output.Sink`)."""
        self._collect(block=False)
        index = epoch.index
        coords: Path | None = None
        if any(len(c) for c in chunks):
            coords = self._dir.file(f"coords{index}")
            self._store(coords, Coordinates(epoch), index)
        shares: list[tuple[list[OutputChunk], list[Any] | None]]
        if self._owners is None:
            shares = [(list(chunks), None)]
        else:
            shares = list(split_chunks(chunks, self._targets, self._owners, len(self._children)))
        for child, (mine, partitions) in zip(self._children, shares, strict=True):
            path: Path | None = None
            if any(len(c) for c in mine):
                path = self._dir.file(f"out{index}-{child.number}")
                self._store(path, (mine, partitions), index)
            message = ("epoch", index, str(path) if path else None, str(coords) if coords else None)
            self._send(child, message)
            child.pending.append((index, epoch.seq_start, epoch.seq_end))
        if coords is not None:
            self._coords[index] = coords
            self._coords_readers[index] = len(self._children)
        since = time.monotonic()
        while any(len(child.pending) > self._max_pending for child in self._children):
            self._collect(block=True, since=since)
        epoch_done(epoch, self._metrics, self._stats, self._on_epoch)

    def flush(self, *, mark: bool = False) -> None:
        """Wait until every record handed on is delivered (raises what a child raised);
        with ``mark``, :attr:`marks` then covers it."""
        ordinal = self._ask_flush(mark, None)
        since = time.monotonic()
        while self._flushes.done < ordinal:
            self._collect(block=True, since=since)

    def flush_then(self, then: Callable[[], None]) -> None:
        """Have every record handed on so far delivered, and call ``then()`` once it is (by
        every child), without waiting: from a later :meth:`write` or :meth:`flush` (in the
        order asked). For a checkpoint: :attr:`marks` covers that output when ``then`` runs."""
        self._ask_flush(True, then)

    def close(self) -> None:
        """Stop the children: at once if records are pending or one failed (a failed run),
        else when they have nothing left to do. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._failed and not any(child.pending for child in self._children):
            for child in self._children:
                with contextlib.suppress(OSError):
                    child.to_child.send(("stop",))
            deadline = time.monotonic() + 10.0
            for child in self._children:
                child.process.join(max(0.0, deadline - time.monotonic()))
        for child in self._children:
            if child.process.is_alive():
                child.process.kill()
                child.process.join()
        self._close_ends()

    def _close_ends(self) -> None:
        for child in self._children:
            child.to_child.close()
            child.from_child.close()
        self._dir.remove()

    # ------------------------------------------------------------------ internals

    def _store(self, path: Path, obj: Any, index: int) -> None:
        try:
            store(path, obj)
        except (OSError, EngineError) as exc:
            raise SinkError(
                f"cannot hand epoch {index}'s output to the sink process through "
                f"{self._dir.path}: {exc}; give /dev/shm more room (shmSizeLimit in the Helm "
                "chart) or use smaller epochs (epoch_size)"
            ) from exc

    def _ask_flush(self, mark: bool, then: Callable[[], None] | None) -> int:
        """Ask every child to flush; returns the flush's ordinal (see :class:`FlushOrder`)."""
        for child in self._children:
            self._send(child, ("flush", mark))
        return self._flushes.ask(then)

    def _send(self, child: _Child, message: tuple[Any, ...]) -> None:
        try:
            child.to_child.send(message)
        except OSError:
            # The child is gone; it may have said why before it went.
            self._collect(block=False)
            raise self._died(child) from None

    def _collect(self, *, block: bool, since: float | None = None) -> None:
        """Take the children's reports: all that are waiting, or (``block``) at least one
        and then all that are waiting (heartbeats are no reports). ``since``: when the
        caller began to wait; a child is stuck when silent for the timeout since then."""
        taken = False
        checked = time.monotonic()
        since = checked if since is None else since
        while True:
            ready = wait(list(self._by_conn), _POLL_S if block and not taken else 0)
            if not ready and (not block or taken):
                return
            for conn in ready:
                child = self._by_conn[conn]  # type: ignore[index]
                try:
                    report = child.from_child.recv()
                except EOFError:
                    raise self._died(child) from None
                taken = self._report(child, report) or taken
            now = time.monotonic()
            if block and not taken and (not ready or now - checked >= _POLL_S):
                checked = now
                self._check(since, now)

    def _check(self, since: float, now: float) -> None:
        """Raise for a child that is gone or has been silent too long."""
        for child in self._children:
            if not child.process.is_alive():
                if child.from_child.poll(0):
                    continue  # its last words arrived as it exited: taken next
                raise self._died(child)
            limit = self._timeout_s if child.started else max(self._timeout_s, STARTUP_S)
            if now - max(child.heard, since) > limit:
                raise self._stuck(child, None)

    def _report(self, child: _Child, report: tuple[Any, ...]) -> bool:
        """Take one report of ``child``; whether it was more than a heartbeat."""
        child.heard = time.monotonic()
        child.started = True
        child.watched.sample()
        kind = report[0]
        if kind == "alive":
            busy = float(report[1])
            if self._busy_limit_s is not None and busy > self._busy_limit_s:
                raise self._stuck(child, busy)
            return False
        if kind == "written":
            self._written(child, *report[1:])
        elif kind == "flushed":
            self._broker_errors(report[1])
            if self._stats is not None:
                self._stats.add_time(f"{STAGE_PREFIX}write flush", report[3])
            self._flushes.answer(child.number, report[2])
        elif kind == "failed":
            child.pending.clear()
            self._failed = True
            exc, text, trace = report[1], report[2], report[3]
            if isinstance(exc, ConnectorError):
                raise exc
            logger.error("%s failed:\n%s", child.name, trace)
            raise SinkError(f"{child.name} failed: {text}")
        return True

    def _written(
        self,
        child: _Child,
        index: int,
        written: Mapping[str, int],
        skipped: Mapping[str, int],
        first_write_at: float | None,
        broker_errors: int,
        seconds: float,
        stages: Mapping[str, float],
    ) -> None:
        assert child.pending and child.pending[0][0] == index, (child.pending, index)
        child.pending.pop(0)
        if index in self._coords:
            self._coords_readers[index] -= 1
            if not self._coords_readers[index]:  # every child has written the epoch
                del self._coords_readers[index]
                self._coords.pop(index).unlink(missing_ok=True)
        for topic, n in written.items():
            self.written[topic] = self.written.get(topic, 0) + n
            if self._metrics is not None:
                self._metrics.records_written(topic, n)
        for topic, n in skipped.items():
            self.skipped[topic] = self.skipped.get(topic, 0) + n
        if first_write_at is not None and (
            self.first_write_at is None or first_write_at < self.first_write_at
        ):
            self.first_write_at = first_write_at
        if self._stats is not None:
            self._stats.add_time("write", seconds)
            for stage, spent in stages.items():
                self._stats.add_time(f"{STAGE_PREFIX}write {stage}", spent)
        self._broker_errors(broker_errors)

    def _broker_errors(self, count: int) -> None:
        if self._metrics is not None:
            for _ in range(count):
                self._metrics.broker_error("producer")

    def _stuck(self, child: _Child, busy: float | None) -> WatchdogError:
        self._failed = True
        name = child.name
        state = child.watched.stall()
        child.process.kill()
        child.process.join()
        if child.pending:
            index, first, end = child.pending[0]
            where = f" while writing epoch {index} (seq {first}..{end - 1})"
        else:
            where = " while flushing" if self._flushes.pending else ""
        if busy is None:
            what = f"made no progress for {self._timeout_s:.0f} s{where}: {state}"
        else:
            what = (
                f"has been inside one step for {busy:.0f} s{where} (the limit is "
                f"{self._busy_limit_s:.0f} s: broker_timeout plus stall_timeout)"
            )
        return WatchdogError(
            f"{name} {what}; it was stopped, and its output since the last flush may be partly "
            "written: run the job again (with a checkpoint directory it resumes and skips what "
            "is already there)",
            process="sink",
        )

    def _died(self, child: _Child) -> SinkError:
        self._failed = True
        child.process.join(1.0)
        code = child.process.exitcode
        how = f"exited with code {code}" if code is None else child.watched.death(code)
        where = ""
        if child.pending:
            index, first, end = child.pending[0]
            where = f" while writing epoch {index} (seq {first}..{end - 1})"
        return SinkError(
            f"{child.name} {how}{where}; its output since the last flush may be partly "
            "written: run the job again (with a checkpoint directory it resumes and skips what "
            "is already there)"
        )


# ---------------------------------------------------------------------- the child


def sink_main(
    settings: SinkSettings,
    inbox: Connection,
    outbox: Connection,
    parent_ends: tuple[Connection, ...],
    parent: int | None,
) -> None:
    """The child: write what arrives, report each epoch, until told to stop (or the parent
    is gone). ``parent_ends`` are the parent's ends of the pipes, closed here so that the
    child sees its inbox close when the parent dies; ``parent`` its pid when forked."""
    # Ctrl-C and SIGTERM reach the whole process group; the parent decides (a SIGTERM makes
    # it flush and checkpoint through this process) and stops this one when it is done.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    gate = settings.gate
    if gate is not None:
        # Continued after SIGSTOP: ask the lease before the next record is queued (the
        # handler runs between two records); it waits for a renewal or raises RefusedError.
        signal.signal(signal.SIGCONT, lambda _signum, _frame: gate())
    die_with_parent(parent)
    for end in parent_ends:
        end.close()
    mailbox = _Mailbox(outbox)
    mailbox.send(("alive", 0.0))  # started: from now on the parent's timeout holds
    beat = threading.Thread(
        target=mailbox.beat, args=(settings.heartbeat_s,), name="restream-heartbeat", daemon=True
    )
    beat.start()
    try:
        # Three header tuples, a list and two byte strings per record: see
        # connector.runtime.gcpolicy.
        with replay_collection():
            _serve(settings, inbox, mailbox)
    except Exception as exc:  # reported to the parent, which raises it there
        trace = None
        payload: BaseException | None = None
        if isinstance(exc, ConnectorError):
            try:  # sent as itself if it survives the trip
                pickle.loads(pickle.dumps(exc))
                payload = exc
            except Exception:
                trace = traceback.format_exc()
        else:
            trace = traceback.format_exc()
        with contextlib.suppress(OSError):
            mailbox.send(("failed", payload, f"{type(exc).__name__}: {exc}", trace))
    finally:
        mailbox.close()


class _Mailbox:
    """The child's end of the pipe to the parent, shared by the main thread (reports) and
    the heartbeat thread; the main thread marks the steps it takes (:meth:`step`)."""

    def __init__(self, outbox: Connection) -> None:
        self._outbox = outbox
        self._lock = threading.Lock()
        self._closed = threading.Event()
        #: time.monotonic() when the main thread began its current step; None while idle.
        self.busy_since: float | None = None

    def send(self, message: tuple[Any, ...]) -> None:
        """Send a report (from the main thread)."""
        with self._lock:
            self._outbox.send(message)

    def step(self, busy: bool) -> None:
        """The main thread begins (``busy``) or ends a step."""
        self.busy_since = time.monotonic() if busy else None

    def beat(self, interval: float) -> None:
        """The heartbeat thread: ``("alive", seconds in the current step)`` every
        ``interval`` until closed. A stopped process sends none, nor a frozen one."""
        while not self._closed.wait(interval):
            since = self.busy_since
            busy = 0.0 if since is None else time.monotonic() - since
            try:
                with self._lock:
                    if self._closed.is_set():
                        return
                    self._outbox.send(("alive", busy))
            except OSError:
                return

    def close(self) -> None:
        """End the heartbeats and close the pipe."""
        self._closed.set()
        # A heartbeat blocked on a full pipe (a parent that no longer reads) must not keep
        # the process from ending.
        locked = self._lock.acquire(timeout=1.0)
        try:
            self._outbox.close()
        finally:
            if locked:
                self._lock.release()


def _serve(settings: SinkSettings, inbox: Connection, outbox: _Mailbox) -> None:
    writer = PartitionWriter(settings)
    try:
        while True:
            try:
                message = inbox.recv()
            except EOFError:
                return  # the parent is gone
            if message[0] == "stop":
                return
            outbox.step(busy=True)
            if message[0] == "flush":
                flushed = writer.flush(message[1])
                outbox.send(("flushed", flushed.broker_errors, flushed.marks, flushed.seconds))
                outbox.step(busy=False)
                continue
            _, index, path, coords_path = message
            started, started_cpu = time.perf_counter(), time.thread_time()
            chunks, partitions, coords = [], None, None
            if path is not None:
                chunks, partitions = load(Path(path))
                Path(path).unlink()  # the mapping stays readable
            if coords_path is not None:
                coords = load(Path(coords_path))  # the parent removes it: siblings read it too
            loaded = time.perf_counter() - started
            written = writer.write(
                chunks,
                coords,
                partitions,
                began=started,
                began_cpu=started_cpu,
                stages={"load": loaded},
            )
            # Their /dev/shm pages go with the mappings, not with the next epoch.
            del chunks, partitions, coords
            failpoints.hit("sink.epoch")
            outbox.send(
                (
                    "written",
                    index,
                    written.written,
                    written.skipped,
                    written.first_write_at,
                    written.broker_errors,
                    written.seconds,
                    written.stages,
                )
            )
            outbox.step(busy=False)
    except RefusedError:
        writer.purge()  # queued records of a run that lost its lease must not land
        raise
    finally:
        writer.close()
