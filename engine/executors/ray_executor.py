"""The Ray executor: the parallel executor's plan and workers, with the workers as Ray actors
spread over the nodes of a Ray cluster (DESIGN.md §3, Scale-out).

How a run goes:

* The **driver** (this process, a Ray driver) is the coordinator. With a source that can be
  split (:class:`~engine.log.SplittableSource`: the connector's Kafka source, the in-memory
  one) it reads no rows: **reader actors**
  (:class:`~engine.executors.ray_readers.RayReader`, by default one per node of the workers'
  placement when it spans several nodes, at most one per partition; on one node the driver
  reads, unless ``readers`` asks for them) each read and decode a share of the partitions on
  their node and send the driver only the sort keys; the driver merges the keys into epochs
  (the same cuts, ``seq`` and positions as a merge of the rows), puts each *key epoch* into
  the object store once, and each reader puts its rows of that epoch (its *piece*) there too;
  every worker assembles the epoch from the key epoch and the pieces (see that module). With
  any other source the driver merges the rows itself and puts each whole epoch into the
  object store, its string dictionaries once (:mod:`engine.executors.ray_epochs`). Either
  way Ray copies an object once to each node and actors on a node read it without copying,
  and at most ``max_in_flight`` epochs are in flight.
* Each **actor** (:class:`~engine.executors.ray_actors.RayWorker`) hosts
  ``EpochRuntime(plan, shard=Shard(i, W), exchange=...)`` exactly like a parallel worker, in
  a placement group of one bundle per worker with the SPREAD strategy (actors go to
  different nodes where the cluster has them). Between phases the actors swap their parts
  through the object store, calling each other (see that module).
* Output: each actor returns its share of an epoch's records as an object of its own. The
  driver fetches the shares, merges them by ``seq`` with the parallel executor's merge and
  hands the sink serial order. For a :class:`~engine.output.ShareSink` (the connector's sink
  actors) each actor cuts its output into one part per writer with the sink's router, the
  driver hands the sink the parts' references, and each writer fetches and merges its parts
  on its node, so that the driver touches no output record.

Failure: an actor that raises answers with the error (worker, node, ``seq``; a reader: its
node and partitions); an actor that dies is reported by Ray through its pending calls.
Either way the driver kills the other actors and raises
:class:`~engine.errors.ExecutionError` within seconds; actors are never restarted
(``max_restarts=0``: a restart would lose the state). With ``stall_timeout``, a wait on the
actors gives up once none of those it waits for finished a phase for that long
(the driver polls each actor's progress every second) and raises
:class:`~engine.errors.StallError` naming the actor that holds the others up; a reader that
answers no call for that long is named the same way.

Times (:class:`~engine.executors.base.RunStats`): with readers, ``route`` is the CPU time of
the driver's thread spent merging keys and routing epochs (taking the readers' answers,
the merge, the hand-off calls), the figure that bounds how many events a second one driver
can steer; ``reader read`` and ``reader piece`` are the readers' seconds (summed), and
``assemble`` the workers' (summed).

Checkpoints: when an epoch is due, the driver sends every actor a snapshot call right behind
that epoch; the actors answer with their blobs through the object store, and the driver writes
them with the log position through the :class:`~engine.checkpoint.CheckpointStore`, after the
sink took the epoch. A resumed run hands each actor its blob before the first epoch.

Ray is imported only here and in the actors, when a run starts: ``import engine`` never
imports it, and a missing ``ray`` package is an :class:`~engine.errors.EngineError` that says
how to install it.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NoReturn, TypeGuard

from engine.checkpoint import CheckpointStore, EngineSnapshot, PositionTracker, check_resume
from engine.errors import EngineError, ExecutionError, LogError, StallError
from engine.executors.base import RunStats, auto_epoch_size
from engine.executors.ray_actors import Placed, RayWorker, Share, ship_plan
from engine.executors.ray_epochs import SentArrays
from engine.executors.ray_readers import Keys, PieceStatus, RayReader, describe
from engine.executors.snapshot import check_header, fingerprint
from engine.executors.worker import Failed, raise_failure
from engine.log import Epoch, PartitionBatch, PartitionSpec, Source, SourcePart, SplittableSource
from engine.merge import merge_log
from engine.output import OutputChunk, ShareSink, Sink, merge_shares
from engine.planner import Plan
from engine.positions import LogPosition

__all__ = ["RAY_MISSING", "RayExecutor", "connect_ray", "import_ray", "spread_reading"]

log = logging.getLogger(__name__)

#: What to say when the ``ray`` package is not installed.
RAY_MISSING = (
    "the ray executor needs the ray package, which is not installed: pip install 'restream[ray]'"
)

#: Seconds between the driver's polls of the actors' progress while it waits for them.
_POLL = 1.0


def import_ray() -> ModuleType:
    """The ``ray`` module, or an :class:`EngineError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise EngineError(RAY_MISSING) from exc
    return ray


def connect_ray(address: str) -> tuple[ModuleType, bool]:
    """The ``ray`` module, connected to the cluster at ``address`` (``""``: ``ray.init``'s own
    choice, ``RAY_ADDRESS`` or a new local cluster) unless this process is connected
    already; and whether this call connected it (the caller then shuts it down)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    log.info("connecting to Ray at %s", address or "ray.init's default")
    # Actors' output would reach the driver's stderr unformatted (and break JSON logs);
    # their errors come back as answers instead.
    local = not (address or os.environ.get("RAY_ADDRESS"))
    try:
        ray.init(
            address=address or None,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=False,
            # A cluster started for this run alone: its dashboard and agents would take ~10%
            # of a 2-core machine's CPU from the workers (measured).
            **({"include_dashboard": False} if local else {}),
        )
    except Exception as exc:  # Ray's own: ConnectionError, RuntimeError, ...
        raise ExecutionError(
            f"cannot connect to the Ray cluster at "
            f"{address or 'RAY_ADDRESS (or a new local one)'}: {_first_line(exc)}"
        ) from exc
    return ray, True


def spread_reading(readers: int, nodes: Sequence[str]) -> bool:
    """Whether reader actors read a splittable source: when asked for (``readers`` > 0), or,
    by default, when the workers (on ``nodes``) span several nodes. On one node readers would
    only add a process and a copy of every row (10M in-memory events on 2 cores: 2.4x the
    parallel executor's time through a reader, 1.37x with the driver reading), so there the
    driver reads."""
    return readers > 0 or len(set(nodes)) > 1


class RayExecutor:
    """MVPS across Ray actors: see the module docstring."""

    name = "ray"

    def __init__(
        self,
        *,
        workers: int | None = None,
        epoch_size: int | None = None,
        max_in_flight: int = 2,
        stall_timeout: float | None = None,
        address: str = "",
        worker_cpus: float = 1.0,
        start_timeout: float = 120.0,
        readers: int = 0,
    ) -> None:
        """``workers``: actors (default: the cluster's CPUs divided by ``worker_cpus``, known
        once connected); ``epoch_size``: events per epoch (default:
        :func:`~engine.executors.base.auto_epoch_size` of the workers); ``stall_timeout``:
        seconds the actors waited for may all make no progress (None: no limit);
        ``address``: the Ray cluster (``""``: ``ray.init``'s own choice, ``RAY_ADDRESS`` or a
        local cluster), used only if this process is not connected to Ray yet;
        ``worker_cpus``: the CPUs each actor reserves; ``start_timeout``: seconds the
        cluster may take to place and start the actors; ``readers``: reader actors for a
        source that can be split (0: one per node of the workers' placement when it spans
        several nodes, none on one node; never more than the source's partitions)."""
        if workers is not None and workers < 1:
            raise EngineError(f"workers must be >= 1, got {workers}")
        if epoch_size is not None and epoch_size < 1:
            raise LogError(f"epoch_size must be >= 1, got {epoch_size}")
        if max_in_flight < 1:
            raise EngineError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if stall_timeout is not None and not stall_timeout > 0:
            raise EngineError(f"stall_timeout must be > 0 seconds, got {stall_timeout}")
        if not worker_cpus > 0:
            raise EngineError(f"worker_cpus must be > 0, got {worker_cpus}")
        if readers < 0:
            raise EngineError(f"readers must be >= 0 (0: one per node), got {readers}")
        self.readers = readers
        self._workers = workers
        self._epoch_size = epoch_size
        self.max_in_flight = max_in_flight
        self.stall_timeout = stall_timeout
        self.address = address
        self.worker_cpus = worker_cpus
        self.start_timeout = start_timeout
        #: Peak RSS of every process of the last run, bytes (driver first).
        self.peak_rss: list[int] = []
        #: Where the last run's actors ran, by worker.
        self.placed: list[Placed] = []
        #: Where the last run's reader actors ran, by reader (empty: the driver read).
        self.reader_placed: list[Placed] = []
        #: Seconds the slowest actor of the last start spent compiling (or loading) kernels
        #: on its node before its first epoch.
        self.compile_seconds = 0.0
        self._pool: _Actors | None = None
        self._initialized_ray = False

    @property
    def workers(self) -> int:
        """The actor count (connects to the cluster if it was left to the cluster's size)."""
        if self._workers is None:
            ray = self._connect()
            cpus = float(ray.cluster_resources().get("CPU", 1.0))
            self._workers = max(1, int(cpus // self.worker_cpus))
        return self._workers

    @property
    def epoch_size(self) -> int:
        """Events per epoch."""
        return auto_epoch_size(self.workers) if self._epoch_size is None else self._epoch_size

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the last run's actors (on their nodes)."""
        return [p.pid for p in self.placed]

    def start(self, plan: Plan) -> None:
        """Place and start the actors for ``plan`` now; the next :meth:`run` of ``plan`` uses
        them. Stop them with :meth:`close` if no run follows."""
        if self._pool is not None:
            raise EngineError("the workers are already started; run() or close() first")
        self._pool = self._launch(plan)

    def close(self) -> None:
        """Stop actors started by :meth:`start` that no run has used, and disconnect from Ray
        if this executor connected (a no-op otherwise)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()
        self._disconnect()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- Ray --------------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect this process to the Ray cluster now, if it is not connected yet (a run
        does so itself; a caller that times runs connects first)."""
        self._connect()

    def _connect(self) -> ModuleType:
        ray, initialized = connect_ray(self.address)
        self._initialized_ray = self._initialized_ray or initialized
        return ray

    def _disconnect(self) -> None:
        if self._initialized_ray:
            self._initialized_ray = False
            import_ray().shutdown()

    def _launch(self, plan: Plan) -> _Actors:
        ray = self._connect()
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        workers = self.workers
        group = placement_group([{"CPU": self.worker_cpus}] * workers, strategy="SPREAD")
        ready, _ = ray.wait([group.ready()], timeout=self.start_timeout)
        if not ready:
            remove_placement_group(group)
            resources = ray.cluster_resources()
            raise ExecutionError(
                f"the Ray cluster cannot place {workers} workers of {self.worker_cpus:g} CPU "
                f"each within {self.start_timeout:.0f} s (it has "
                f"{resources.get('CPU', 0):g} CPUs on {len(ray.nodes())} nodes); use fewer "
                "workers or a larger cluster"
            )
        actor_class = ray.remote(RayWorker)
        plan_ref = ray.put(ship_plan(plan))
        actors = [
            actor_class.options(
                num_cpus=self.worker_cpus,
                max_restarts=0,
                max_task_retries=0,
                # Epochs, snapshots and the restore waiting for their turn, plus peers'
                # deliveries and the driver's progress polls (see ray_actors).
                max_concurrency=2 * self.max_in_flight + 8,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    group, placement_group_bundle_index=w
                ),
            ).remote(w, workers, plan_ref)
            for w in range(workers)
        ]
        pool = _Actors(ray, plan, group, actors, [], [(-1, -1)] * workers)
        try:
            placed = self._gather(
                pool, [a.connect.remote(actors) for a in actors], None, self.start_timeout
            )
        except BaseException:
            pool.stop()
            raise
        pool.placed.extend(placed)
        self.placed = list(placed)
        self.compile_seconds = max(p.compile_seconds for p in placed)
        nodes = sorted({p.node for p in placed})
        log.info(
            "ray executor: %d workers on %d nodes (%s)",
            workers,
            len(nodes),
            ", ".join(sorted({p.ip for p in placed})),
        )
        return pool

    def _launch_readers(
        self, pool: _Actors, source: SplittableSource, start: LogPosition | None
    ) -> _Readers:
        """Split ``source`` and start a reader actor per part, spread over the workers' nodes
        (each on the bundle of a worker of its node: readers reserve no CPU of their own)."""
        ray = pool.ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundle_of_node: dict[str, int] = {}
        for w, p in enumerate(pool.placed):
            bundle_of_node.setdefault(p.node, w)
        bundles = list(bundle_of_node.values()) or [0]
        parts: list[SourcePart] = source.split(self.readers or len(bundles))
        actor_class = ray.remote(RayReader)
        first = 0 if start is None else start.epoch
        actors = [
            actor_class.options(
                num_cpus=0,
                max_restarts=0,
                max_task_retries=0,
                # One keys call, the pieces of the epochs in flight waiting for their turn.
                max_concurrency=self.max_in_flight + 4,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    pool.group, placement_group_bundle_index=bundles[r % len(bundles)]
                ),
            ).remote(r, part, first)
            for r, part in enumerate(parts)
        ]
        readers = _Readers(actors, [tuple(p.partitions()) for p in parts], [])
        pool.readers = readers
        placed: list[Placed] = _reader_answers(
            pool, [a.where.remote() for a in actors], None, self.start_timeout, "starting"
        )
        readers.placed.extend(placed)
        self.reader_placed = list(placed)
        log.info(
            "ray executor: %d readers on %d nodes (%s)",
            len(actors),
            len({p.node for p in placed}),
            "; ".join(
                f"{p.ip}: {', '.join(f'{s.topic}/{s.partition}' for s in specs)}"
                for p, specs in zip(placed, readers.specs, strict=True)
            ),
        )
        return readers

    # -- a run ------------------------------------------------------------------------------

    def run(
        self,
        plan: Plan,
        source: Source,
        sink: Sink,
        *,
        stats: RunStats | None = None,
        checkpoints: CheckpointStore | None = None,
        resume: EngineSnapshot | None = None,
    ) -> RunStats:
        """Run ``plan`` over ``source`` into ``sink`` on ``self.workers`` actors (those of
        :meth:`start`, if it was called for this plan)."""
        stats = RunStats(self.name) if stats is None else stats
        started = time.perf_counter()
        pool, self._pool = self._pool, None
        try:
            start = None
            if resume is not None:
                check_resume(
                    resume, executor=self.name, workers=self.workers, epoch_size=self.epoch_size
                )
                digest = fingerprint(plan)
                for w, blob in enumerate(resume.states):
                    check_header(blob, digest, shard=w, shards=self.workers)
                start = resume.position
            if pool is not None and pool.plan is not plan:
                pool.stop()
                pool = None
            if pool is None:
                pool = self._launch(plan)
            if resume is not None:
                t0 = time.perf_counter()
                ticket = pool.ticket()
                refs = [
                    a.restore.remote(ticket, b)
                    for a, b in zip(pool.actors, resume.states, strict=True)
                ]
                for seconds in self._gather(pool, refs, None, self.stall_timeout):
                    stats.add_time("restore", seconds)
                stats.add_time("move", time.perf_counter() - t0)
            if _splittable(source) and spread_reading(self.readers, [p.node for p in pool.placed]):
                readers = self._launch_readers(pool, source, start)
                pool.readers = readers
                keys = _KeySource(self, pool, readers, source, stats)
                epochs = merge_log(keys, epoch_size=self.epoch_size, start=start)
            else:
                self.reader_placed = []
                epochs = merge_log(source, epoch_size=self.epoch_size, start=start)
            self._drive(
                epochs,
                pool,
                sink,
                stats,
                checkpoints,
                PositionTracker(start) if checkpoints is not None else None,
                start,
            )
            peaks = self._gather(
                pool, [a.peak.remote() for a in pool.actors], None, self.stall_timeout
            )
            self.peak_rss = [
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                *[int(p) for p in peaks],
            ]
        finally:
            if pool is not None:
                pool.stop()
            self._disconnect()
        if self.compile_seconds:
            stats.add_time("compile", self.compile_seconds)
        stats.wall_seconds = time.perf_counter() - started
        return stats

    def _drive(
        self,
        epochs: Iterator[Epoch],
        pool: _Actors,
        sink: Sink,
        stats: RunStats,
        checkpoints: CheckpointStore | None,
        tracker: PositionTracker | None,
        start: LogPosition | None,
    ) -> None:
        ray = pool.ray
        readers = pool.readers
        following = (0, 0) if start is None else (start.epoch, start.seq)
        # Sink actors: each worker cuts its output into one part per writer, which fetches
        # its parts where it runs (see engine.output.ShareSink).
        router = sink.router if isinstance(sink, ShareSink) else None
        router_ref = None if router is None else ray.put(router)
        returns = 1 + (1 if router is None else router.parts)
        sent = SentArrays(ray.put)
        in_flight: deque[tuple[Epoch, list[Any], list[list[Any]], list[Any] | None, list[Any]]] = (
            deque()
        )
        exhausted = False
        while True:
            while not exhausted and len(in_flight) < self.max_in_flight:
                t0 = time.perf_counter()
                cpu = time.thread_time()
                stats.reading = following
                epoch = next(epochs, None)
                stats.reading = None
                stats.add_time("read", time.perf_counter() - t0)
                if epoch is None:
                    if readers is not None:
                        stats.add_time("route", time.thread_time() - cpu)
                    exhausted = True
                    break
                following = (epoch.index + 1, epoch.seq_end)
                due = checkpoints is not None and checkpoints.due(epoch)
                t0 = time.perf_counter()
                ticket = pool.ticket()
                statuses: list[Any] = []
                if readers is None:
                    ref = ray.put(sent.pack(epoch))
                    calls = [
                        a.process.options(num_returns=returns).remote(ticket, ref, router_ref)
                        for a in pool.actors
                    ]
                else:
                    ref = ray.put(epoch)
                    # Each reader cuts its rows of the key epoch into a piece in the object
                    # store; the workers get the pieces' references, never the driver.
                    cut = [r.piece.options(num_returns=2).remote(ref) for r in readers.actors]
                    statuses = [status for status, _ in cut]
                    pieces = [piece for _, piece in cut]
                    calls = [
                        a.process_pieces.options(num_returns=returns).remote(
                            ticket, ref, router_ref, *pieces
                        )
                        for a in pool.actors
                    ]
                refs = [answer for answer, *_ in calls]
                outputs = [parts for _, *parts in calls]
                snaps = None
                if due:
                    # Right behind the epoch: each actor snapshots exactly at its end.
                    ticket = pool.ticket()
                    snaps = [a.snapshot.remote(ticket) for a in pool.actors]
                stats.add_time("move", time.perf_counter() - t0)
                if readers is not None:
                    stats.add_time("route", time.thread_time() - cpu)
                in_flight.append((epoch, refs, outputs, snaps, statuses))
            if not in_flight:
                return
            epoch, refs, outputs, snaps, statuses = in_flight.popleft()
            if statuses:
                cut_: list[PieceStatus] = _reader_answers(
                    pool, statuses, epoch, self.stall_timeout, "cutting its piece"
                )
                stats.add_time("reader piece", sum(c.seconds for c in cut_))
            shares: list[Share] = self._gather(pool, refs, epoch, self.stall_timeout)
            for share in shares:
                for what, secs in share.seconds.items():
                    stats.add_time(what, secs)
            records = sum(s.records for s in shares)
            if isinstance(sink, ShareSink):
                # Its writers fetch the workers' chunks where they run, never the driver.
                t0 = time.perf_counter()
                sink.write_shares(outputs, epoch, records)
                stats.add_time("sink", time.perf_counter() - t0)
            else:
                t0 = time.perf_counter()
                got = self._gather(pool, [p[0] for p in outputs], epoch, self.stall_timeout)
                chunks: list[OutputChunk] = merge_shares(got)
                stats.add_time("merge", time.perf_counter() - t0)
                t0 = time.perf_counter()
                sink.write(chunks, epoch)
                stats.add_time("sink", time.perf_counter() - t0)
            stats.count_epoch(epoch, (), records=records)
            if tracker is not None and checkpoints is not None:
                tracker.advance(epoch)
                if snaps is not None:
                    t0 = time.perf_counter()
                    saved: list[tuple[bytes, float]] = self._gather(
                        pool, snaps, epoch, self.stall_timeout
                    )
                    for _, secs in saved:
                        stats.add_time("snapshot", secs)
                    checkpoints.save(
                        EngineSnapshot(
                            tracker.position,
                            self.name,
                            self.workers,
                            self.epoch_size,
                            tuple(blob for blob, _ in saved),
                        )
                    )
                    stats.add_time("checkpoint", time.perf_counter() - t0)

    def _gather(
        self, pool: _Actors, refs: list[Any], epoch: Epoch | None, timeout: float | None
    ) -> list[Any]:
        """The answers of all actors to one call each (``refs``, by worker), failing fast
        if any actor fails or dies, or (with a ``timeout``) if none of those still busy
        finished a phase for that long."""
        ray = pool.ray
        from ray.exceptions import RayActorError, RayError

        pending: dict[Any, int] = {ref: w for w, ref in enumerate(refs)}
        answers: list[Any] = [None] * len(refs)
        heard = time.monotonic()  # the start of the wait, or the last progress of anyone
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=_POLL)
            for ref in ready:
                w = pending.pop(ref)
                try:
                    answer = ray.get(ref)
                except RayActorError as exc:
                    raise pool.process(w).died(epoch, exc) from None
                except RayError as exc:
                    raise pool.process(w).failed(epoch, exc) from None
                if isinstance(answer, Failed):
                    raise_failure(answer)
                answers[w] = answer
            if ready or not pending:
                continue
            if self._polled_progress(pool, set(pending.values())):
                heard = time.monotonic()
            elif timeout is not None and time.monotonic() - heard > timeout:
                _stalled(pool, sorted(pending.values()), epoch, timeout)
        return answers

    def _polled_progress(self, pool: _Actors, busy: set[int]) -> bool:
        """Ask the busy actors how far they are; whether any went further since last asked
        (an actor that does not answer within the poll, stopped say, did not)."""
        ray = pool.ray
        polls = {pool.actors[w].progress.remote(): w for w in busy}
        ready, _ = ray.wait(list(polls), num_returns=len(polls), timeout=_POLL / 2)
        moved = False
        pool.silent = set(busy)
        for ref in ready:
            w = polls[ref]
            try:
                now = ray.get(ref)
            except Exception:  # its death shows in the pending call, with the details
                continue
            pool.silent.discard(w)
            if tuple(now) != pool.progress[w]:
                pool.progress[w] = tuple(now)
                moved = True
        return moved


#: How every message about a run that an actor stopped ends.
_STOPPED = "the run was stopped, its output is incomplete"


@dataclass(frozen=True, slots=True)
class _Process:
    """A worker or reader actor as the messages about it name it, so that a worker's and a
    reader's death, failure and stall read alike: ``kind`` and ``index`` (``worker 1``, a
    :class:`StallError`'s ``process``), where it runs when known, and ``name``, its whole
    description (with node and pid when known; a reader's with its partitions)."""

    kind: str
    index: int
    placed: Placed | None
    name: str

    def died(self, epoch: Epoch | None, exc: BaseException) -> ExecutionError:
        """The error of the actor's death (Ray's ``exc``) while it worked on ``epoch``."""
        return ExecutionError(
            f"{self.name} died{_span(epoch)} ({_first_line(exc)}); {_STOPPED}",
            seq=None if epoch is None else epoch.seq_start,
        )

    def failed(self, epoch: Epoch | None, exc: BaseException) -> ExecutionError:
        """The error of a call that failed in Ray (``exc``) rather than in our code."""
        return ExecutionError(
            f"{self.name}: {_first_line(exc)}{_span(epoch)}; {_STOPPED}",
            seq=None if epoch is None else epoch.seq_start,
        )

    def stalled(self, what: str, epoch: Epoch | None, timeout: float) -> StallError:
        """The error of a wait that gave up after ``timeout`` s; ``what`` says how the
        actor held it up (it follows the actor's name)."""
        return StallError(
            f"{self.name} {what}; {_STOPPED}",
            process=f"{self.kind} {self.index}",
            pid=None if self.placed is None else self.placed.pid,
            seconds=timeout,
            epoch=None if epoch is None else epoch.index,
            seq_start=None if epoch is None else epoch.seq_start,
            seq_end=None if epoch is None else epoch.seq_end,
        )


@dataclass(slots=True)
class _Readers:
    """A run's reader actors, their partitions and where they run (by reader)."""

    actors: list[Any]
    specs: list[tuple[PartitionSpec, ...]]
    placed: list[Placed]

    def process(self, r: int) -> _Process:
        """Reader ``r`` for messages: its index, node, pid and partitions."""
        placed = self.placed[r] if r < len(self.placed) else None
        return _Process("reader", r, placed, describe(r, placed, self.specs[r]))


@dataclass(slots=True)
class _Actors:
    ray: ModuleType
    plan: Plan
    group: Any
    actors: list[Any]
    placed: list[Placed]
    #: Per worker: the (epoch, phase) it last reported done.
    progress: list[tuple[int, ...]]
    #: Workers that did not answer the last progress poll.
    silent: set[int] | None = None
    tickets: int = 0
    #: The run's reader actors (None: the driver reads).
    readers: _Readers | None = None

    def process(self, w: int) -> _Process:
        """Worker ``w`` for messages: its index, and its node and pid once placed."""
        placed = self.placed[w] if w < len(self.placed) else None
        where = "" if placed is None else f" (node {placed.ip}, pid {placed.pid})"
        return _Process("worker", w, placed, f"worker {w}{where}")

    def ticket(self) -> int:
        """The next call's place in every actor's order (see ray_actors)."""
        self.tickets += 1
        return self.tickets - 1

    def stop(self) -> None:
        """Kill the actors and free their placement group (whatever state they are in)."""
        from ray.util.placement_group import remove_placement_group

        for actor in self.actors + ([] if self.readers is None else self.readers.actors):
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # already gone with its node
                log.debug("actor already gone", exc_info=True)
        try:
            remove_placement_group(self.group)
        except Exception:  # the cluster is gone
            log.debug("placement group already gone", exc_info=True)


def _span(epoch: Epoch | None) -> str:
    if epoch is None:
        return ""
    return f" while processing epoch {epoch.index} (seq {epoch.seq_start}..{epoch.seq_end - 1})"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _stalled(pool: _Actors, busy: list[int], epoch: Epoch | None, timeout: float) -> NoReturn:
    """Raise the :class:`StallError` of a wait that timed out, naming the actor that holds
    the others up: one that does not answer, else the one furthest behind."""
    silent = sorted(pool.silent or ())
    culprit = silent[0] if silent else min(busy, key=lambda w: (pool.progress[w], w))
    done = pool.progress[culprit]
    if epoch is None:
        where = "outside an epoch (starting, restoring its snapshot, or stopping)"
    elif done[0] == epoch.index and done[1] >= 0:
        where = f"after phase {done[1]}"
    else:
        where = "before its first phase"
    how = "it does not answer (stopped? its node unreachable?)" if silent else "it is busy"
    span = (
        ""
        if epoch is None
        else f" in epoch {epoch.index} (seq {epoch.seq_start}..{epoch.seq_end - 1})"
    )
    raise pool.process(culprit).stalled(
        f"made no progress for {timeout:.0f} s{span}, {where}: {how}", epoch, timeout
    )


def _splittable(source: Source) -> TypeGuard[SplittableSource]:
    return callable(getattr(source, "split", None)) and callable(getattr(source, "absorb", None))


def _reader_answers(
    pool: _Actors, refs: list[Any], epoch: Epoch | None, timeout: float | None, doing: str
) -> list[Any]:
    """The answers of the readers to one call each (``refs``, by reader), failing fast if one
    fails or dies, or (with a ``timeout``) if one has not answered for that long."""
    ray = pool.ray
    from ray.exceptions import RayActorError, RayError

    readers = pool.readers
    assert readers is not None
    pending: dict[Any, int] = {ref: r for r, ref in enumerate(refs)}
    answers: list[Any] = [None] * len(refs)
    since = time.monotonic()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=_POLL)
        for ref in ready:
            r = pending.pop(ref)
            answers[r] = _reader_answer(pool, ref, r, epoch, RayActorError, RayError)
            since = time.monotonic()
        if not ready and timeout is not None and time.monotonic() - since > timeout:
            _reader_stalled(pool, min(pending.values()), epoch, timeout, doing)
    return answers


def _reader_answer(
    pool: _Actors,
    ref: Any,
    r: int,
    epoch: Epoch | None,
    died: type[BaseException],
    failed: type[BaseException],
) -> Any:
    """One reader's answer (ready), or the error that names it."""
    readers = pool.readers
    assert readers is not None
    try:
        answer = pool.ray.get(ref)
    except died as exc:
        raise readers.process(r).died(epoch, exc) from None
    except failed as exc:
        raise readers.process(r).failed(epoch, exc) from None
    if isinstance(answer, Failed):
        raise ExecutionError(
            f"{answer.message}{_span(epoch)}; {_STOPPED}",
            seq=None if epoch is None else epoch.seq_start,
        )
    return answer


def _reader_stalled(
    pool: _Actors, r: int, epoch: Epoch | None, timeout: float, doing: str
) -> NoReturn:
    readers = pool.readers
    assert readers is not None
    raise readers.process(r).stalled(
        f"did not answer for {timeout:.0f} s {doing}{_span(epoch)}", epoch, timeout
    )


class _KeySource:
    """The driver's view of the readers: a :class:`~engine.log.Source` of key-only batches
    (one ``keys`` call outstanding per reader while the merge works), whose reports go to the
    split source (:meth:`~engine.log.SplittableSource.absorb`)."""

    def __init__(
        self,
        executor: RayExecutor,
        pool: _Actors,
        readers: _Readers,
        source: SplittableSource,
        stats: RunStats,
    ) -> None:
        self._executor = executor
        self._pool = pool
        self._readers = readers
        self._source = source
        self._stats = stats
        self._specs = tuple(source.partitions())

    def partitions(self) -> tuple[PartitionSpec, ...]:
        """The split source's partitions."""
        return self._specs

    def batches(self) -> Iterator[PartitionBatch]:
        """The readers' key-only batches, whichever reader answers first."""
        ray = self._pool.ray
        from ray.exceptions import RayActorError, RayError

        actors = self._readers.actors
        pending: dict[Any, int] = {a.keys.remote(): r for r, a in enumerate(actors)}
        timeout = self._executor.stall_timeout
        since = time.monotonic()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=_POLL)
            if not ready:
                if timeout is not None and time.monotonic() - since > timeout:
                    _reader_stalled(
                        self._pool, min(pending.values()), None, timeout, "reading its partitions"
                    )
                continue
            ref = ready[0]
            r = pending.pop(ref)
            keys: Keys = _reader_answer(self._pool, ref, r, None, RayActorError, RayError)
            if not keys.done:
                pending[actors[r].keys.remote()] = r
            self._stats.add_time("reader read", keys.seconds)
            if keys.report is not None:
                self._source.absorb(keys.report)
            yield from keys.batches
            since = time.monotonic()
