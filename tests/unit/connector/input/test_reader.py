"""The bounded reader's bookkeeping: runs, end offsets, gaps and end-of-partition events."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from confluent_kafka import KafkaError
from hypothesis import given
from hypothesis import strategies as st

from connector.errors import BrokerError
from connector.input.reader import KafkaSource, _Pending


@dataclass
class _Msg:
    t: str
    p: int
    o: int
    err: KafkaError | None = None

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def error(self) -> KafkaError | None:
        return self.err


def _sort(
    messages: list[_Msg], ends: dict[tuple[str, int], int]
) -> dict[tuple[str, int], _Pending]:
    source = KafkaSource.__new__(KafkaSource)
    pending = {k: _Pending() for k in ends}
    live = set(ends)
    source._sort_in(messages, pending, ends, live)  # type: ignore[arg-type]
    for k, state in pending.items():
        assert state.done == (k not in live)
    return pending


def _eof(t: str, p: int, offset: int) -> _Msg:
    return _Msg(t, p, offset, KafkaError(KafkaError._PARTITION_EOF))


def test_records_at_or_past_the_end_finish_the_partition_and_are_dropped() -> None:
    msgs = [_Msg("a", 0, o) for o in range(5)] + [_Msg("a", 1, o) for o in (0, 1)]
    pending = _sort(msgs, {("a", 0): 3, ("a", 1): 10})
    assert [m.o for m in pending[("a", 0)].messages] == [0, 1, 2]
    assert pending[("a", 0)].done and pending[("a", 0)].next_offset == 3
    assert not pending[("a", 1)].done and pending[("a", 1)].next_offset == 2


def test_gaps_and_an_end_of_partition_at_the_end_finish_it() -> None:
    # Offsets 3 and 4 are a transaction marker and a compacted record: never delivered.
    msgs = [_Msg("a", 0, 0), _Msg("a", 0, 2), _eof("a", 0, 5)]
    pending = _sort(msgs, {("a", 0): 5})
    assert [m.o for m in pending[("a", 0)].messages] == [0, 2]
    assert pending[("a", 0)].done


def test_an_early_end_of_partition_does_not_finish_it() -> None:
    pending = _sort([_Msg("a", 0, 0), _eof("a", 0, 1)], {("a", 0): 4})
    assert not pending[("a", 0)].done


def test_fatal_errors_stop_the_read() -> None:
    fatal = _Msg("a", 0, 0, KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, fatal=True))
    with pytest.raises(BrokerError, match="a/0"):
        _sort([fatal], {("a", 0): 4})


@given(
    st.lists(st.tuples(st.integers(0, 2), st.integers(1, 5)), max_size=30),
    st.lists(st.integers(1, 40), min_size=3, max_size=3),  # empty ranges never go live
)
def test_runs_match_record_by_record(runs: list[tuple[int, int]], ends_list: list[int]) -> None:
    """Whatever the interleaving of runs, exactly the offsets below each end are kept."""
    next_offset = [0, 0, 0]
    msgs = []
    for p, n in runs:
        for _ in range(n):
            msgs.append(_Msg("t", p, next_offset[p]))
            next_offset[p] += 1
    ends = {("t", p): ends_list[p] for p in range(3)}
    pending = _sort(msgs, ends)
    for p in range(3):
        want = list(range(min(next_offset[p], ends_list[p])))
        assert [m.o for m in pending[("t", p)].messages] == want
        assert pending[("t", p)].done == (next_offset[p] >= ends_list[p])
