"""Reader shares without Ray: a key-only merge of split sources plus the readers' pieces gives
the epochs of a merge of the rows (engine.executors.ray_readers); the in-memory source splits
and resumes."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import LogError
from engine.executors.ray_readers import ReaderShare, assemble
from engine.log import (
    Epoch,
    InMemorySource,
    PartitionBatch,
    PartitionSpec,
    SourcePart,
    StringColumn,
    TopicTable,
    split_partitions,
)
from engine.merge import merge_log
from engine.positions import LogPosition, PartitionPosition
from tests.support.budget import examples
from tests.support.partition_logs import GenPartition, SplitGenSource, logs, tied_partitions


class _Keys:
    """The driver's key source, in process: the shares' key batches, shares picked at random."""

    def __init__(self, specs: Sequence[PartitionSpec], shares: list[ReaderShare], seed: int):
        self._specs = specs
        self._shares = shares
        self._rnd = random.Random(seed)

    def partitions(self) -> Sequence[PartitionSpec]:
        return self._specs

    def batches(self) -> Iterator[PartitionBatch]:
        live = list(self._shares)
        while live:
            share = self._rnd.choice(live)
            batches, _report, done = share.read()
            if done:
                live.remove(share)
            for b in batches:
                assert not b.columns
                yield b


def _via_readers(
    source: SplitGenSource | InMemorySource,
    readers: int,
    epoch_size: int,
    keys_per_call: int,
    start: LogPosition | None = None,
) -> list[Epoch]:
    parts: list[SourcePart] = list(source.split(readers))
    shares = [ReaderShare(p, keys_per_call) for p in parts]
    keys = _Keys(source.partitions(), shares, seed=readers)
    out = []
    for key_epoch in merge_log(keys, epoch_size=epoch_size, start=start):
        for ev in key_epoch.events.values():
            assert not ev.columns
        out.append(assemble(key_epoch, [s.cut(key_epoch) for s in shares]))
    return out


def _same(got: list[Epoch], want: list[Epoch]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g.index, g.seq_start, g.seq_end, g.kinds, g.topics) == (
            w.index,
            w.seq_start,
            w.seq_end,
            w.kinds,
            w.topics,
        )
        assert np.array_equal(g.ts, w.ts) and np.array_equal(g.kind, w.kind)
        for kind, we in w.events.items():
            ge = g.events[kind]
            for field in ("seq", "ts", "topic", "partition", "offset"):
                assert np.array_equal(getattr(ge, field), getattr(we, field)), field
            if not len(we):
                continue
            assert set(ge.columns) == set(we.columns)
            for name, col in we.columns.items():
                other = ge.columns[name]
                if isinstance(col, StringColumn):
                    assert isinstance(other, StringColumn) and other.equals(col), name
                else:
                    assert isinstance(other, np.ndarray) and other.dtype == col.dtype
                    assert np.array_equal(other, col), name


@settings(max_examples=examples(150), deadline=None)
@given(
    parts=logs(),
    readers=st.integers(1, 4),
    epoch_size=st.sampled_from([1, 3, 10, 1000]),
    keys_per_call=st.sampled_from([1, 5, 1000]),
    seed=st.integers(0, 3),
)
def test_readers_pieces_assemble_the_epochs_of_a_merge_of_the_rows(
    parts: list[GenPartition], readers: int, epoch_size: int, keys_per_call: int, seed: int
) -> None:
    source = SplitGenSource(tuple(parts), seed)
    expected = list(merge_log(source, epoch_size=epoch_size))
    _same(_via_readers(source, readers, epoch_size, keys_per_call), expected)


def test_ties_backwards_time_and_an_empty_partition_over_three_readers() -> None:
    source = SplitGenSource(tuple(tied_partitions()), 7)
    for size in (1, 2, 5):
        _same(_via_readers(source, 3, size, 2), list(merge_log(source, epoch_size=size)))


def _table(n: int, partitions: int) -> InMemorySource:
    rng = np.random.default_rng(4)
    return InMemorySource.from_tables(
        TopicTable(
            "t",
            "a",
            {
                "partition": rng.integers(0, partitions, n),
                "ts": rng.integers(0, 50, n),
                "k": rng.integers(0, 9, n),
                "s": np.array([f"w{i % 7}" for i in range(n)], dtype=object),
            },
            partitions,
        ),
        batch_size=13,
    )


def test_an_in_memory_source_resumed_through_readers_continues_the_log() -> None:
    source = _table(400, 5)
    whole = list(merge_log(source, epoch_size=50))
    # The position after epoch 2: per partition, the offset after its last record so far.
    seen = [e for e in whole if e.index < 3]
    partitions: dict[tuple[str, int], PartitionPosition] = {}
    for e in seen:
        ev = e.events["a"]
        for p in np.unique(ev.partition).tolist():
            rows = ev.partition == p
            prior = partitions.get(("t", p))
            max_ts = int(ev.ts[rows].max())
            if prior is not None:
                max_ts = max(max_ts, prior.max_ts)
            partitions[("t", p)] = PartitionPosition(int(ev.offset[rows][-1]) + 1, max_ts)
    start = LogPosition(seen[-1].seq_end, 3, partitions)
    resumed = _via_readers(source.resumed(start), 2, 50, 17, start=start)
    _same(resumed, whole[3:])


def test_an_in_memory_source_splits_by_records_into_disjoint_shares() -> None:
    source = _table(300, 5)
    shares = source.split(2)
    assert len(shares) == 2
    specs = [s for part in shares for s in part.partitions()]
    assert sorted((s.topic, s.partition) for s in specs) == [("t", p) for p in range(5)]
    assert len(source.split(9)) == 5  # never more shares than partitions
    assert source.split(1)[0].partitions() == source.partitions()


def test_split_partitions_balances_weights_and_keeps_order() -> None:
    specs = [PartitionSpec("t", p, "a") for p in range(4)]
    groups = split_partitions(specs, 2, [10, 1, 1, 9])
    # heaviest first onto the lightest group: 0 | 3, 1 | then 2 onto the group of fewer members
    assert [[s.partition for s in g] for g in groups] == [[0, 2], [1, 3]]
    assert split_partitions([], 3) == []
    with pytest.raises(LogError, match=">= 1 parts"):
        split_partitions(specs, 0)
    with pytest.raises(LogError, match="3 weights for 4 partitions"):
        split_partitions(specs, 2, [1, 2, 3])


def test_a_piece_that_disagrees_with_the_merge_is_refused() -> None:
    source = _table(40, 1)
    share = ReaderShare(source.split(1)[0], 1000)
    share.read()
    epoch = next(merge_log(source, epoch_size=10))
    keys = Epoch(
        epoch.index,
        epoch.seq_start,
        epoch.seq_end,
        epoch.ts,
        epoch.kind,
        epoch.kinds,
        epoch.topics,
        {"a": epoch.events["a"].take(slice(1, None))},  # the first row left out
    )
    with pytest.raises(LogError, match="the source part did not deliver what the merge was told"):
        share.cut(keys)


def test_readers_read_when_asked_or_when_the_workers_span_several_nodes() -> None:
    from engine.executors.ray_executor import spread_reading

    assert spread_reading(0, ["a", "b"])
    assert not spread_reading(0, ["a", "a"])  # one node: the driver reads
    assert not spread_reading(0, [])
    assert spread_reading(2, ["a", "a"])
