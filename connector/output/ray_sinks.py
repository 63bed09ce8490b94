"""Sink actors: the output written on the nodes of a Ray cluster (setting ``ray_sinks``).

With the ray executor and the driver's sink processes (:mod:`connector.output.sink_process`),
the driver fetches and merges every output record and its node writes them all, which caps a
cluster at what one node writes. :class:`RaySinks` is the :class:`~engine.output.ShareSink`
that spreads the writing instead: K sink actors (:class:`SinkActor`), placed round robin over
the cluster's nodes that have CPUs (in node id order), each owning a fixed share of the output
partitions for the whole run (:func:`~connector.output.shards.assign_partitions`, the same
split as ``sink_processes``) and writing it with a
:class:`~connector.output.writer.PartitionWriter` of its own.

Per epoch each of the ray executor's workers cuts its output into one part per actor with
the sink's :attr:`RaySinks.router` (:class:`~connector.output.shards.PartitionRouter`: the
output partition the Java client picks for the record's key, then its owner), and the driver
hands every actor the references of its parts, which it never fetches, and the epoch's
coordinates (each event's time and where it was read, put into the object store once). An
actor fetches its parts from every worker, merges them by ``seq``
(:func:`~engine.output.merge_shares`) and writes them. What a sink process promises holds per
actor:

* **Order.** An actor writes epochs in the order the driver sent them (every call carries a
  ticket: the actor is threaded, so that the driver can extend its lease window while it
  writes, and Ray does not promise a threaded actor's order), and each output partition is
  written by one actor, so it receives its records in serial order.
* **Bounds.** At most ``max_pending`` epochs are handed to an actor and not yet written;
  :meth:`RaySinks.write_shares` waits beyond that.
* **Flushes.** :meth:`RaySinks.flush` and :meth:`RaySinks.flush_then` as the sink process's:
  a flush's marks count once every actor answered it; a checkpoint's snapshot waits for them.
* **Resume.** Each actor skips what an earlier attempt wrote to its own partitions.
* **Lease.** The lease gate (:class:`~connector.job.lease.LeaseGate`) is shared memory on the
  driver's host. The driver asks it before each call and passes how long it stays open
  (:meth:`~connector.job.lease.LeaseGate.open_for`), and a thread of the driver passes it
  again every second; the actor lets records through until then, by its own clock from when
  the word arrived (before it fetches the epoch's records), less :data:`LEASE_MARGIN_S` for
  the word's transit. If the window closes while the actor writes, the actor waits for a word
  as long as the gate itself would wait for a renewal, then fails. So an actor frozen and
  thawed after a takeover queues nothing more. A run that failed confirms its actors gone
  before it releases the lease, or, when Ray cannot confirm it within seconds (a node cut
  off), waits until the last window it granted has ended and what was queued in it has timed
  out.
* **Failure.** An actor that raises answers with the error, which the driver raises (a
  :class:`~connector.errors.ConnectorError` as itself, else :class:`SinkError` with its text,
  the actor's traceback logged), and answers every later call with it, writing nothing more
  (a later epoch after a gap would be skipped by a resume); an actor that dies (its node
  lost, out of memory) fails the run with :class:`SinkError`; one whose oldest call has not
  finished for ``timeout_s`` while the driver waits is killed and raises
  :class:`~connector.errors.WatchdogError`. Messages name it: ``the sink actor 2 of 3 (node
  10.0.0.5, pid 812, output partitions scores/1,4)``.

What it costs: the workers hash every record's key once more than a sink process would
(~0.1 µs a record, spread over the workers) and make one object per actor per epoch; each
actor fetches, merges, encodes and produces only its own records, so the writing scales with
the actors. The driver's part is a few Ray calls an epoch, whatever the output.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from connector.errors import BrokerError, ConnectorError, RefusedError, SinkError, WatchdogError
from connector.observability.metrics import STAGE_PREFIX, JobMetrics
from connector.output.shards import (
    Owners,
    PartitionRouter,
    assign_partitions,
    describe_partitions,
    owned_partitions,
)
from connector.output.sink import Coordinates, OutputTarget, epoch_done
from connector.output.verify import PartitionMark
from connector.output.writer import Flushed, FlushOrder, PartitionWriter, SinkSettings, Written
from connector.runtime.gcpolicy import REPLAY_THRESHOLDS
from engine.executors.base import RunStats
from engine.executors.ray_actors import Turns
from engine.log import Epoch
from engine.output import OutputChunk, merge_shares, split_output

__all__ = [
    "LEASE_MARGIN_S",
    "LeaseWindow",
    "RaySinks",
    "SinkActor",
    "SinkFailed",
    "SinkPlace",
    "ray_sink_count",
    "sink_nodes",
]

logger = logging.getLogger(__name__)

#: Seconds taken off the lease window a call brings, for the call's transit.
LEASE_MARGIN_S = 2.0
#: Seconds between the driver's checks while it waits for the actors (and between its
#: extensions of their lease windows, at most every :data:`_EXTEND_S`).
_POLL_S = 0.2
_EXTEND_S = 1.0
#: The sink actors' concurrency group for the driver's lease extensions.
_LEASE_GROUP = "lease"
#: Seconds a failed run waits for Ray to confirm its sink actors gone.
_KILL_WAIT_S = 10.0


@dataclass(frozen=True, slots=True)
class SinkPlace:
    """Where a sink actor runs: its node's IP address and id, and its process id."""

    ip: str
    node: str
    pid: int


@dataclass(frozen=True, slots=True)
class SinkFailed:
    """A sink actor's call failed: the exception when it is a connector error that pickles,
    its text, and the traceback when the exception itself does not come back."""

    error: BaseException | None
    text: str
    trace: str | None


def sink_nodes(nodes: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ids of the nodes sink actors go to, in order, from ``ray.nodes()``: the alive
    ones with CPUs (a head without CPUs runs only the driver), else every alive one."""
    alive = [n for n in nodes if n.get("Alive")]
    with_cpus = [n for n in alive if float(n.get("Resources", {}).get("CPU", 0)) > 0]
    return sorted(str(n["NodeID"]) for n in with_cpus or alive)


def ray_sink_count(requested: int, partitions: int, nodes: int) -> int:
    """The run's sink actors for the ``ray_sinks`` setting (``requested``; 0: one per node
    with CPUs when there are several, none on one node, where the driver's sink processes
    write), at most one per output partition; logged. 0: no sink actors."""
    if not requested:
        count = min(nodes, partitions) if nodes > 1 else 0
        if count:
            logger.info(
                "%s sink actors (ray_sinks 0: one per node with CPUs, at most one per output "
                "partition; %s nodes, %s output partitions)",
                count,
                nodes,
                partitions,
            )
        return count
    count = min(requested, max(1, partitions))
    if count < requested:
        logger.warning(
            "ray_sinks %s: the output has only %s partitions, so %s sink actors write it",
            requested,
            partitions,
            count,
        )
    return count


class LeaseWindow:
    """A sink actor's gate: open until the time the driver's last word allows (see the module
    docstring)."""

    def __init__(self, job: str, wait_s: float) -> None:
        self._job = job
        self._wait_s = wait_s
        self._until = float("-inf")
        self._changed = threading.Condition()

    def extend(self, seconds: float) -> None:
        """The driver's gate is open for ``seconds`` more (as of the call's sending)."""
        with self._changed:
            self._until = max(self._until, time.monotonic() + seconds - LEASE_MARGIN_S)
            self._changed.notify_all()

    def __call__(self) -> None:
        with self._changed:
            if time.monotonic() < self._until:
                return
            if not self._changed.wait_for(lambda: time.monotonic() < self._until, self._wait_s):
                raise BrokerError(
                    f"the driver did not confirm the lease of job {self._job} for "
                    f"{self._wait_s:.0f} s; this sink actor stopped writing; run the job again"
                )


class SinkActor:
    """One sink actor (``ray.remote(SinkActor)``): a :class:`PartitionWriter` for its share of
    the output partitions; see the module docstring. Its methods never raise on purpose:
    failures come back as :class:`SinkFailed`."""

    def __init__(
        self,
        settings: SinkSettings,
        number: int,
        of: int,
        owners: Owners | None,
        lease_wait_s: float | None,
    ) -> None:
        import ray

        # The process writes for the whole run: the replay's collector thresholds, as in a
        # sink process (headers and byte strings per record). Measured on 10M spam events:
        # the actor's CPU per record went from 1.94 to 1.70 µs (a sink process: 1.06).
        gc.set_threshold(*REPLAY_THRESHOLDS)
        self._window = None if lease_wait_s is None else LeaseWindow(settings.job, lease_wait_s)
        if owners is not None:
            mine = set(owned_partitions(owners, number))
            resume = {k: r for k, r in settings.resume.items() if k in mine}
            settings = replace(settings, resume=resume)
        self._writer = PartitionWriter(replace(settings, gate=self._window))
        self._turns = Turns()
        #: The first failure, answered to every call after it.
        self._broken: SinkFailed | None = None
        ip: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        self.place = SinkPlace(ip, ray.get_runtime_context().get_node_id(), os.getpid())

    def where(self) -> SinkPlace:
        """Where it runs."""
        return self.place

    def extend(self, seconds: float) -> None:
        """The driver's lease gate is open for ``seconds`` more."""
        if self._window is not None:
            self._window.extend(seconds)

    def write(self, ticket: int, lease_s: float | None, refs: list[Any]) -> Written | SinkFailed:
        """Write this actor's records of one epoch: ``refs`` are the references of the
        epoch's coordinates and of every worker's part of them, fetched here once the lease
        window is extended (as of the call's arrival: fetching takes time)."""
        if lease_s is not None:
            self.extend(lease_s)
        with self._turns.of(ticket):
            if self._broken is not None:
                return self._broken
            began, began_cpu = time.perf_counter(), time.thread_time()
            try:
                import ray

                coords, *shares = ray.get(refs)
                chunks = merge_shares(shares)
                merged = time.perf_counter() - began
                return self._writer.write(
                    chunks, coords, began=began, began_cpu=began_cpu, stages={"load": merged}
                )
            except BaseException as exc:
                return self._failed(exc)

    def flush(self, ticket: int, mark: bool, lease_s: float | None) -> Flushed | SinkFailed:
        """Wait until everything queued is delivered (with ``mark``: and read the marks)."""
        if lease_s is not None:
            self.extend(lease_s)
        with self._turns.of(ticket):
            if self._broken is not None:
                return self._broken
            try:
                return self._writer.flush(mark)
            except BaseException as exc:
                return self._failed(exc)

    def stop(self) -> None:
        """Close the writer's clients (everything was flushed)."""
        self._writer.close()

    def _failed(self, exc: BaseException) -> SinkFailed:
        """The answer to a failed call, and to every call after it: the epochs queued behind
        it must not be written, or a partition would hold a later epoch after a gap that a
        resume (which skips up to a partition's last record) never fills."""
        if isinstance(exc, RefusedError):
            self._writer.purge()  # queued records of a run that lost its lease must not land
        text = f"{type(exc).__name__}: {exc}"
        failed = SinkFailed(None, text, traceback.format_exc())
        if isinstance(exc, ConnectorError):
            try:  # sent as itself if it survives the trip
                pickle.loads(pickle.dumps(exc))
                failed = SinkFailed(exc, text, None)
            except Exception:
                pass
        self._broken = failed
        return failed


@dataclass(slots=True)
class _Call:
    """A call handed to an actor and not yet answered."""

    kind: Literal["epoch", "flush"]
    ref: Any
    #: For an epoch: (index, first seq, end seq).
    span: tuple[int, int, int] | None
    sent: float

    @property
    def doing(self) -> str:
        """`` while writing epoch 3 (seq 300..399)``, or `` while flushing``."""
        if self.span is None:
            return " while flushing"
        index, first, end = self.span
        return f" while writing epoch {index} (seq {first}..{end - 1})"


class _Actor:
    """One sink actor as the driver sees it."""

    def __init__(self, number: int, of: int, partitions: Sequence[tuple[str, int]], handle: Any):
        self.number = number
        self.of = of
        self.partitions = tuple(partitions)
        self.handle = handle
        self.place: SinkPlace | None = None
        self.calls: deque[_Call] = deque()
        #: time.monotonic() of its last answer.
        self.heard = 0.0

    @property
    def epochs(self) -> int:
        """Epochs handed on and not yet written."""
        return sum(1 for c in self.calls if c.kind == "epoch")

    @property
    def name(self) -> str:
        """How messages name it (see the module docstring)."""
        where = "" if self.place is None else f"node {self.place.ip}, pid {self.place.pid}"
        if self.of == 1:
            return f"the sink actor ({where})"
        return (
            f"the sink actor {self.number + 1} of {self.of} ({where}{', ' if where else ''}"
            f"output partitions {describe_partitions(self.partitions)})"
        )


class RaySinks:
    """A :class:`~engine.output.ShareSink` writing through ``actors`` sink actors on the Ray
    cluster this process is connected to; see the module docstring. Use it as a context
    manager, or call :meth:`close`."""

    def __init__(
        self,
        settings: SinkSettings,
        *,
        actors: int,
        metrics: JobMetrics | None = None,
        stats: RunStats | None = None,
        on_epoch: Callable[[Epoch], None] | None = None,
        max_pending: int = 1,
        timeout_s: float = 300.0,
        start_timeout_s: float = 120.0,
        lease_wait_s: float = 60.0,
    ) -> None:
        from engine.executors.ray_executor import import_ray

        counts = {t.topic: t.partitions for t in settings.targets.values()}
        if actors < 1 or actors > max(1, sum(counts.values())):
            raise ValueError(
                f"actors must be between 1 and the {sum(counts.values())} output partitions, "
                f"not {actors}"
            )
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, not {max_pending}")
        self._targets: Mapping[str, OutputTarget] = settings.targets
        self._gate = settings.gate
        self._metrics = metrics
        self._stats = stats
        self._on_epoch = on_epoch
        self._max_pending = max_pending
        self._timeout_s = timeout_s
        self._ticket = 0
        self._flushes = FlushOrder(actors)
        #: time.monotonic() until which the actors may have been told the lease is open.
        self._granted_until = float("-inf")
        self._granted_lock = threading.Lock()
        self._stopping = threading.Event()
        self._delivery_s = settings.write_timeout_s
        self._failed = False
        self._closed = False
        #: Records written (queued to the actors' producers) and skipped, per topic.
        self.written: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        #: time.monotonic() (here) about when the run's first record was handed on.
        self.first_write_at: float | None = None
        ray = self._ray = import_ray()
        if not ray.is_initialized():
            raise SinkError("sink actors need a connection to a Ray cluster: ray.init() first")
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        owners = assign_partitions(counts, actors) if actors > 1 else None
        #: Which actor each record goes to (the workers cut their output with it).
        self.router = None if owners is None else PartitionRouter.of(self._targets, owners, actors)
        nodes = sink_nodes(ray.nodes())
        # Concurrency groups are the class's, not an option of one actor.
        actor_class = ray.remote(concurrency_groups={_LEASE_GROUP: 1})(SinkActor)
        shipped = ray.put(replace(settings, gate=None))
        self._actors: list[_Actor] = []
        try:
            for number in range(actors):
                handle = actor_class.options(
                    num_cpus=0,
                    max_restarts=0,
                    max_task_retries=0,
                    # Epochs and flushes waiting for their turn (at most about
                    # 2 x max_pending + 3: epochs, a checkpoint's flush behind each, the last
                    # flush); the lease extensions on a thread of their own, never starved.
                    max_concurrency=2 * max_pending + 6,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(
                        nodes[number % len(nodes)], soft=False
                    ),
                ).remote(
                    shipped,
                    number,
                    actors,
                    owners,
                    None if self._gate is None else lease_wait_s,
                )
                partitions = owned_partitions(owners, number) if owners is not None else []
                self._actors.append(_Actor(number, actors, partitions, handle))
            places = self._answers(
                [a.handle.where.remote() for a in self._actors], start_timeout_s, "starting"
            )
        except BaseException:
            self._kill()
            raise
        for actor, place in zip(self._actors, places, strict=True):
            actor.place = place
        self._extender: threading.Thread | None = None
        if self._gate is not None:
            self._extender = threading.Thread(
                target=self._extend_all, name="restream-sink-lease", daemon=True
            )
            self._extender.start()
        logger.info(
            "%d sink actor%s on %d node%s (%s)",
            actors,
            "" if actors == 1 else "s",
            len({p.node for p in places}),
            "" if len({p.node for p in places}) == 1 else "s",
            "; ".join(
                f"{a.place.ip}: {describe_partitions(a.partitions) if a.partitions else 'all'}"
                for a in self._actors
                if a.place is not None
            ),
        )

    def __enter__(self) -> RaySinks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def marks(self) -> Mapping[tuple[str, int], PartitionMark]:
        """Per partition written by this run, its newest mark (from flushes with ``mark``)."""
        return self._flushes.marks

    @property
    def places(self) -> list[SinkPlace | None]:
        """Where each actor runs, in order."""
        return [a.place for a in self._actors]

    # -- the Sink ------------------------------------------------------------------------------

    def write(self, chunks: Sequence[OutputChunk], epoch: Epoch) -> None:
        """Hand one merged epoch on (see :class:`engine.output.Sink`), cut here as a worker
        would cut its share."""
        parts = [list(chunks)] if self.router is None else split_output(chunks, self.router)
        self.write_shares([[self._ray.put(p) for p in parts]], epoch, sum(len(c) for c in chunks))

    def write_shares(self, shares: Sequence[Sequence[object]], epoch: Epoch, records: int) -> None:
        """Hand every actor its parts of the workers' ``shares`` of one epoch (see
        :class:`engine.output.ShareSink`)."""
        self._collect(block=False)
        coords = self._ray.put(Coordinates(epoch) if records else None)
        lease_s = self._lease_s()
        span = (epoch.index, epoch.seq_start, epoch.seq_end)
        ticket = self._next_ticket()
        for k, actor in enumerate(self._actors):
            mine = [parts[k if self.router is not None else 0] for parts in shares]
            # Nested, so that the actor fetches them after it has taken the lease's word.
            ref = actor.handle.write.remote(ticket, lease_s, [coords, *mine])
            actor.calls.append(_Call("epoch", ref, span, time.monotonic()))
        since = time.monotonic()
        while any(actor.epochs > self._max_pending for actor in self._actors):
            self._collect(block=True, since=since)
        epoch_done(epoch, self._metrics, self._stats, self._on_epoch)

    def flush(self, *, mark: bool = False) -> None:
        """Wait until every record handed on is delivered (raises what an actor raised);
        with ``mark``, :attr:`marks` then covers it."""
        ordinal = self._ask_flush(mark, None)
        since = time.monotonic()
        while self._flushes.done < ordinal:
            self._collect(block=True, since=since)

    def flush_then(self, then: Callable[[], None]) -> None:
        """Have every record handed on so far delivered and marked, and call ``then()`` once
        it is, without waiting (from a later call, in the order asked)."""
        self._ask_flush(True, then)

    def close(self) -> None:
        """Stop the actors, letting them close their clients when nothing is pending and none
        failed. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        if not self._failed and not any(a.calls for a in self._actors):
            stops = [a.handle.stop.remote() for a in self._actors]
            self._ray.wait(stops, num_returns=len(stops), timeout=10.0)
            self._kill()
            return
        self._kill()
        # A failed run releases its lease next: no actor may still be writing by then.
        # Ray's kill only asks; an actor on a node cut off may go on until its window ends.
        if not self._confirm_dead(_KILL_WAIT_S) and self._gate is not None:
            left = self._granted_until + self._delivery_s - time.monotonic()
            if left > 0:
                logger.warning(
                    "a sink actor's death is not confirmed: waiting %.0f s, until its lease "
                    "window has ended and what it queued has timed out, before the lease goes",
                    left,
                )
                time.sleep(left)

    # -- internals -----------------------------------------------------------------------------

    def _next_ticket(self) -> int:
        """The next call's ticket, the same for every actor (each takes them in order)."""
        ticket = self._ticket
        self._ticket += 1
        return ticket

    def _lease_s(self) -> float | None:
        """How long the lease gate stays open (waiting for it as a write would; raising what
        it raises), noted as granted to the actors; None without a gate."""
        gate = self._gate
        if gate is None:
            return None
        open_for: Callable[[], float] | None = getattr(gate, "open_for", None)
        if open_for is None:  # a plain callable: passing it means open for a step
            gate()
            seconds = self._timeout_s
        else:
            seconds = open_for()
        with self._granted_lock:
            self._granted_until = max(self._granted_until, time.monotonic() + seconds)
        return seconds

    def _extend_all(self) -> None:
        """The extender thread: every :data:`_EXTEND_S`, the gate's word to every actor,
        also while the driver is busy elsewhere (reading, checkpointing). Ends when the sink
        closes or the gate closes for good (the actors' windows then lapse; the driver's
        next write raises why)."""
        while not self._stopping.wait(_EXTEND_S):
            try:
                seconds = self._lease_s()
            except Exception as exc:  # the gate's own: RefusedError, BrokerError
                logger.debug("lease extensions end: %s", exc)
                return
            for actor in self._actors:
                actor.handle.extend.options(concurrency_group=_LEASE_GROUP).remote(seconds)

    def _ask_flush(self, mark: bool, then: Callable[[], None] | None) -> int:
        lease_s = self._lease_s()
        ticket = self._next_ticket()
        for actor in self._actors:
            ref = actor.handle.flush.remote(ticket, mark, lease_s)
            actor.calls.append(_Call("flush", ref, None, time.monotonic()))
        return self._flushes.ask(then)

    def _collect(self, *, block: bool, since: float | None = None) -> None:
        """Take the actors' answers: all that are in, or (``block``) at least one and then
        all that are in. ``since``: when the caller began to wait."""
        ray = self._ray
        since = time.monotonic() if since is None else since
        while True:
            fronts = {a.calls[0].ref: a for a in self._actors if a.calls}
            if not fronts:
                return
            # Until one actor's oldest call is answered; then each actor's answers in order.
            ray.wait(list(fronts), num_returns=1, timeout=_POLL_S if block else 0)
            taken = False
            for actor in self._actors:
                while actor.calls:
                    done, _ = ray.wait([actor.calls[0].ref], timeout=0)
                    if not done:
                        break
                    self._answered(actor, actor.calls.popleft())
                    taken = True
            if taken or not block:
                return
            now = time.monotonic()
            stuck = min(
                (a for a in self._actors if a.calls), key=lambda a: a.calls[0].sent, default=None
            )
            if (
                stuck is not None
                and now - max(stuck.calls[0].sent, stuck.heard, since) > self._timeout_s
            ):
                raise self._stuck(stuck)

    def _answered(self, actor: _Actor, call: _Call) -> None:
        from ray.exceptions import RayActorError, RayError

        actor.heard = time.monotonic()
        try:
            answer = self._ray.get(call.ref)
        except RayActorError as exc:
            raise self._died(actor, call, exc) from None
        except RayError as exc:
            self._failed = True
            raise SinkError(f"{actor.name} failed: {_first_line(exc)}") from None
        if isinstance(answer, SinkFailed):
            self._failed = True
            if isinstance(answer.error, ConnectorError):
                raise answer.error
            logger.error("%s failed:\n%s", actor.name, answer.trace)
            raise SinkError(f"{actor.name} failed: {answer.text}")
        if isinstance(answer, Written):
            self._written(answer)
        elif isinstance(answer, Flushed):
            self._broker_errors(answer.broker_errors)
            if self._stats is not None:
                self._stats.add_time(f"{STAGE_PREFIX}write flush", answer.seconds)
            self._flushes.answer(actor.number, answer.marks)

    def _written(self, answer: Written) -> None:
        for topic, n in answer.written.items():
            self.written[topic] = self.written.get(topic, 0) + n
            if self._metrics is not None:
                self._metrics.records_written(topic, n)
        for topic, n in answer.skipped.items():
            self.skipped[topic] = self.skipped.get(topic, 0) + n
        if answer.written and self.first_write_at is None:
            # Here, less the write's time: the actor's clock is another host's.
            self.first_write_at = time.monotonic() - answer.seconds
        if self._stats is not None:
            self._stats.add_time("write", answer.seconds)
            for stage, spent in answer.stages.items():
                self._stats.add_time(f"{STAGE_PREFIX}write {stage}", spent)
        self._broker_errors(answer.broker_errors)

    def _broker_errors(self, count: int) -> None:
        if self._metrics is not None:
            for _ in range(count):
                self._metrics.broker_error("producer")

    def _answers(self, refs: list[Any], timeout: float, doing: str) -> list[Any]:
        """Every actor's answer to one call each (``refs``, by actor), within ``timeout``."""
        from ray.exceptions import RayError

        ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=timeout)
        if len(ready) < len(refs):
            late = [a for a, r in zip(self._actors, refs, strict=True) if r not in ready]
            raise SinkError(
                f"{late[0].name} did not answer within {timeout:.0f} s while {doing}; "
                "the Ray cluster may lack a node or the resources for it"
            )
        try:
            return list(self._ray.get(refs))
        except RayError as exc:
            raise SinkError(f"a sink actor failed while {doing}: {_first_line(exc)}") from None

    def _stuck(self, actor: _Actor) -> WatchdogError:
        self._failed = True
        call = actor.calls[0]
        self._ray.kill(actor.handle, no_restart=True)
        return WatchdogError(
            f"{actor.name} made no progress for {self._timeout_s:.0f} s{call.doing}; it was "
            "stopped, "
            "and its output since the last flush may be partly written: run the job again "
            "(with a checkpoint directory it resumes and skips what is already there)",
            process="sink",
        )

    def _died(self, actor: _Actor, call: _Call, exc: BaseException) -> SinkError:
        self._failed = True
        return SinkError(
            f"{actor.name} died{call.doing} ({_first_line(exc)}); its output since the last flush "
            "may be partly written: run the job again (with a checkpoint directory it resumes "
            "and skips what is already there)"
        )

    def _confirm_dead(self, timeout: float) -> bool:
        """Whether every actor is confirmed gone (its calls fail) within ``timeout``."""
        from ray.exceptions import RayActorError

        deadline = time.monotonic() + timeout
        alive = list(self._actors)
        while alive and time.monotonic() < deadline:
            still = []
            for actor in alive:
                ref = actor.handle.where.remote()
                ready, _ = self._ray.wait([ref], timeout=max(0.0, deadline - time.monotonic()))
                if not ready:
                    still.append(actor)
                    continue
                try:
                    self._ray.get(ref)
                except RayActorError:
                    continue  # gone
                except Exception as exc:  # Ray's own errors: treat as not confirmed
                    logger.debug("confirming %s gone: %s", actor.name, exc)
                still.append(actor)
            alive = still
            if alive:
                time.sleep(0.1)
        return not alive

    def _kill(self) -> None:
        for actor in self._actors:
            try:
                self._ray.kill(actor.handle, no_restart=True)
            except Exception as exc:  # already gone; Ray's own errors
                logger.debug("killing %s: %s", actor.name, exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
