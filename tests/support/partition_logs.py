"""Generated partitioned logs for the merge and checkpoint tests: random partitions, a source
that cuts and interleaves them at random, and their hypothesis strategy."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from engine.log import (
    Column,
    PartitionBatch,
    PartitionSpec,
    StringColumn,
    split_partitions,
)

WORDS = ("a", "bb", "ham", "spam@x.io", "")


@dataclass(frozen=True)
class GenPartition:
    """One partition of a generated log; ``uid`` is a payload unique over the whole log."""

    spec: PartitionSpec
    offsets: list[int]
    ts: list[int]
    uid: list[int]
    word: list[str]


def columns_of(p: GenPartition, lo: int, hi: int, shared: bool) -> dict[str, Column]:
    """Payload of rows lo..hi: kind 'msg' has uid and a string; kind 'edge' has uid and a float."""
    uid = np.array(p.uid[lo:hi], dtype=np.int64)
    if p.spec.kind == "edge":
        return {"uid": uid, "weight": uid.astype(np.float64) / 4}
    if shared:
        # one dictionary for all batches, as a decoder with a fixed dictionary would give
        values = np.array(WORDS, dtype=object)
        codes = np.array([WORDS.index(w) for w in p.word[lo:hi]], dtype=np.int32)
        return {"uid": uid, "word": StringColumn(codes, values)}
    return {"uid": uid, "word": StringColumn.encode(p.word[lo:hi])}


@dataclass
class ListSource:
    """A source that replays a fixed list of batches and records how many were pulled."""

    specs: list[PartitionSpec]
    items: list[PartitionBatch]
    pulled: int = 0

    def partitions(self) -> list[PartitionSpec]:
        return self.specs

    def batches(self) -> Iterator[PartitionBatch]:
        for item in self.items:
            self.pulled += 1
            yield item


def chunked_source(parts: Sequence[GenPartition], rnd: random.Random) -> ListSource:
    """Cut each partition at random points and interleave the pieces at random."""
    queues: list[list[PartitionBatch]] = []
    for p in parts:
        n = len(p.offsets)
        cuts = sorted(rnd.sample(range(1, n), rnd.randint(0, n - 1))) if n > 1 else []
        bounds = [0, *cuts, n]
        marker = n == 0 or rnd.random() < 0.3  # end with a separate empty final batch
        shared = rnd.random() < 0.5
        batches = []
        for k, (lo, hi) in enumerate(itertools.pairwise(bounds)):
            if lo == hi:
                continue
            last = k == len(bounds) - 2
            batches.append(batch_of(p, lo, hi, final=last and not marker, shared=shared))
        if marker:
            # a fixed choice per partition: the columns of a kind that has no records at all
            # are known only if some batch names them
            bare = p.spec.partition % 4 == 2
            batches.append(batch_of(p, n, n, final=True, shared=shared, bare=bare))
        queues.append(batches)
    order = [i for i, q in enumerate(queues) for _ in q]
    rnd.shuffle(order)
    positions = [0] * len(queues)
    items = []
    for i in order:
        items.append(queues[i][positions[i]])
        positions[i] += 1
    specs = [p.spec for p in parts]
    rnd.shuffle(specs)
    return ListSource(specs, items)


def batch_of(
    p: GenPartition, lo: int, hi: int, *, final: bool, shared: bool = True, bare: bool = False
) -> PartitionBatch:
    return PartitionBatch(
        p.spec.topic,
        p.spec.partition,
        p.spec.kind,
        np.array(p.offsets[lo:hi], dtype=np.int64),
        np.array(p.ts[lo:hi], dtype=np.int64),
        {} if bare else columns_of(p, lo, hi, shared),
        final=final,
    )


@st.composite
def logs(draw: st.DrawFn) -> list[GenPartition]:
    """Random logs: 1-3 topics (a kind may span topics), 1-4 partitions each, small ts ranges."""
    topics = draw(st.lists(st.sampled_from("xyz"), min_size=1, max_size=3, unique=True))
    ts_span = draw(st.sampled_from([1, 3, 50]))  # 1: all equal; 3: many ties
    parts: list[GenPartition] = []
    uid = itertools.count()
    for topic in topics:
        kind = draw(st.sampled_from(["msg", "edge"]))
        for partition in range(draw(st.integers(1, 4))):
            n = draw(st.integers(0, 25))
            gaps = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
            start = draw(st.integers(0, 5))
            offsets = list(itertools.accumulate(gaps, initial=start))[1:]
            ts = draw(st.lists(st.integers(0, ts_span), min_size=n, max_size=n))
            words = draw(st.lists(st.sampled_from(WORDS), min_size=n, max_size=n))
            spec = PartitionSpec(topic, partition * 2, kind)  # partition numbers with gaps
            parts.append(GenPartition(spec, offsets, ts, [next(uid) for _ in ts], words))
    return parts


def tied_partitions() -> list[GenPartition]:
    """A log of ties: equal timestamps across topics (a kind spanning two of them), across
    partitions with numbering gaps and within a partition, with one partition going back in
    time and one empty; the merge must order them by (topic, partition, offset)."""
    uid = itertools.count()

    def part(
        topic: str, partition: int, kind: str, offsets: list[int], ts: list[int]
    ) -> GenPartition:
        uids = [next(uid) for _ in offsets]
        words = [WORDS[o % len(WORDS)] for o in offsets]
        return GenPartition(PartitionSpec(topic, partition, kind), offsets, ts, uids, words)

    return [
        part("y", 2, "msg", [3, 4, 6, 7], [5, 5, 5, 9]),
        part("x", 2, "msg", [0, 1, 2], [5, 5, 4]),  # goes back: 4 after 5
        part("x", 0, "msg", [10, 11, 13], [4, 5, 5]),
        part("z", 0, "edge", [0, 1], [5, 5]),
        part("y", 0, "msg", [], []),
        part("z", 4, "edge", [7], [4]),
    ]


@dataclass(frozen=True)
class GenPart:
    """A share of a :class:`SplitGenSource`: its partitions, cut and interleaved at random
    (seeded) when opened, as a reader of them would deliver them."""

    parts: tuple[GenPartition, ...]
    seed: int

    def partitions(self) -> list[PartitionSpec]:
        return [p.spec for p in self.parts]

    def open(self) -> ListSource:
        return chunked_source(self.parts, random.Random(self.seed))


@dataclass(frozen=True)
class SplitGenSource:
    """A splittable source over generated partitions (:class:`engine.log.SplittableSource`):
    whole, or split into :class:`GenPart` s, each partition cut at random; picklable, for the
    reader actors."""

    parts: tuple[GenPartition, ...]
    seed: int = 0

    def partitions(self) -> list[PartitionSpec]:
        return [p.spec for p in self.parts]

    def batches(self) -> Iterator[PartitionBatch]:
        return chunked_source(self.parts, random.Random(self.seed)).batches()

    def split(self, parts: int) -> list[GenPart]:
        groups = split_partitions(self.partitions(), parts, [len(p.offsets) for p in self.parts])
        by_spec = {p.spec: p for p in self.parts}
        return [
            GenPart(tuple(by_spec[s] for s in group), self.seed + i)
            for i, group in enumerate(groups)
        ]

    def absorb(self, report: object) -> None:
        """Generated parts report nothing."""
