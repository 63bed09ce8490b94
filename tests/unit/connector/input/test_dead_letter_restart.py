"""Dead letters of a restarted job: the records an earlier attempt already dead-lettered (up to
and including the greatest offset per input partition) are counted but not written again;
every later one is written once, with its source."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from connector.input.dead_letters import BadRecordError, BadRecords
from connector.serde.values import RecordProblem


@dataclass
class _Message:
    t: str
    p: int
    o: int

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def value(self) -> bytes:
        return b"\x02"

    def key(self) -> bytes:
        return b"k"

    def headers(self) -> list[tuple[str, bytes]]:
        return [("origin", b"x")]

    def timestamp(self) -> tuple[int, int]:
        return (1, 1000 + self.o)


class _Producer:
    def __init__(self) -> None:
        self.sources: list[str] = []

    def produce_record(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
        timestamp: int | None = None,
    ) -> None:
        found = dict(headers or [])
        assert topic == "dlq" and found["restream.job"] == b"j1" and found["origin"] == b"x"
        self.sources.append((found["restream.source"] or b"").decode())


PROBLEM = RecordProblem(0, "undecodable", "truncated")


def _handle(
    already: dict[tuple[str, int], int] | None, messages: list[_Message]
) -> tuple[BadRecords, _Producer]:
    producer = _Producer()
    bad = BadRecords(
        "dead-letter", job="j1", topic="dlq", producer=lambda: producer, already=already
    )
    for m in messages:
        bad.handle(m, PROBLEM)  # type: ignore[arg-type]
    return bad, producer


def test_a_restart_writes_only_the_dead_letters_after_those_already_written() -> None:
    # The crashed attempt dead-lettered in/0 up to offset 10 and nothing of in/1.
    messages = [_Message("in", 0, o) for o in (4, 9, 10, 11, 30)] + [_Message("in", 1, 2)]
    bad, producer = _handle({("in", 0): 10}, messages)
    assert producer.sources == ["in/0@11", "in/0@30", "in/1@2"]
    assert bad.skipped == 3  # offsets 4, 9 and 10: offset 10 itself is already there
    assert bad.counts == {"undecodable": 6}  # counted either way


def test_a_first_run_writes_every_dead_letter() -> None:
    messages = [_Message("in", 0, o) for o in (0, 1, 2)]
    bad, producer = _handle(None, messages)
    assert producer.sources == ["in/0@0", "in/0@1", "in/0@2"]
    assert bad.skipped == 0


@pytest.mark.parametrize("done", [0, 5, 6, 7])
def test_restarts_after_any_point_give_the_uninterrupted_dead_letters(done: int) -> None:
    offsets = [0, 3, 5, 6, 8]
    messages = [_Message("in", 0, o) for o in offsets]
    _, uninterrupted = _handle(None, messages)
    # The crashed attempt wrote the dead letters up to offset ``done``; the restart re-reads
    # every record (from an earlier checkpoint).
    before = [s for s, o in zip(uninterrupted.sources, offsets, strict=True) if o <= done]
    written = [o for o in offsets if o <= done]
    _, again = _handle({("in", 0): max(written)} if written else None, messages)
    assert before + again.sources == uninterrupted.sources


def test_the_fail_policy_names_the_record() -> None:
    bad = BadRecords("fail", job="j1", topic=None, producer=None)
    with pytest.raises(BadRecordError, match=r"bad record at in/0@3 \(undecodable\): truncated"):
        bad.handle(_Message("in", 0, 3), PROBLEM)  # type: ignore[arg-type]
    assert bad.counts == {"undecodable": 1}
