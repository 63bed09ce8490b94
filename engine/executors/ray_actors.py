"""A worker of the Ray executor: a Ray actor hosting one shard's :class:`EpochRuntime`.

The class here is plain Python; :mod:`engine.executors.ray_executor` turns it into an actor
(``ray.remote(RayWorker)``), so that importing this module does not import Ray. Ray itself is
imported only inside the methods that run in the actor.

What an actor does is exactly what a ``parallel`` worker does (:mod:`engine.executors.worker`):
``EpochRuntime(plan, shard=Shard(i, W), exchange=...)``, one ``runtime.process(epoch)`` per
epoch, snapshots and restores of its state. What differs is the transport:

* **Order.** The actor is threaded (``max_concurrency`` > 1: peers call :meth:`deliver` while
  it is busy in an epoch, and the driver polls :meth:`progress`), and Ray does not promise the
  order in which a threaded actor starts its calls. So every call that touches the runtime
  carries a *ticket*, 0, 1, 2 ... in the order the driver sent it (the same sequence to every
  actor), and waits for its turn: an actor applies its epochs, snapshots and restore strictly
  in order, as a parallel worker reads its pipe.
* **Exchange.** Between phases, an actor puts its parts in the object store once
  (``ray.put``) and calls ``deliver(round, sender, ref)`` on every peer; Ray resolves the
  reference before the call runs, so the peer receives the parts (arrays zero-copy from its
  node's store) and files them under the round. The actor then waits until it holds every
  peer's parts of its own round: the barrier is the arrival of the parts themselves. A peer
  may run one round ahead (it got this actor's parts first), never more, so the inbox is
  keyed by round.
* **Epochs** come packed (:mod:`engine.executors.ray_epochs`): numpy columns zero-copy from
  the object store, string dictionaries fetched once and shared by the epochs that name them.
* **The plan.** The driver pickles the plan once (:func:`ship_plan`) and every actor loads
  it. Functions that cannot be imported by name (a lambda or a closure made by a pipeline
  builder) are sent as code, but bound to their module's own namespace, imported on the
  actor's side, as checkpoints store them (:mod:`engine.executors.snapshot`): a timer function
  that a merge makes at run time must be checkpointable in the actor as in a parallel worker.
  Only functions whose module is not importable (``__main__``) go by value, with cloudpickle.
* **Failures.** A method never raises on purpose: an error comes back as a
  :class:`~engine.executors.worker.Failed` naming the worker, its node and ``seq``, which
  the driver raises as the parallel coordinator does. An actor that dies is noticed by the
  driver through Ray (its pending calls fail); actors are never restarted (a restart would
  run the constructor again and lose the state).
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import resource
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import CheckpointError, EngineError, ExecutionError
from engine.executors.base import RunStats
from engine.executors.columns import Part
from engine.executors.ray_epochs import PackedEpoch, ReceivedArrays
from engine.executors.runtime import EpochRuntime
from engine.executors.sharding import Shard
from engine.executors.snapshot import _importable, _make_function
from engine.executors.worker import Failed
from engine.log import Epoch
from engine.output import OutputRouter, split_output
from engine.planner import Plan
from engine.state.jit import warm_up

if TYPE_CHECKING:
    from engine.executors.ray_readers import Piece

__all__ = ["Answer", "Placed", "RayWorker", "Share", "Turns", "load_plan", "ship_plan"]


def ship_plan(plan: Plan) -> bytes:
    """``plan`` pickled for the actors (see the module docstring); :func:`load_plan` loads it."""
    # Ray's copy of cloudpickle, untyped: Any.
    cloudpickle: Any = importlib.import_module("ray.cloudpickle")

    class Pickler(cloudpickle.Pickler):  # type: ignore[misc]
        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, types.FunctionType) and not _importable(obj):
                module = sys.modules.get(obj.__module__)
                if (
                    module is not None
                    and obj.__module__ != "__main__"
                    and obj.__globals__ is module.__dict__
                    and all(_assigned(c) for c in obj.__closure__ or ())
                ):
                    return _make_function, (
                        obj.__code__,
                        obj.__module__,
                        obj.__name__,
                        obj.__qualname__,
                        obj.__defaults__,
                        obj.__kwdefaults__,
                        tuple(c.cell_contents for c in obj.__closure__ or ()),
                        obj.__dict__ or None,
                    )
            return super().reducer_override(obj)

    out = io.BytesIO()
    try:
        Pickler(out, protocol=5).dump(plan)
    except RecursionError:
        # A closure that refers to itself: cloudpickle's own by-value functions cope.
        return bytes(cloudpickle.dumps(plan, protocol=5))
    return out.getvalue()


def load_plan(data: bytes) -> Plan:
    """The plan :func:`ship_plan` pickled."""
    plan = pickle.loads(data)
    if not isinstance(plan, Plan):
        raise EngineError(f"expected a pickled plan, got {type(plan).__name__}")
    return plan


def _assigned(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - raises ValueError when empty
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Placed:
    """Where an actor runs: its node's IP address and id, its process id, and the seconds
    it took to compile (or load) the kernels when it started."""

    ip: str
    node: str
    pid: int
    compile_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Share:
    """How an actor's epoch went: its output records (the chunks themselves are a second
    object of the call, which the driver fetches only to merge them itself) and where its
    time went."""

    records: int
    seconds: dict[str, float]


#: What :meth:`RayWorker.process` answers (``num_returns=1 + parts``): the share (or the
#: failure) and its output chunks, one list per writer of the sink (None each on failure).
Answer = tuple[Any, ...]


class Turns:
    """Calls that carry tickets 0, 1, 2 ... run one at a time in ticket order, whatever order
    a threaded Ray actor starts them in (see the module docstring)."""

    def __init__(self) -> None:
        self._turn = 0
        self._changed = threading.Condition()

    @contextmanager
    def of(self, ticket: int) -> Iterator[None]:
        """Wait until it is ``ticket``'s turn; the next ticket's once the body is done."""
        with self._changed:
            self._changed.wait_for(lambda: self._turn == ticket)
        try:
            yield
        finally:
            with self._changed:
                self._turn += 1
                self._changed.notify_all()


def _nothing(router: OutputRouter | None) -> list[None]:
    """The output parts of a failed call: one None per part."""
    return [None] * (1 if router is None else router.parts)


class RayWorker:
    """One shard of the partitioned store, hosted in a Ray actor (see the module docstring)."""

    def __init__(self, index: int, count: int, shipped: bytes) -> None:
        import ray

        plan = load_plan(shipped)
        # Kernels before the first epoch, as a parallel coordinator compiles them before it
        # forks: on its own node an actor compiles them (or loads them from its cache).
        compiled = warm_up()
        self.index = index
        self.count = count
        self.shard = Shard(index, count)
        context = ray.get_runtime_context()
        ip: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        self.placed = Placed(ip, context.get_node_id(), os.getpid(), compiled)
        # A single worker owns everything: nothing to swap.
        self.runtime = EpochRuntime(
            plan, shard=self.shard, exchange=self._exchange if count > 1 else None
        )
        self._peers: list[Any] = []
        self._arrays = ReceivedArrays(ray.get)
        self._lock = threading.Condition()
        self._turns = Turns()
        self._round = 0
        self._inbox: dict[int, dict[int, list[Part]]] = {}
        #: (epoch, phase) last finished; phase -1: the epoch started.
        self._progress = (-1, -1)

    # -- calls of the driver --------------------------------------------------------------

    def connect(self, peers: list[Any]) -> Placed:
        """Keep the handles of all actors (this one's included, at its index)."""
        self._peers = peers
        return self.placed

    def progress(self) -> tuple[int, int]:
        """The (epoch, phase) this actor finished last: the driver's watchdog polls it."""
        return self._progress

    def restore(self, ticket: int, blob: bytes) -> float | Failed:
        """Replace the (empty) state with this worker's snapshot ``blob``; the seconds it took."""
        with self._turns.of(ticket):
            t0 = time.perf_counter()
            try:
                self.runtime.restore(blob)
            except BaseException as exc:
                return self._failed(exc, None)
            return time.perf_counter() - t0

    def process(self, ticket: int, packed: PackedEpoch, router: OutputRouter | None) -> Answer:
        """Run every phase of the epoch ``packed`` holds over this shard; its share and its
        output chunks, cut into one list per writer by ``router`` (call with
        ``num_returns=1 + parts``; a single list without a router)."""
        with self._turns.of(ticket):
            stats = RunStats("ray")
            t0 = time.perf_counter()
            try:
                epoch = self._arrays.unpack(packed)
            except BaseException as exc:
                return self._failed(exc, packed), *_nothing(router)
            stats.add_time("unpack", time.perf_counter() - t0)
            return self._process(epoch, stats, router)

    def process_pieces(
        self, ticket: int, keys: Epoch, router: OutputRouter | None, *pieces: Piece | None
    ) -> Answer:
        """Assemble the epoch from its key epoch and the readers' pieces (see
        :mod:`engine.executors.ray_readers`), then run it as :meth:`process` does. A missing
        piece (None: its reader failed, which the driver reports) fails the epoch."""
        from engine.executors.ray_readers import assemble

        with self._turns.of(ticket):
            stats = RunStats("ray")
            t0 = time.perf_counter()
            try:
                if any(p is None for p in pieces):
                    raise EngineError("a reader failed to send its piece of the epoch")
                epoch = assemble(keys, [p for p in pieces if p is not None])
            except BaseException as exc:
                return self._failed(exc, keys), *_nothing(router)
            stats.add_time("assemble", time.perf_counter() - t0)
            return self._process(epoch, stats, router)

    def _process(self, epoch: Epoch, stats: RunStats, router: OutputRouter | None) -> Answer:
        self._progress = (epoch.index, -1)
        try:
            chunks = self.runtime.process(epoch, stats, on_phase=self._on_phase(epoch.index))
            t0 = time.perf_counter()
            parts = [chunks] if router is None else split_output(chunks, router)
            if router is not None:
                stats.add_time("route output", time.perf_counter() - t0)
        except BaseException as exc:
            return self._failed(exc, epoch), *_nothing(router)
        return Share(sum(len(c) for c in chunks), stats.seconds), *parts

    def snapshot(self, ticket: int) -> tuple[bytes, float] | Failed:
        """This shard's state as of the end of the epoch before, and the seconds it took."""
        with self._turns.of(ticket):
            t0 = time.perf_counter()
            try:
                blob = self.runtime.snapshot()
            except BaseException as exc:
                return self._failed(exc, None)
            return blob, time.perf_counter() - t0

    def peak(self) -> int:
        """This actor's peak RSS, bytes."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    # -- calls of the peers ----------------------------------------------------------------

    def deliver(self, round_: int, sender: int, parts: list[Part]) -> None:
        """Peer ``sender``'s parts of exchange round ``round_``."""
        with self._lock:
            self._inbox.setdefault(round_, {})[sender] = parts
            self._lock.notify_all()

    # -- inside -----------------------------------------------------------------------------

    def _on_phase(self, epoch: int) -> Callable[[int], None]:
        def done(phase: int) -> None:
            self._progress = (epoch, phase)

        return done

    def _exchange(self, parts: list[Part]) -> list[Part]:
        import ray

        round_ = self._round
        self._round += 1
        # One copy into the object store, read by every peer (once per node).
        ref = ray.put(parts)
        for w, peer in enumerate(self._peers):
            if w != self.index:
                peer.deliver.remote(round_, self.index, ref)
        with self._lock:
            self._lock.wait_for(lambda: len(self._inbox.get(round_, ())) == self.count - 1)
            got = self._inbox.pop(round_)
        out: list[Part] = []
        for w in range(self.count):
            out.extend(parts if w == self.index else got[w])
        return out

    def _failed(self, exc: BaseException, epoch: Epoch | PackedEpoch | None) -> Failed:
        where = f"worker {self.index} (node {self.placed.ip}, pid {self.placed.pid})"
        if isinstance(exc, ExecutionError):
            return Failed(self.index, f"{where}: {exc}", exc.seq, exc.operator)
        if isinstance(exc, CheckpointError):
            return Failed(self.index, f"{where}: {exc}", None, None, checkpoint=True)
        seq = None if epoch is None else epoch.seq_start
        span = (
            ""
            if epoch is None
            else f" in epoch {epoch.index} (seq {epoch.seq_start}..{epoch.seq_end - 1})"
        )
        if isinstance(exc, EngineError):
            detail = str(exc)
        else:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return Failed(self.index, f"{where}{span}: {detail}", seq, None)
