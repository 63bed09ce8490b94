"""The engine benchmark: the spam backtest by several implementations on one data set.

Each implementation runs in a fresh process (so that its memory is its own) over the same
generated data set, ``repeat`` times; the report gives the median wall time, events/s, the
ratios to the hand-written and whole-log versions, the parallel executor's scaling, memory
(the sum of every process's peak RSS, and the sampled peak of their summed PSS, which counts
pages that forked workers share with the coordinator once: see :mod:`engine.procmem`), and
whether every implementation's output equals the serial oracle's (a digest of the output
columns in serial order).
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import pickle
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from engine.examples.social.spam import SCORE_FIELDS
from engine.parentdeath import die_with_parent
from engine.procmem import PeakPss

__all__ = ["IMPLEMENTATIONS", "BenchResult", "Measurement", "run_engine_bench", "score_digest"]

IMPLEMENTATIONS = ("handwritten", "wholelog", "serial", "batch", "parallel-w1", "parallel-w2")


@dataclass(frozen=True, slots=True)
class Measurement:
    """One implementation's figures."""

    name: str
    seconds: list[float]
    events: int
    outputs: int
    digest: str
    peak_rss_mib: float
    phase_seconds: dict[str, float] = field(default_factory=dict)
    #: Peak of the PSS summed over the process tree (each page counted once), sampled.
    peak_pss_mib: float | None = None
    #: Events per epoch of an executor (None for the hand-written and whole-log versions).
    epoch_size: int | None = None

    @property
    def median(self) -> float:
        """Median wall time of the runs, seconds."""
        return statistics.median(self.seconds)

    @property
    def events_per_second(self) -> float:
        """Events per second at the median."""
        return self.events / self.median if self.median > 0 else float("inf")


@dataclass(frozen=True, slots=True)
class BenchResult:
    """All measurements of one benchmark run."""

    events: int
    users: int
    days: int
    jitter_ms: int
    #: Events per epoch asked for; None: what ``restream run`` picks for a replay of this
    #: length (:func:`epoch_size_for`), per executor.
    epoch_size: int | None
    repeat: int
    measurements: list[Measurement]
    reference: str
    #: The data set's shape: a scenario name and its skew settings (see
    #: :class:`engine.examples.social.data.Skew`).
    scenario: str = "uniform"
    skew: dict[str, float] = field(default_factory=dict)

    def agree(self) -> bool:
        """Whether every implementation produced the reference's output."""
        ref = next(m for m in self.measurements if m.name == self.reference)
        return all(m.digest == ref.digest for m in self.measurements)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict with derived figures."""
        rows = []
        for m in self.measurements:
            row = asdict(m)
            row["median_seconds"] = m.median
            row["events_per_second"] = m.events_per_second
            row["vs_handwritten"] = self.speedup(m, "handwritten")
            row["vs_wholelog"] = self.speedup(m, "wholelog")
            rows.append(row)
        out = {k: v for k, v in asdict(self).items() if k != "measurements"}
        out["measurements"] = rows
        out["outputs_agree"] = self.agree()
        out["parallel_scaling"] = self.scaling()
        return out

    def find(self, name: str) -> Measurement | None:
        """The measurement of implementation ``name``, if it ran."""
        return next((m for m in self.measurements if m.name == name), None)

    def speedup(self, m: Measurement, baseline: str) -> float | None:
        """How many times faster ``m`` ran than ``baseline`` (None if that did not run)."""
        base = self.find(baseline)
        return base.median / m.median if base is not None and m.median > 0 else None

    def scaling(self) -> dict[str, float]:
        """Speedup of each parallel-wN over parallel-w1, keyed ``wN/w1`` (when both ran)."""
        one = self.find("parallel-w1")
        if one is None:
            return {}
        return {
            f"w{m.name[len('parallel-w') :]}/w1": one.median / m.median
            for m in self.measurements
            if m.name.startswith("parallel-w") and m is not one and m.median > 0
        }


def score_digest(columns: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the SpamScore columns in order, each as its Avro type's numpy dtype."""
    h = hashlib.sha256()
    dtypes = {"rules": np.int32, "score": np.int32, "spam": np.bool_}
    for name in SCORE_FIELDS:
        col: np.ndarray = np.asarray(columns[name], dtype=dtypes.get(name, np.int64))
        h.update(name.encode())
        h.update(np.ascontiguousarray(col).tobytes())
    return h.hexdigest()


def _chunks_to_columns(chunks: Sequence[Any]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in SCORE_FIELDS:
        parts = [np.asarray(c.columns[name].tolist()) for c in chunks if len(c)]
        out[name] = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    return out


def valid_implementation(name: str) -> bool:
    """Whether ``name`` is a known implementation (``parallel-wN`` or ``ray-wN`` for any
    N >= 1)."""
    for prefix in _WITH_WORKERS:
        if name.startswith(prefix):
            n = name[len(prefix) :]
            return n.isdigit() and int(n) >= 1
    return name in IMPLEMENTATIONS


#: Implementations with N workers, named PREFIX + N: the parallel executor's processes, and
#: the ray executor's actors (on the cluster of ``RAY_ADDRESS``, else a local one).
_WITH_WORKERS = ("parallel-w", "ray-w")


def _workers_of(name: str) -> int | None:
    """Worker processes (or actors) of an executor implementation; None for the baselines."""
    for prefix in _WITH_WORKERS:
        if name.startswith(prefix):
            return int(name[len(prefix) :])
    return 1 if name in ("serial", "batch") else None


def epoch_size_for(name: str, events: int, asked: int | None) -> int | None:
    """The epoch size ``name`` runs with: ``asked`` when given, else what ``restream run``
    chooses for a replay of ``events`` events with as many workers
    (:func:`~engine.executors.base.auto_epoch_size` with the run's length), so that the
    bench measures the engine as the service runs it. None for the baselines."""
    from engine.executors.base import auto_epoch_size

    workers = _workers_of(name)
    if workers is None:
        return None
    return asked if asked is not None else auto_epoch_size(workers, events)


def _run_one(
    name: str, path: str, epoch_size: int | None
) -> tuple[float, int, str, dict[str, float], int, int | None]:
    from engine.examples.social.handwritten import spam_scores_handwritten
    from engine.examples.social.source import social_source
    from engine.examples.social.spam import build_spam_pipeline
    from engine.examples.social.wholelog import spam_scores_wholelog
    from engine.executors.batch import BatchExecutor
    from engine.executors.parallel import ParallelExecutor
    from engine.executors.serial import SerialExecutor
    from engine.output import collect
    from engine.planner import plan

    phases: dict[str, float] = {}
    workers_rss = 0
    spawn_seconds = 0.0
    the_plan = plan(build_spam_pipeline())
    executor: Any = None
    cleanups: list[Callable[[], None]] = []
    if name.startswith("parallel-w"):
        executor = ParallelExecutor(workers=int(name[len("parallel-w") :]), epoch_size=epoch_size)
    elif name.startswith("ray-w"):
        from engine.executors.ray_executor import RayExecutor, connect_ray

        # Starting a local cluster and shutting it down are the cluster's costs, not the
        # run's: this process connects (so the executor, which finds Ray connected, leaves
        # the cluster alone at the end of its run: ray.shutdown took 1.4 s) and disconnects
        # after the timed run.
        ray_module, connected = connect_ray("")
        if connected:
            cleanups.append(ray_module.shutdown)
        executor = RayExecutor(workers=int(name[len("ray-w") :]), epoch_size=epoch_size)
    try:
        if executor is not None:
            # Workers start before the data set is loaded, as they do before a Kafka source
            # reads anything: forked later, each would map (and count in its RSS) the whole
            # set.
            started = time.perf_counter()
            executor.start(the_plan)
            spawn_seconds = time.perf_counter() - started
        with open(path, "rb") as f:
            data = pickle.load(f)
        if name in ("handwritten", "wholelog"):
            fn: Callable[[Any], Any] = (
                spam_scores_handwritten if name == "handwritten" else spam_scores_wholelog
            )
            started = time.perf_counter()
            scores = fn(data)
            seconds = time.perf_counter() - started
            cols = {f: getattr(scores, f) for f in SCORE_FIELDS}
        else:
            if name == "serial":
                executor = SerialExecutor(epoch_size=epoch_size)
            elif name == "batch":
                executor = BatchExecutor(epoch_size=epoch_size)
            sink = collect()
            # Building the source (dictionary-encoding strings) stands for the connector's
            # decoding, which the end-to-end benchmark measures; here only the engine is timed.
            source = social_source(data)
            started = time.perf_counter()
            stats = executor.run(the_plan, source, sink)
            seconds = time.perf_counter() - started + spawn_seconds
            phases = dict(stats.seconds)
            cols = _chunks_to_columns(sink.chunks)
            if name.startswith(_WITH_WORKERS):
                workers_rss = sum(executor.peak_rss[1:])
    finally:
        try:
            if name.startswith(_WITH_WORKERS) and executor is not None:
                executor.close()  # workers started for a run that never came
        finally:
            for cleanup in cleanups:
                cleanup()
    used = None if executor is None else executor.epoch_size
    return seconds, len(cols["message_id"]), score_digest(cols), phases, workers_rss, used


def _child(path: str, name: str, epoch_size: int | None, conn: Any, parent: int) -> None:
    # A bench killed with SIGTERM or SIGKILL would otherwise leave this run going on alone
    # for minutes, taking a core and gigabytes (its parent waits on the pipe, nothing else).
    # The parent's pid comes from the parent: this interpreter took a while to start.
    die_with_parent(parent)
    try:
        # Each sample walks every process's page tables (smaps_rollup) and holds their
        # memory-map locks: every 0.1 s it took ~11% of a core and 5% of a 2-worker run's
        # wall time on 2 cores, where a one-process baseline has a core to spare for it.
        with PeakPss(os.getpid(), interval=1.0) as pss:
            seconds, outputs, digest, phases, workers_rss, used = _run_one(name, path, epoch_size)
        # This process's peak plus the peaks of its worker processes, if any.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 + workers_rss / 2**20
        peak_pss = None if pss.peak_bytes is None else pss.peak_bytes / 2**20
        conn.send(("ok", (seconds, outputs, digest, phases, used), (peak, peak_pss)))
    except BaseException as exc:  # report any failure to the parent, then exit
        conn.send(("error", f"{type(exc).__name__}: {exc}", (0.0, None)))
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class _Run:
    seconds: float
    outputs: int
    digest: str
    phases: dict[str, float]
    peak_rss_mib: float
    peak_pss_mib: float | None
    epoch_size: int | None


def _measure(path: str, name: str, epoch_size: int | None) -> _Run:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(path, name, epoch_size, child, os.getpid()))
    try:
        proc.start()
        child.close()
        status, result, (peak, peak_pss) = parent.recv()
    except BaseException:
        # Interrupted (Ctrl-C, or SIGTERM via the CLI), or the child died without a word
        # (EOFError): the run's result is of no use now, and multiprocessing would wait for
        # it at exit.
        if proc.pid is not None:
            proc.kill()
        raise
    finally:
        if proc.pid is not None:
            proc.join()
    if status != "ok":
        raise RuntimeError(f"benchmark of {name} failed: {result}")
    seconds, outputs, digest, phases, used = result
    return _Run(seconds, outputs, digest, phases, peak, peak_pss, used)


def run_engine_bench(
    *,
    events: int,
    users: int = 100_000,
    days: int = 30,
    seed: int = 0,
    jitter_ms: int = 0,
    epoch_size: int | None = None,
    repeat: int = 3,
    only: Sequence[str] = IMPLEMENTATIONS,
    progress: Callable[[str], None] = lambda _msg: None,
    skew: Any = None,
    scenario: str = "uniform",
) -> BenchResult:
    """Generate the data set once, then measure each implementation ``repeat`` times, in
    rounds of one run each (each run in a fresh process). ``skew``: an
    :class:`engine.examples.social.data.Skew` (hot keys, clock), named ``scenario``."""
    from engine.examples.social.data import Skew, generate_social

    skew = skew or Skew()
    data = generate_social(
        users=users, events=events, days=days, seed=seed, jitter_ms=jitter_ms, skew=skew
    )
    total = len(data.messages.ts) + len(data.friendships.ts)
    measurements = []
    with tempfile.TemporaryDirectory(prefix="restream-bench-") as tmp:
        path = os.path.join(tmp, "data.pickle")
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=5)
        del data
        # Round by round, one run of each implementation: on a machine whose speed drifts
        # (a shared VM here varied by 20% within minutes) every implementation meets the
        # slow and the fast minutes alike, so the ratios of medians are fair.
        by_name: dict[str, list[_Run]] = {name: [] for name in only}
        for i in range(repeat):
            for name in only:
                run = _measure(path, name, epoch_size_for(name, total, epoch_size))
                by_name[name].append(run)
                progress(f"{name} run {i + 1}/{repeat}: {run.seconds:.2f} s")
        for name in only:
            runs = sorted(by_name[name], key=lambda r: r.seconds)
            mid = runs[len(runs) // 2]
            pss = [r.peak_pss_mib for r in runs if r.peak_pss_mib is not None]
            measurements.append(
                Measurement(
                    name,
                    [r.seconds for r in runs],
                    total,
                    mid.outputs,
                    mid.digest,
                    max(r.peak_rss_mib for r in runs),
                    mid.phases,
                    max(pss) if pss else None,
                    mid.epoch_size,
                )
            )
    reference = "serial" if "serial" in only else only[0]
    return BenchResult(
        total,
        users,
        days,
        jitter_ms,
        epoch_size,
        repeat,
        measurements,
        reference,
        scenario,
        asdict(skew),
    )
