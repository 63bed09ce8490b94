"""The output sink in a process of its own, so that writing overlaps reading.

In one process the coordinator of a replay reads and decodes the input (epoch e+1) and
writes the output (epoch e-1) one after the other, under one GIL: the Kafka client costs a
few µs a record either way, and writing was two thirds of a 10M-event run. :class:`SinkProcess`
is the engine's :class:`~engine.output.Sink` for ``restream run``: it hands each epoch's
output chunks, and the coordinates of the epoch's events, to a child process that runs a
:class:`~connector.output.sink.KafkaSink` with its own producer, and returns at once.

Order and bounds. The child writes epochs in the order it receives them, so every output
partition still receives its records in serial order. At most ``max_pending`` epochs are
handed on and not yet written; :meth:`SinkProcess.write` waits beyond that (back-pressure,
bounded memory). :meth:`SinkProcess.flush` returns once everything handed on is written
and delivered; :meth:`SinkProcess.flush_then` asks for the same without waiting and calls
back when it is done, which is how a checkpoint's snapshot waits for the output before it
(a restart skips that output, so it must be delivered) while the run goes on.

Failure. An exception in the child comes back and is raised by the next call of the
parent (the same type for the connector's errors, else :class:`~connector.errors.SinkError`
with its text, the child's traceback logged); a child that dies raises SinkError with its
exit code (a SIGKILL is reported as a possible out-of-memory kill, with the child's peak RSS
as last sampled). The watchdog: besides its reports, the child sends a heartbeat every
``heartbeat_s`` from a thread of its own, saying how long its main thread has been inside
one step (writing an epoch, flushing); a child that sends nothing for ``timeout_s`` while
the parent waits (stopped, frozen), or whose step lasts longer than ``busy_limit_s`` (its
producer gives up on a lost broker after ``broker_timeout``, so a step never legitimately
lasts much longer), is killed and raises :class:`~connector.errors.WatchdogError` naming its
pid, state, and the epoch and ``seq`` range it was writing. The child dies with the thread
that started it (Linux ``PR_SET_PDEATHSIG``) and when its pipe closes: it keeps no copy of
the parent's ends.

Moving the data. The chunks and coordinates go as a file in a run directory on ``/dev/shm``
(:mod:`engine.executors.arena`: pickle 5, arrays out of band), so that the parent's hand-off
is a memory copy and the pipe carries only small messages: a large pickle through the pipe
would make the parent wait on the child's reads, which take the GIL chunk by chunk while the
child's main thread produces. The directory goes at :meth:`SinkProcess.close`; one left by
a killed parent is swept by the next run.

Pipe messages, parent to child: ``("epoch", index, path)``, ``("flush", mark)``,
``("stop",)``. Child to parent: ``("written", index, written, skipped, first_write_at,
broker_errors, seconds, stages)`` per epoch, ``("flushed", broker_errors, marks, seconds)``,
``("failed",
exception or None, text, traceback or None)``, and ``("alive", busy_seconds)`` heartbeats. A
flush with ``mark`` (a checkpoint's) also reads back the last record of every partition
written since the last such flush and reports its
:class:`~connector.output.verify.PartitionMark` (``marks``, else an empty dict); the parent
keeps the newest per partition in :attr:`SinkProcess.marks`. The child's
seconds of encoding and producing are added to the run's times as ``write`` (the
executor's ``sink`` is the coordinator's hand-off, waits for a busy child included), and
broken down by stage (``stage write load``, ``... keys``, ``skip``, ``encode``, ``headers``,
``produce``, ``flush``: see :data:`~connector.observability.metrics.STAGE_PREFIX`).
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
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from connector.config import OutputHeaders
from connector.errors import ConnectorError, RefusedError, SinkError, WatchdogError
from connector.kafka.producer import BulkProducer
from connector.observability.metrics import STAGE_PREFIX, JobMetrics
from connector.output.sink import Coordinates, KafkaSink, OutputTarget, Resume, epoch_done
from connector.output.verify import OutputMarker, PartitionMark
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


@dataclass(frozen=True, slots=True)
class SinkSettings:
    """What the child needs to build its :class:`KafkaSink` (pickled when not forked)."""

    bootstrap: str
    producer_overrides: Mapping[str, Any]
    targets: Mapping[str, OutputTarget]
    job: str
    resume: Mapping[tuple[str, int], Resume]
    #: Seconds between the child's heartbeats (at most a quarter of the parent's timeout).
    heartbeat_s: float = 1.0
    #: The run's lease gate (:class:`connector.job.lease.LeaseGate`): checked before records
    #: are queued, and on SIGCONT, so a run that lost its lease writes nothing more.
    gate: Callable[[], None] | None = None
    #: Settings of the client that reads marks back (default: the bootstrap servers only).
    client: Mapping[str, Any] | None = None
    #: The job's ``output_headers`` mode.
    headers: OutputHeaders = "full"


class SinkProcess:
    """A :class:`~engine.output.Sink` that writes through a child process; see the module
    docstring. Use it as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        settings: SinkSettings,
        *,
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
        # Several heartbeats within the timeout, so that one late beat is no stall.
        settings = replace(settings, heartbeat_s=min(settings.heartbeat_s, timeout_s / 4))
        self._timeout_s = timeout_s
        self._busy_limit_s = busy_limit_s
        self._metrics = metrics
        self._stats = stats
        self._on_epoch = on_epoch
        self._max_pending = max_pending
        # Epochs handed on, not yet reported written: (index, seq_start, seq_end).
        self._pending: list[tuple[int, int, int]] = []
        # Per flush asked and not yet answered, in order: what to call when it is (None for
        # the one flush() waits for).
        self._after_flush: deque[Callable[[], None] | None] = deque()
        #: Records written (queued to the child's producer) and skipped, per topic.
        self.written: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        #: time.monotonic() (system-wide) when the child handed its first record on.
        self.first_write_at: float | None = None
        #: Per partition written by this run, its newest mark (from flushes with ``mark``).
        self.marks: dict[tuple[str, int], PartitionMark] = {}
        self._dir = RunDir.create()
        context = process_context()
        self._to_child_r, self._to_child = context.Pipe(duplex=False)
        self._from_child, self._from_child_w = context.Pipe(duplex=False)
        forked = context.get_start_method() == "fork"
        self._process = context.Process(  # type: ignore[attr-defined]
            target=sink_main,
            args=(
                settings,
                self._to_child_r,
                self._from_child_w,
                (self._to_child, self._from_child),
                os.getpid() if forked else None,
            ),
            name="restream-sink",
            daemon=True,
        )
        try:
            self._process.start()
        except BaseException:
            self._close_ends()
            raise
        finally:
            self._to_child_r.close()
            self._from_child_w.close()
        self._closed = False
        self._started = False  # heard from the child yet
        self._watched = Watched(self._process.pid)
        logger.debug("sink process %s started (%s)", self._process.pid, context.get_start_method())

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        return self._process.pid  # type: ignore[no-any-return]

    def __enter__(self) -> SinkProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, chunks: Sequence[OutputChunk], epoch: Epoch) -> None:
        """Hand one epoch's output to the child (see :class:`engine.output.Sink`)."""
        self._collect(block=False)
        coords = Coordinates(epoch) if any(len(c) for c in chunks) else None
        path = self._dir.file(f"out{epoch.index}")
        try:
            store(path, (list(chunks), coords))
        except (OSError, EngineError) as exc:
            raise SinkError(
                f"cannot hand epoch {epoch.index}'s output to the sink process through "
                f"{self._dir.path}: {exc}; give /dev/shm more room (shmSizeLimit in the Helm "
                "chart) or use smaller epochs (epoch_size)"
            ) from exc
        self._send(("epoch", epoch.index, str(path)), epoch.index)
        self._pending.append((epoch.index, epoch.seq_start, epoch.seq_end))
        while len(self._pending) > self._max_pending:
            self._collect(block=True)
        epoch_done(epoch, self._metrics, self._stats, self._on_epoch)

    def flush(self, *, mark: bool = False) -> None:
        """Wait until every record handed on is delivered (raises what the child raised);
        with ``mark``, :attr:`marks` then covers it."""
        self._send(("flush", mark), None)
        self._after_flush.append(None)
        while True:
            if self._collect(block=True) == "flushed":
                return

    def flush_then(self, then: Callable[[], None]) -> None:
        """Have every record handed on so far delivered, and call ``then()`` once it is,
        without waiting: from a later :meth:`write` or :meth:`flush` (in the order asked).
        For a checkpoint: :attr:`marks` covers that output when ``then`` runs."""
        self._send(("flush", True), None)
        self._after_flush.append(then)

    def close(self) -> None:
        """Stop the child: at once if records are pending (a failed run), else when it has
        nothing left to do. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._pending:
            with contextlib.suppress(OSError):
                self._to_child.send(("stop",))
            self._process.join(10.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._close_ends()

    def _close_ends(self) -> None:
        self._to_child.close()
        self._from_child.close()
        self._dir.remove()

    # ------------------------------------------------------------------ internals

    def _send(self, message: tuple[Any, ...], epoch: int | None) -> None:
        try:
            self._to_child.send(message)
        except OSError:
            # The child is gone; it may have said why before it went.
            self._collect(block=True)
            raise self._died(epoch) from None

    def _collect(self, *, block: bool) -> str | None:
        """Take the child's reports: all that are waiting, or (``block``) at least one.
        Returns the kind of the last report taken (heartbeats are no reports)."""
        kind: str | None = None
        heard = time.monotonic()  # the start of the wait, or the child's last message
        while True:
            if not self._from_child.poll(_POLL_S if block and kind is None else 0):
                if not block or kind is not None:
                    return kind
                if not self._process.is_alive():
                    if self._from_child.poll(0):
                        continue  # its last words arrived as it exited
                    raise self._died(self._pending[0][0] if self._pending else None)
                limit = self._timeout_s if self._started else max(self._timeout_s, STARTUP_S)
                if time.monotonic() - heard > limit:
                    raise self._stuck(None)
                continue
            try:
                report = self._from_child.recv()
            except EOFError:
                self._process.join(1.0)
                raise self._died(self._pending[0][0] if self._pending else None) from None
            heard = time.monotonic()
            self._started = True
            self._watched.sample()
            if report[0] == "alive":
                busy = float(report[1])
                if self._busy_limit_s is not None and busy > self._busy_limit_s:
                    raise self._stuck(busy)
                continue
            kind = str(report[0])
            if kind == "written":
                self._written(*report[1:])
            elif kind == "flushed":
                self._broker_errors(report[1])
                self.marks.update(report[2])
                if self._stats is not None:
                    self._stats.add_time(f"{STAGE_PREFIX}write flush", report[3])
                then = self._after_flush.popleft()
                if then is None:
                    return kind
                then()
                kind = "flushed-then"
            elif kind == "failed":
                self._pending.clear()
                exc, text, trace = report[1], report[2], report[3]
                if isinstance(exc, ConnectorError):
                    raise exc
                logger.error("the sink process failed:\n%s", trace)
                raise SinkError(f"the sink process failed: {text}")

    def _written(
        self,
        index: int,
        written: Mapping[str, int],
        skipped: Mapping[str, int],
        first_write_at: float | None,
        broker_errors: int,
        seconds: float,
        stages: Mapping[str, float],
    ) -> None:
        assert self._pending and self._pending[0][0] == index, (self._pending, index)
        self._pending.pop(0)
        for topic, n in written.items():
            self.written[topic] = self.written.get(topic, 0) + n
            if self._metrics is not None:
                self._metrics.records_written(topic, n)
        for topic, n in skipped.items():
            self.skipped[topic] = self.skipped.get(topic, 0) + n
        if self.first_write_at is None:
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

    def _stuck(self, busy: float | None) -> WatchdogError:
        pid = self._process.pid
        state = self._watched.stall()
        self._process.kill()
        self._process.join()
        if self._pending:
            index, first, end = self._pending[0]
            where = f" while writing epoch {index} (seq {first}..{end - 1})"
        else:
            where = " while flushing" if self._after_flush else ""
        if busy is None:
            what = f"made no progress for {self._timeout_s:.0f} s{where}: {state}"
        else:
            what = (
                f"has been inside one step for {busy:.0f} s{where} (the limit is "
                f"{self._busy_limit_s:.0f} s: broker_timeout plus stall_timeout)"
            )
        return WatchdogError(
            f"the sink process (pid {pid}) {what}; it was stopped, and its output since "
            "the last flush may be partly written: run the job again (with a checkpoint "
            "directory it resumes and skips what is already there)",
            process="sink",
        )

    def _died(self, epoch: int | None) -> SinkError:
        self._process.join(1.0)
        code = self._process.exitcode
        how = f"exited with code {code}" if code is None else self._watched.death(code)
        where = ""
        for index, first, end in self._pending:
            if index == epoch:
                where = f" while writing epoch {index} (seq {first}..{end - 1})"
        return SinkError(
            f"the sink process (pid {self._process.pid}) {how}{where}; its output "
            "since the last flush may be partly written: run the job again (with a checkpoint "
            "directory it resumes and skips what is already there)"
        )


# ---------------------------------------------------------------------- the child


class _BrokerErrors:
    """The child producer's error callback: log and count (the parent counts them too)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, error: Any) -> None:
        self.count += 1
        logger.warning("producer: %s (retrying)", error)


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
    errors = _BrokerErrors()
    producer: BulkProducer | None = None

    def make_producer() -> BulkProducer:
        nonlocal producer
        if producer is None:
            producer = BulkProducer(
                settings.bootstrap,
                {**settings.producer_overrides, "error_cb": errors},
                gate=settings.gate,
            )
        return producer

    try:
        _serve_with(settings, inbox, outbox, errors, make_producer)
    except RefusedError:
        if producer is not None:
            producer.purge()  # queued records of a run that lost its lease must not land
        raise


def _serve_with(
    settings: SinkSettings,
    inbox: Connection,
    outbox: _Mailbox,
    errors: _BrokerErrors,
    make_producer: Callable[[], BulkProducer],
) -> None:
    sink = KafkaSink(
        make_producer,
        settings.targets,
        job=settings.job,
        resume=settings.resume,
        headers=settings.headers,
    )
    marker = OutputMarker(
        settings.client or {"bootstrap.servers": settings.bootstrap},
        settings.job,
        headerless=settings.headers == "none",
    )
    marked: dict[tuple[str, int], int] = {}  # the seq each partition was last marked at
    reported = 0  # broker errors already counted in a report
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
                began = time.perf_counter()
                if sink.written:  # else no producer was made
                    make_producer().flush()
                flushed = time.perf_counter() - began
                marks: dict[tuple[str, int], PartitionMark] = {}
                if message[1]:
                    # Only partitions written since their last mark: the others' marks stand.
                    changed = {k: s for k, s in sink.last_seq.items() if marked.get(k) != s}
                    marks = marker.mark(changed, changed)
                    marked.update(changed)
                outbox.send(("flushed", errors.count - reported, marks, flushed))
                outbox.step(busy=False)
                reported = errors.count
                continue
            _, index, path = message
            started = time.perf_counter()
            chunks, coords = load(Path(path))
            Path(path).unlink()  # the mapping stays readable
            loaded = time.perf_counter() - started
            before_w, before_s = dict(sink.written), dict(sink.skipped)
            before_t = dict(sink.stage_seconds)
            sink.produce(chunks, coords)
            del chunks, coords  # their /dev/shm pages go with the mapping, not with the next epoch
            failpoints.hit("sink.epoch")
            outbox.send(
                (
                    "written",
                    index,
                    _delta(sink.written, before_w),
                    _delta(sink.skipped, before_s),
                    sink.first_write_at,
                    errors.count - reported,
                    time.perf_counter() - started,
                    {"load": loaded, **_seconds_delta(sink.stage_seconds, before_t)},
                )
            )
            outbox.step(busy=False)
            reported = errors.count
    finally:
        marker.close()


def _delta(now: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {k: n - before.get(k, 0) for k, n in now.items() if n != before.get(k, 0)}


def _seconds_delta(now: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    return {k: t - before.get(k, 0.0) for k, t in now.items() if t != before.get(k, 0.0)}
