"""Helpers for checkpoint tests: a store, a sink that keeps epochs, sources that resume, and
the check that every resume gives the uninterrupted run's output bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from engine.checkpoint import CheckpointStore, EngineSnapshot
from engine.examples.social import build_spam_pipeline, generate_social, social_source
from engine.executors.base import RunStats
from engine.log import Epoch, PartitionBatch, PartitionSpec, Source, take_column
from engine.output import OutputChunk, Sink, canonical_bytes
from engine.pipeline import Pipeline, Record
from engine.planner import plan
from engine.positions import LogPosition
from tests.support.budget import THOROUGH

MINUTE = 60_000
WORDS = ("ham", "spam", "eggs", "x@y.z", "")


class Runner(Protocol):
    """The batch or parallel executor."""

    def run(
        self,
        plan: Any,
        source: Source,
        sink: Sink,
        *,
        stats: RunStats | None = None,
        checkpoints: CheckpointStore | None = None,
        resume: EngineSnapshot | None = None,
    ) -> RunStats: ...


class MemoryStore:
    """Keeps every snapshot (round-tripped through bytes, as a connector would store it)."""

    def __init__(self, due: Callable[[Epoch], bool], *, keep: int | None = None) -> None:
        """``keep``: checkpoints stop being due once this many are saved."""
        self._due = due
        self._keep = keep
        self.asked: list[int] = []
        self.yes: list[int] = []
        self.saved: list[EngineSnapshot] = []

    def due(self, epoch: Epoch) -> bool:
        self.asked.append(epoch.index)
        full = self._keep is not None and len(self.saved) >= self._keep
        answer = not full and self._due(epoch)
        if answer:
            self.yes.append(epoch.index)
        return answer

    def save(self, snapshot: EngineSnapshot) -> None:
        self.saved.append(EngineSnapshot.from_bytes(snapshot.to_bytes()))


class EpochSink:
    """Keeps each epoch's chunks with its index."""

    def __init__(self) -> None:
        self.epochs: list[tuple[int, list[OutputChunk]]] = []

    def write(self, chunks: Sequence[OutputChunk], epoch: Epoch) -> None:
        self.epochs.append((epoch.index, list(chunks)))

    def chunks(self, before: int | None = None) -> list[OutputChunk]:
        """All chunks (of the epochs with index < ``before``)."""
        return [c for i, cs in self.epochs if before is None or i < before for c in cs]

    def indexes(self) -> list[int]:
        return [i for i, _ in self.epochs]


class FromPosition:
    """``source`` restarted at ``position``: each partition of the position from its
    ``next_offset`` on, the others from their start (what a connector arranges on resume)."""

    def __init__(self, source: Source, position: LogPosition) -> None:
        self._source = source
        self._position = position

    def partitions(self) -> Sequence[PartitionSpec]:
        return self._source.partitions()

    def batches(self) -> Iterator[PartitionBatch]:
        for batch in self._source.batches():
            pos = self._position.partitions.get((batch.topic, batch.partition))
            if pos is None:
                yield batch
                continue
            keep = batch.offsets >= pos.next_offset
            if keep.all():
                yield batch
            elif keep.any() or batch.final:
                yield PartitionBatch(
                    batch.topic,
                    batch.partition,
                    batch.kind,
                    batch.offsets[keep],
                    batch.ts[keep],
                    {name: take_column(c, keep) for name, c in batch.columns.items()},
                    final=batch.final,
                )


def check_resumes(
    executor: Callable[[], Runner],
    build: Callable[[], Pipeline],
    source: Callable[[], Source],
    due: Callable[[Epoch], bool],
    *,
    chain: bool = False,
    restart: Callable[[Source, LogPosition], Source] | None = None,
) -> list[EngineSnapshot]:
    """Resume from every checkpoint of a run; each time, the output before the checkpoint plus
    the resumed output must be the uninterrupted output, byte for byte, epoch by epoch.

    ``build`` and ``source`` are called afresh for every run (a resumed job rebuilds both).
    With ``chain``, each resumed run checkpoints too, and the run is resumed once more from its
    first checkpoint (a job that crashes twice). ``restart`` makes the source of a resumed run
    from a fresh source and the position (default: :class:`FromPosition`; an in-memory
    source's own ``resumed`` keeps it splittable, for the ray executor's readers). Returns the
    snapshots taken.

    Thorough runs resume from every checkpoint; quick ones (``tests/support/budget.py``) from
    at most four, the first and the last among them: a run of E epochs checkpointing each
    epoch otherwise costs E^2 / 2 epoch runs (E^2 with ``chain``).
    """
    plain = EpochSink()
    executor().run(plan(build()), source(), plain)
    expected = canonical_bytes(plain.chunks())
    per_epoch = [canonical_bytes(cs) for _, cs in plain.epochs]

    store = MemoryStore(due)
    sink = EpochSink()
    executor().run(plan(build()), source(), sink, checkpoints=store)
    assert canonical_bytes(sink.chunks()) == expected, "checkpointing changed the output"
    assert sink.indexes() == plain.indexes() == store.asked
    assert [s.position.epoch - 1 for s in store.saved] == store.yes
    for snap in resumed_from(store.saved):
        c = snap.position.epoch
        # Only the resumed run's first checkpoint is resumed from: take no others (the runs
        # of E epochs would otherwise hold E^2 / 2 snapshots at once).
        again = MemoryStore(lambda _e: True, keep=1) if chain else None
        resumed = EpochSink()
        executor().run(
            plan(build()),
            (restart or FromPosition)(source(), snap.position),
            resumed,
            resume=snap,
            checkpoints=again,
        )
        assert resumed.indexes() == plain.indexes()[c:]
        assert [canonical_bytes(cs) for _, cs in resumed.epochs] == per_epoch[c:]
        assert canonical_bytes(sink.chunks(before=c) + resumed.chunks()) == expected
        if again is not None and again.saved:
            later = {s.position.epoch: s.position for s in store.saved}
            first = again.saved[0]
            if first.position.epoch in later:
                assert first.position == later[first.position.epoch]
            k = first.position.epoch
            twice = EpochSink()
            executor().run(
                plan(build()), FromPosition(source(), first.position), twice, resume=first
            )
            assert canonical_bytes(sink.chunks(before=k) + twice.chunks()) == expected
    return store.saved


def resumed_from(saved: Sequence[EngineSnapshot], quick: int = 4) -> Sequence[EngineSnapshot]:
    """The snapshots a check resumes from: all when thorough, else ``quick`` of them spread
    evenly from the first to the last."""
    if THOROUGH or len(saved) <= quick:
        return saved
    picks = sorted({round(i * (len(saved) - 1) / (quick - 1)) for i in range(quick)})
    return [saved[i] for i in picks]


def every(k: int) -> Callable[[Epoch], bool]:
    """Checkpoint after every ``k``-th epoch."""
    return lambda epoch: epoch.index % k == k - 1


def spam_with_timers() -> Pipeline:
    """The spam backtest plus a Python table with timers: messages to each recipient in the
    last 10 minutes (each message schedules its own expiry), emitted per message."""
    p = build_spam_pipeline()
    recent = p.table("recent_to_recipient", default=0)

    def bump(old: int, e: Any, view: Any) -> int:
        view.schedule(e.ts + 10 * MINUTE, lambda o: o - 1)
        return old + 1

    p.update("recent_rcpt", on="message", table=recent, key="recipient", merge=bump)
    seen = p.lookup("recent_seen", on="message", table=recent, key="recipient")
    out = p.output("recent", key="recipient")
    p.emit(
        "recent_out",
        on="message",
        output=out,
        inputs=[seen],
        fn=lambda e, _v: [Record(e.recipient, {"seq": e.seq, "n": e.recent_seen})],
    )
    return p


def order_revealing(pipeline_name: str = "order") -> Pipeline:
    """Emits each event's position and a running Python sum per key, so that any change of the
    log's order or of carried state shows in the output."""
    p = Pipeline(pipeline_name)
    total = p.table("total", default=0)
    p.update(
        "add",
        on="a",
        table=total,
        key="k",
        merge=lambda old, e, _v: old * 3 + e.v,
    )
    count = p.count("seen", on="a", key="k")
    n = p.lookup("n", on="a", table=count, key="k")
    t = p.lookup("t", on="a", table=total, key="k")
    # String keys and values: ids interned by the key codecs, which must carry over too.
    by_word = p.count("by_word", on="a", key="s")
    words = p.distinct("words", on="a", key="k", value="s")
    w = p.lookup("w", on="a", table=by_word, key="s")
    d = p.lookup("d", on="a", table=words, key="k")
    out = p.output("o", key="k")
    p.emit(
        "show",
        on="a",
        output=out,
        inputs=[n, t, w, d],
        fn=lambda e, _v: [
            Record(
                e.k,
                {
                    "seq": e.seq,
                    "p": e.partition,
                    "off": e.offset,
                    "ts": e.ts,
                    "n": e.n,
                    "t": e.t,
                    "w": e.w,
                    "d": e.d,
                },
            )
        ],
    )
    return p


def table_of(parts: Sequence[Sequence[int]], keys: int = 2) -> dict[str, Any]:
    """Columns of topic ``t`` (kind ``a``) with one partition per list of timestamps."""
    partition = np.concatenate([np.full(len(ts), i, dtype=np.int64) for i, ts in enumerate(parts)])
    ts = np.concatenate([np.asarray(t, dtype=np.int64) for t in parts])
    n = len(ts)
    return {
        "partition": partition,
        "ts": ts,
        "k": np.arange(n, dtype=np.int64) % keys,
        "v": np.arange(n, dtype=np.int64) + 1,
        # a word that first shows up late, so that codecs intern it after a checkpoint
        "s": [WORDS[min(i % 5, i // 3) % len(WORDS)] for i in range(n)],
    }


def small_social(n: int = 6_000) -> Any:
    """A maker of sources over a small social data set (with timestamp jitter), ``n`` events."""
    data = generate_social(users=300, events=n, days=3, seed=5, jitter_ms=20_000)
    return lambda: social_source(data, batch_size=500)
