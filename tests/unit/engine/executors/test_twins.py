"""Tables written with the same keys and seqs every epoch (twins) share one key index and one
grouping of each epoch's writes: the output must not change, whatever their kinds, values,
windows, epochs and checkpoints, and the sharing must survive a restore."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.examples.social.spam import build_spam_pipeline
from engine.executors.arena import load, store
from engine.executors.batch import BatchExecutor
from engine.executors.runtime import EpochRuntime
from engine.executors.serial import SerialExecutor
from engine.merge import merge_log
from engine.output import canonical_bytes, collect
from engine.pipeline import Builtin, Pipeline, Record
from engine.planner import plan
from engine.state.epoch import EpochGrouping, EpochWrites, SharesKeys
from engine.state.keyindex import KeyIndex
from engine.windows import Hopping, Sliding
from tests.support.budget import examples
from tests.support.checkpoints import check_resumes, every
from tests.support.engine_logs import AGGREGATES, WINDOWS, LogSpec, logs


@st.composite
def twin_pipelines(draw: st.DrawFn) -> Pipeline:
    """Tables of random kinds and windows all written by kind "a" with one key and one
    condition (some of them with another value), read back by both kinds."""
    p = Pipeline("twins")
    key = draw(st.sampled_from(["k1", ("k1", "k2"), "k2"]))
    flag = p.derive(
        "flag",
        on="a",
        dtype="bool",
        fn=lambda e, _v: e.v % 2 == 0,
        batch_fn=lambda c: c["v"] % 2 == 0,
    )
    where = flag if draw(st.booleans()) else None
    looked: dict[str, list[Any]] = {"a": [], "b": []}
    for i in range(draw(st.integers(2, 5))):
        agg = draw(st.sampled_from(AGGREGATES))
        window = draw(WINDOWS)
        if agg == "since_last" and window is None:
            window = Sliding(7)
        value: Any = {"count": None, "since_last": None, "ratio": flag, "distinct": "k2"}.get(
            agg, "v"
        )
        table = p.builtin(
            f"t{i}", agg, on="a", key=key, value=value, where=where, window=window, default=None
        )
        for reader in ("a", "b"):
            looked[reader].append(
                p.lookup(
                    f"look{i}{reader}",
                    on=reader,
                    table=table,
                    key="k1" if key == "k1" else key if reader == "a" else ("k1", "k2"),
                    before=draw(st.booleans()),
                    default=-1,
                    dtype="object",
                )
            )
    for reader, cols in looked.items():
        names = [c.name for c in cols]
        p.emit(
            f"emit_{reader}",
            on=reader,
            output=p.output(f"out_{reader}", key="k1"),
            inputs=cols,
            fn=lambda e, _v, names=names: [Record(e.k1, {n: repr(getattr(e, n)) for n in names})],
        )
    return p


def _bytes(executor: Any, pipeline: Pipeline, log: LogSpec) -> dict[str, bytes]:
    sink = collect()
    executor.run(plan(pipeline), log.source(), sink)
    return canonical_bytes(sink.chunks)


def _indexes(runtime: EpochRuntime) -> dict[str, KeyIndex]:
    return {
        name: table.key_slots()[0]
        for name, table in runtime.vector.items()
        if isinstance(table, SharesKeys)
    }


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=twin_pipelines(), log=logs(), epoch_size=st.sampled_from([1, 3, 10, 10_000]))
def test_twins_answer_like_tables_of_their_own(p: Pipeline, log: LogSpec, epoch_size: int) -> None:
    the_plan = plan(p)
    runtime = EpochRuntime(the_plan)
    # Tables written in one phase share one index (as twins, or followers of one); a table
    # written later must not share an earlier one's: it would be read with slots it has not
    # grown to yet.
    phases = {
        planned.op.table.name: planned.phase
        for planned in the_plan.operators
        if isinstance(planned.op, Builtin)
    }
    indexes = _indexes(runtime)
    assert len(runtime._twins) + len(runtime._leaders) == len(phases) - len(set(phases.values()))
    for name, index in indexes.items():
        assert all((index is other) == (phases[name] == phases[n]) for n, other in indexes.items())
    expected = _bytes(SerialExecutor(), p, log)
    assert _bytes(BatchExecutor(epoch_size=epoch_size), p, log) == expected


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=twin_pipelines(), log=logs(), k=st.sampled_from([1, 2]))
def test_twins_resume_from_any_checkpoint(p: Pipeline, log: LogSpec, k: int) -> None:
    check_resumes(lambda: BatchExecutor(epoch_size=3), lambda: p, log.source, every(k))


def test_which_tables_of_the_spam_pipeline_are_twins() -> None:
    runtime = EpochRuntime(plan(build_spam_pipeline()))
    assert runtime._twins == {
        # The sender's messages, unconditioned: a count, a 30-day count, the first time.
        "msgs": "msgs_30d",
        "first_msg_ts": "msgs_30d",
        # Its messages to non-friends: a count, a 2-hour count, 2-hour distinct recipients.
        "nonfriend_msgs_2h": "nonfriend_msgs",
        "nonfriend_rcpts_2h": "nonfriend_msgs",
    }
    # Conditions (friends, e-mails, responses, spam) and pair keys keep indexes of their own.
    indexes = _indexes(runtime)
    assert len({id(index) for index in indexes.values()}) == len(indexes) - 6


def test_tables_with_different_writes_keep_their_own_keys() -> None:
    p = Pipeline("apart")
    flag = p.derive(
        "flag", on="a", dtype="bool", fn=lambda e, _v: e.v > 0, batch_fn=lambda c: c["v"] > 0
    )
    other = p.derive(
        "other", on="a", dtype="bool", fn=lambda e, _v: e.v > 1, batch_fn=lambda c: c["v"] > 1
    )
    p.count("plain", on="a", key="k1")
    p.sum("plain_sum", on="a", key="k1", value="v", window=Hopping(10, 5))  # twin of plain
    p.count("flagged", on="a", key="k1", where=flag)
    p.max("flagged_max", on="a", key="k1", value="v", where=flag)  # twin of flagged
    p.count("other_count", on="a", key="k1", where=other)  # another condition
    p.count("by_k2", on="a", key="k2")  # another key
    p.count("of_b", on="b", key="k1")  # another kind
    p.count("both", on=["a", "b"], key="k1")  # more writers
    assert EpochRuntime(plan(p))._twins == {"plain_sum": "plain", "flagged_max": "flagged"}


def test_twins_share_again_after_a_restore() -> None:
    from engine.examples.social import generate_social, social_source

    the_plan = plan(build_spam_pipeline())
    data = generate_social(users=50, events=600, days=2, seed=3)
    epochs = list(merge_log(social_source(data), epoch_size=200))
    runtime = EpochRuntime(the_plan)
    runtime.process(epochs[0])
    again = EpochRuntime(the_plan)
    again.restore(runtime.snapshot())
    for twins in (runtime, again):
        indexes = _indexes(twins)
        assert indexes["msgs"] is indexes["msgs_30d"] is indexes["msgs_7d"]
        assert indexes["nonfriend_rcpts_2h"] is indexes["nonfriend_msgs"]
        assert indexes["msgs"].n_slots > 0
    rest = [canonical_bytes(runtime.process(e)) for e in epochs[1:]]
    assert [canonical_bytes(again.process(e)) for e in epochs[1:]] == rest


def test_twins_share_the_grouping_of_an_epoch_unpickled_in_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's epoch arrives pickled, and an unpickled array's int64 dtype is a copy of
    numpy's own: converting it with ``np.asarray(..., dtype=np.int64)`` makes a new view
    each time, and the twins' identity memos never hit (they did not, in every worker)."""
    from engine.examples.social import generate_social, social_source

    built: list[int] = []
    build = EpochWrites.__init__

    def counted(self: EpochWrites, slots: np.ndarray, seqs: np.ndarray) -> None:
        built.append(len(slots))
        build(self, slots, seqs)

    monkeypatch.setattr(EpochWrites, "__init__", counted)
    the_plan = plan(build_spam_pipeline())
    data = generate_social(users=50, events=600, days=2, seed=3)
    epoch = next(iter(merge_log(social_source(data), epoch_size=300)))
    store(tmp_path / "epoch", epoch)
    received = load(tmp_path / "epoch")
    seqs = next(iter(received.events.values())).seq
    assert seqs.dtype == np.int64 and seqs.dtype is not np.dtype(np.int64)  # the premise
    runtime = EpochRuntime(the_plan)
    runtime.process(epoch)
    here = len(built)
    # One grouping per table that takes writes and is no twin (followers take none).
    assert here == len(_indexes(runtime)) - len(runtime._leaders) - len(runtime._twins)
    built.clear()
    EpochRuntime(the_plan).process(received)
    assert len(built) == here


def test_registering_the_same_array_again_gives_the_same_slots_without_probing() -> None:
    index = KeyIndex()
    keys = np.array([2**40, 5, 2**40, -7], dtype=np.int64)
    slots = index.register(keys)
    assert index.register(keys) is slots
    with pytest.raises(ValueError, match="read-only"):
        slots[0] = 3  # a twin would get the change
    copy = keys.copy()
    assert index.register(copy) is not slots
    assert index.register(copy).tolist() == slots.tolist() == [0, 1, 0, 2]
    restored = pickle.loads(pickle.dumps(index))
    assert restored._last is None
    assert restored.register(keys).tolist() == [0, 1, 0, 2]


def test_a_grouping_is_built_once_for_the_same_arrays() -> None:
    grouping = EpochGrouping()
    slots, seqs = np.array([1, 0, 1]), np.array([3, 4, 5])
    ep = grouping.of(slots, seqs)
    assert grouping.of(slots, seqs) is ep
    assert grouping.of(slots.copy(), seqs) is not ep
    assert pickle.loads(pickle.dumps(grouping)).of(slots, seqs) is not ep


def test_an_index_pickled_before_the_memo_existed_restores() -> None:
    index = KeyIndex()
    index.register(np.array([2**40, 5], dtype=np.int64))
    # What pickle stored for a slots-only object without __getstate__: (None, slots).
    slots = {name: getattr(index, name) for name in KeyIndex.__slots__ if name != "_last"}
    old = KeyIndex.__new__(KeyIndex)
    old.__setstate__((None, slots))
    assert old.lookup(np.array([5, 2**40, 7], dtype=np.int64)).tolist() == [1, 0, -1]
    assert old.register(np.array([7], dtype=np.int64)).tolist() == [2]
