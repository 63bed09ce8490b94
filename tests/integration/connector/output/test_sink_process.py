"""The sink process: same records as the sink in process, errors and deaths reach the parent,
nothing outlives it (starts processes, writes to the session broker)."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from connector.errors import SerdeError, SinkError, WatchdogError
from connector.observability.metrics import JobMetrics
from connector.output.sink import KafkaSink, OutputTarget, ResumePoint, output_producer_settings
from connector.output.sink_process import SinkProcess, SinkSettings
from connector.serde.avro import load_schema
from connector.serde.values import value_encoder
from engine.examples.social.spam import SCORE_FIELDS
from engine.executors.arena import default_shm_dir
from engine.executors.base import RunStats
from tests.support.broker import NewTopic, ReadRange
from tests.support.procs import running
from tests.support.score_epochs import (
    CountingProducer,
    score_chunk,
    score_epoch,
    score_settings,
    score_target,
)
from tooling.broker import LocalBroker


@contextlib.contextmanager
def _checked_sink(broker: LocalBroker, topic: str, **kw: Any) -> Iterator[tuple[SinkProcess, int]]:
    """A sink process whose child must be gone, and its run directory removed, afterwards."""
    before = _run_dirs()
    sink = SinkProcess(score_settings(broker, topic), **kw)
    pid = sink.pid
    assert pid is not None
    try:
        yield sink, pid
    finally:
        sink.close()
    assert not running(pid)
    assert _run_dirs() == before


def _run_dirs() -> set[Path]:
    return set(default_shm_dir().glob(f"restream-{os.getpid()}-*"))


@pytest.mark.parametrize("processes", [1, 2, 3])
def test_writes_what_the_sink_in_process_writes(
    broker: LocalBroker, new_topic: NewTopic, read_range: ReadRange, processes: int
) -> None:
    """Split over processes by partition or not, the same records, partitions, order and
    headers; a resume point skips in the partition's own process; marks cover every
    partition."""
    inline_topic, child_topic = new_topic(partitions=3), new_topic(partitions=3)
    # Resume inside partition 1 of epoch 1: both sinks must skip the same records.
    resume = {(child_topic, 1): ResumePoint(seq=1_010, count=1)}
    epochs = [(score_epoch(i, 1_000), 600 if i != 2 else 0) for i in range(4)]

    producer = CountingProducer(broker.bootstrap)
    inline = KafkaSink(
        lambda: producer,
        {"scores": score_target(inline_topic)},
        job="job-1",
        resume={(inline_topic, 1): ResumePoint(seq=1_010, count=1)},
    )
    for epoch, rows in epochs:
        inline.write([score_chunk(epoch, rows)] if rows else [], epoch)
    producer.flush()

    stats = RunStats("parallel")
    metrics = JobMetrics(job="job-1", pipeline="spam", executor="parallel")
    seen: list[int] = []
    with SinkProcess(
        score_settings(broker, child_topic, resume),
        processes=processes,
        metrics=metrics,
        stats=stats,
        on_epoch=lambda e: seen.append(e.index),
    ) as sink:
        assert len(set(sink.pids)) == processes
        for epoch, rows in epochs:
            sink.write([score_chunk(epoch, rows)] if rows else [], epoch)
        sink.flush(mark=True)
        assert sink.first_write_at is not None and sink.first_write_at <= time.monotonic()
        assert set(sink.marks) == {(child_topic, p) for p in range(3)}
        # Every epoch's files are gone once written: /dev/shm does not fill up as a run goes.
        left = [f.name for f in sink._dir.path.iterdir() if f.name.startswith(("out", "coords"))]
        assert left == []

    assert seen == [0, 1, 2, 3]
    assert sink.written == {child_topic: inline.written[inline_topic]}
    assert (
        sink.skipped == {child_topic: inline.skipped[inline_topic]}
        and sink.skipped[child_topic] > 0
    )
    assert stats.seconds["write"] > 0
    assert metrics.output.labels(child_topic)._value.get() == sink.written[child_topic]

    # The inline producer's partitions say how many records each partition must hold.
    counts = np.bincount(producer.partitions, minlength=3)
    ranges = {p: (0, int(n)) for p, n in enumerate(counts) if n}

    def records(topic: str) -> list[tuple[object, ...]]:
        rows = read_range(topic, ranges)
        return [(r.partition, r.key, r.value, r.timestamp, r.headers) for r in rows]

    expected = records(inline_topic)
    assert len(expected) == sum(inline.written.values()) == counts.sum()
    assert records(child_topic) == expected
    # Each mark is the partition's last record (its seq), whichever process wrote it.
    for p, (_, end) in ranges.items():
        (last,) = read_range(child_topic, {p: (end - 1, end)})
        mark = sink.marks[(child_topic, p)]
        assert (mark.offset, mark.seq) == (end - 1, int(dict(last.headers)["restream.seq"]))


def _fails_fast(sink: SinkProcess, pattern: str) -> None:
    """Go on writing epochs 1, 2, ... and flush, after a child was killed: a call fails
    within 10 s with the :class:`SinkError` matching ``pattern``."""
    started = time.monotonic()
    with pytest.raises(SinkError, match=pattern):
        for index in range(1, 100):
            later = score_epoch(index, 1_000)
            sink.write([score_chunk(later, 500)], later)
        sink.flush()
    assert time.monotonic() - started < 10


def test_an_error_in_the_child_is_raised_in_the_parent_with_its_type(
    broker: LocalBroker, new_topic: NewTopic
) -> None:
    with _checked_sink(broker, new_topic(partitions=3)) as (sink, _pid):
        epoch = score_epoch(0, 100)
        # The child finds the missing field; the parent learns it at its next call.
        sink.write([score_chunk(epoch, 10, fields=SCORE_FIELDS[:-1])], epoch)
        with pytest.raises(SerdeError, match="lacks fields \\['sender_flagged'\\]"):
            sink.flush()


def test_a_killed_child_fails_the_next_call_fast_and_leaves_nothing(
    broker: LocalBroker, new_topic: NewTopic
) -> None:
    with _checked_sink(broker, new_topic(partitions=3)) as (sink, pid):
        epoch = score_epoch(0, 1_000)
        sink.write([score_chunk(epoch, 500)], epoch)
        os.kill(pid, signal.SIGKILL)
        _fails_fast(
            sink,
            rf"the sink process \(pid {pid}\) was killed by SIGKILL \(out of memory\? "
            r"its peak RSS was at least [\d,]+ MiB",
        )


def test_close_with_epochs_pending_stops_the_child(
    broker: LocalBroker, new_topic: NewTopic
) -> None:
    with _checked_sink(broker, new_topic(partitions=3)) as (sink, _pid):
        epoch = score_epoch(0, 1_000)
        sink.write([score_chunk(epoch, 500)], epoch)
        sink.close()
        sink.close()  # idempotent


def test_max_pending_must_be_positive(broker: LocalBroker) -> None:
    with pytest.raises(ValueError, match="max_pending"):
        SinkProcess(score_settings(broker, "unused"), max_pending=0)


def test_the_child_leaves_sigterm_and_ctrl_c_to_the_parent(
    broker: LocalBroker, new_topic: NewTopic
) -> None:
    # A SIGTERM to the process group must not cost the parent the flush of its checkpoint.
    with SinkProcess(score_settings(broker, new_topic(partitions=3))) as sink:
        pid = sink.pid
        assert pid is not None
        sink.flush()  # answered: the child is in its loop, its handlers set
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGINT)
        epoch = score_epoch(0, 300)
        sink.write([score_chunk(epoch, 100)], epoch)
        sink.flush()
        assert sum(sink.written.values()) == 100


def test_a_stopped_child_is_stopped_after_the_timeout(
    broker: LocalBroker, new_topic: NewTopic
) -> None:
    with _checked_sink(broker, new_topic(partitions=3), timeout_s=1.0) as (sink, pid):
        sink.flush()  # answered: the child is up
        epoch = score_epoch(0, 1_000)
        sink.write([score_chunk(epoch, 500)], epoch)
        os.kill(pid, signal.SIGSTOP)  # alive, but never answers again
        started = time.monotonic()
        with pytest.raises(
            WatchdogError,
            match=rf"the sink process \(pid {pid}\) made no progress for 1 s while writing "
            r"epoch 0 \(seq 0\.\.999\): it is stopped \(SIGSTOP\?\)",
        ) as err:
            sink.flush()
        assert err.value.process == "sink"
        assert time.monotonic() - started < 5


class _SlowEncoder:
    """The real encoder after a few seconds' wait (as encoding a huge epoch would take): the
    child's main thread is inside one step all that time, while its heartbeats go on."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._inner = value_encoder("avro", load_schema("social/SpamScore"))

    def encode(self, columns: Any) -> list[bytes]:
        time.sleep(self._seconds)
        return self._inner.encode(columns)


def test_a_busy_child_that_heartbeats_is_no_stall(broker: LocalBroker, new_topic: NewTopic) -> None:
    """Silence, not a long step, trips the watchdog: a step that takes the child three times
    the timeout is fine while its heartbeats come (ten a timeout: room for a loaded machine)."""
    topic = new_topic(partitions=3)
    target = OutputTarget("scores", topic, 3, SCORE_FIELDS, _SlowEncoder(3.0))  # type: ignore[arg-type]
    settings = replace(score_settings(broker, topic), targets={"scores": target}, heartbeat_s=0.1)
    with SinkProcess(settings, timeout_s=1.0) as sink:
        sink.flush()
        epoch = score_epoch(0, 3_000)
        sink.write([score_chunk(epoch, 2_000)], epoch)
        started = time.monotonic()
        sink.flush()  # waits for the slow step
        assert time.monotonic() - started > 2.0, "the step was too short to prove anything"
        assert sum(sink.written.values()) == 2_000


@pytest.mark.parametrize("processes", [1, 3])
def test_each_child_ends_when_the_parents_end_of_its_pipe_closes(
    broker: LocalBroker, new_topic: NewTopic, processes: int
) -> None:
    # What a parent's death looks like to a child when PR_SET_PDEATHSIG is not there: it
    # works only if each child closed the copies of the parent's ends that a fork gave it,
    # its siblings' included.
    sink = SinkProcess(score_settings(broker, new_topic(partitions=3)), processes=processes)
    assert len(sink.pids) == processes
    sink.flush()
    for child in sink._children:
        child.to_child.close()
    for child in sink._children:
        child.process.join(10)
        assert child.process.exitcode == 0
    sink._closed = True  # nothing left for close() to stop
    for child in sink._children:
        child.from_child.close()
    sink._dir.remove()


class _FailingEncoder:
    """An encoder with a bug (not a connector error)."""

    def encode(self, columns: Any) -> list[bytes]:
        raise RuntimeError("boom in the encoder")


def test_a_bug_in_the_child_is_a_sink_error_with_its_traceback_logged(
    broker: LocalBroker, new_topic: NewTopic, caplog: pytest.LogCaptureFixture
) -> None:
    target = OutputTarget("scores", new_topic(partitions=3), 3, SCORE_FIELDS, _FailingEncoder())  # type: ignore[arg-type]
    settings = SinkSettings(
        broker.bootstrap, output_producer_settings(), {"scores": target}, "job-1", {}
    )
    with SinkProcess(settings) as sink:
        epoch = score_epoch(0, 100)
        sink.write([score_chunk(epoch, 10)], epoch)
        with (
            caplog.at_level("ERROR", logger="connector.output.sink_process"),
            pytest.raises(SinkError, match="RuntimeError: boom in the encoder"),
        ):
            sink.flush()
    assert "Traceback (most recent call last)" in caplog.text
    assert 'raise RuntimeError("boom in the encoder")' in caplog.text


def test_flush_then_calls_back_in_order_without_making_the_caller_wait(
    broker: LocalBroker, new_topic: NewTopic
) -> None:
    done: list[int] = []
    with SinkProcess(score_settings(broker, new_topic(partitions=3))) as sink:
        for index in range(4):
            epoch = score_epoch(index, 1_000)
            sink.write([score_chunk(epoch, 500)], epoch)
            sink.flush_then(functools.partial(done.append, index))
            # Asked, not answered: the call back comes from a later write or flush.
            assert index not in done
        sink.flush()
        assert done == [0, 1, 2, 3]
        assert sum(sink.written.values()) == 4 * 500


def test_a_failing_child_runs_none_of_the_callbacks_still_pending(
    broker: LocalBroker, new_topic: NewTopic
) -> None:
    done: list[int] = []
    with SinkProcess(score_settings(broker, new_topic(partitions=3))) as sink:
        epoch = score_epoch(0, 100)
        sink.write([score_chunk(epoch, 10)], epoch)
        sink.flush_then(lambda: done.append(0))
        sink.flush()  # the first flush is answered: its callback ran
        later = score_epoch(1, 100)
        sink.write([score_chunk(later, 10, fields=SCORE_FIELDS[:-1])], later)  # fails in the child
        sink.flush_then(lambda: done.append(1))  # a snapshot that must never be written
        with pytest.raises(SerdeError):
            sink.flush()
    assert done == [0]


def test_an_exception_in_a_callback_comes_out_of_the_next_call(
    broker: LocalBroker, new_topic: NewTopic
) -> None:
    def fail() -> None:
        raise OSError("disk full while writing the snapshot")

    with SinkProcess(score_settings(broker, new_topic(partitions=3))) as sink:
        sink.flush_then(fail)
        with pytest.raises(OSError, match="disk full"):
            sink.flush()


def test_a_killed_child_of_several_is_named_with_its_partitions(
    broker: LocalBroker, new_topic: NewTopic
) -> None:
    topic = new_topic(partitions=3)
    before = _run_dirs()
    sink = SinkProcess(score_settings(broker, topic), processes=2)
    try:
        pids = sink.pids
        epoch = score_epoch(0, 1_000)
        sink.write([score_chunk(epoch, 500)], epoch)
        victim = pids[1]
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        _fails_fast(
            sink,
            # Round-robin: the second process owns partition 1 of the topic's three.
            rf"the sink process 2 of 2 \(pid {victim}, output partitions {topic}/1\) was "
            r"killed by SIGKILL \(out of memory\?",
        )
    finally:
        sink.close()
    # The sibling is stopped with it, and nothing is left in /dev/shm.
    assert not any(running(pid) for pid in pids if pid is not None)
    assert _run_dirs() == before


def test_a_stopped_child_of_several_trips_the_watchdog(
    broker: LocalBroker, new_topic: NewTopic
) -> None:
    topic = new_topic(partitions=3)
    with SinkProcess(score_settings(broker, topic), processes=3, timeout_s=1.0) as sink:
        sink.flush()  # answered: every child is up
        victim = sink.pids[2]
        assert victim is not None
        os.kill(victim, signal.SIGSTOP)  # alive, but never answers again
        epoch = score_epoch(0, 1_000)
        started = time.monotonic()
        with pytest.raises(
            WatchdogError,
            match=rf"the sink process 3 of 3 \(pid {victim}, output partitions {topic}/2\) made "
            r"no progress for 1 s while writing epoch 0 \(seq 0\.\.999\): it is stopped",
        ):
            sink.write([score_chunk(epoch, 500)], epoch)
            sink.flush()
        assert time.monotonic() - started < 5
    assert not running(victim)


def test_a_checkpoints_marks_wait_for_every_child(broker: LocalBroker, new_topic: NewTopic) -> None:
    """A flush's callback runs once every child answered it, and sees the marks of that
    flush for every partition, not a later flush's: a slow child holds the callback back."""
    topic = new_topic(partitions=3)
    seen: list[dict[tuple[str, int], int | None]] = []
    # Two epochs may wait for a child: the writes below do not wait for the stopped one.
    with SinkProcess(score_settings(broker, topic), processes=3, max_pending=2) as sink:
        sink.flush()
        slow = sink.pids[0]
        assert slow is not None
        os.kill(slow, signal.SIGSTOP)
        try:
            for index in range(2):
                epoch = score_epoch(index, 1_000)
                sink.write([score_chunk(epoch, 600)], epoch)
                sink.flush_then(lambda: seen.append({k: m.seq for k, m in sink.marks.items()}))
            time.sleep(1.0)  # the others answer both flushes meanwhile
            sink._collect(block=False)
            assert seen == [], "called back before every child flushed"
        finally:
            os.kill(slow, signal.SIGCONT)
        sink.flush()
    first, second = seen
    assert set(first) == set(second) == {(topic, p) for p in range(3)}
    # The first callback saw each partition's last record of epoch 0, the second of epoch 1.
    assert all(s is not None and s < 1_000 for s in first.values())
    assert all(s is not None and s >= 1_000 for s in second.values())
