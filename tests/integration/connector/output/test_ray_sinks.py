"""Sink actors (connector.output.ray_sinks) on the session's two-node Ray cluster, writing to
the session broker: the same records as the sink in process from the workers' unmerged
shares, resume points skipped where a partition is written, marks for every partition, and
an actor that dies or stops fails the run naming it."""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition

from connector.errors import SerdeError, SinkError, WatchdogError
from connector.observability.metrics import JobMetrics
from connector.output.ray_sinks import RaySinks
from connector.output.sink import KafkaSink, ResumePoint
from engine.examples.social.spam import SCORE_FIELDS
from engine.executors.base import RunStats
from engine.output import OutputChunk, ShareSink, split_output
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

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _shares(chunk: OutputChunk, workers: int) -> list[list[OutputChunk]]:
    """``chunk`` dealt to ``workers`` by sender, as sharded workers would emit it: each
    share in serial order, the shares interleaved by seq."""
    out = []
    for w in range(workers):
        rows = np.flatnonzero(chunk.keys % workers == w)
        out.append(
            [
                OutputChunk(
                    chunk.output,
                    chunk.seq[rows],
                    chunk.keys[rows],
                    {n: c[rows] for n, c in chunk.columns.items()},
                )
            ]
        )
    return out


def _write(sink: RaySinks, index: int, rows: int, workers: int = 2) -> None:
    import ray

    epoch = score_epoch(index, 1_000)
    shares = _shares(score_chunk(epoch, rows), workers) if rows else [[] for _ in range(workers)]
    # Each worker cuts its share with the sink's router, as the ray executor's workers do.
    parts = [split_output(s, sink.router) if sink.router is not None else [s] for s in shares]
    sink.write_shares([[ray.put(p) for p in worker] for worker in parts], epoch, rows)


@pytest.mark.parametrize("actors", [1, 2, 3])
def test_writes_what_the_sink_in_process_writes_from_unmerged_shares(
    broker: LocalBroker, new_topic: NewTopic, read_range: ReadRange, actors: int
) -> None:
    """From two workers' shares of every epoch, each cut by the sink's router into a part
    per actor: the same records, partitions, order and headers as one sink in process given
    the merged chunks; a resume point skips in the partition's own actor; marks cover every
    partition; the counts reach the metrics."""
    inline_topic, actor_topic = new_topic(partitions=3), new_topic(partitions=3)
    epochs = [(i, 600 if i != 2 else 0) for i in range(4)]
    inline_producer = CountingProducer(broker.bootstrap)
    inline = KafkaSink(
        lambda: inline_producer,
        {"scores": score_target(inline_topic)},
        job="job-1",
        resume={(inline_topic, 1): ResumePoint(seq=1_010, count=1)},
    )
    for index, rows in epochs:
        epoch = score_epoch(index, 1_000)
        inline.write([score_chunk(epoch, rows)] if rows else [], epoch)
    inline_producer.flush()

    stats = RunStats("ray")
    metrics = JobMetrics(job="job-1", pipeline="spam", executor="ray")
    seen: list[int] = []
    resume = {(actor_topic, 1): ResumePoint(seq=1_010, count=1)}
    with RaySinks(
        score_settings(broker, actor_topic, resume),
        actors=actors,
        metrics=metrics,
        stats=stats,
        on_epoch=lambda e: seen.append(e.index),
    ) as sink:
        assert isinstance(sink, ShareSink)
        assert len({p.pid for p in sink.places if p is not None}) == actors
        if actors > 1:  # round robin over the cluster's two nodes
            assert len({p.node for p in sink.places if p is not None}) == 2
        for index, rows in epochs:
            _write(sink, index, rows)
        sink.flush(mark=True)
        assert set(sink.marks) == {(actor_topic, p) for p in range(3)}
        assert sink.first_write_at is not None

    assert seen == [0, 1, 2, 3]
    assert sink.written == {actor_topic: inline.written[inline_topic]}
    assert sink.skipped == {actor_topic: inline.skipped[inline_topic]}
    assert sink.skipped[actor_topic] > 0
    assert stats.seconds["write"] > 0
    assert metrics.output.labels(actor_topic)._value.get() == sink.written[actor_topic]

    counts = np.bincount(inline_producer.partitions, minlength=3)
    ranges = {p: (0, int(n)) for p, n in enumerate(counts) if n}

    def records(topic: str) -> list[tuple[object, ...]]:
        rows = read_range(topic, ranges)
        return [(r.partition, r.key, r.value, r.timestamp, r.headers) for r in rows]

    expected = records(inline_topic)
    assert len(expected) == sum(inline.written.values())
    assert records(actor_topic) == expected
    for p, (_, end) in ranges.items():
        (last,) = read_range(actor_topic, {p: (end - 1, end)})
        mark = sink.marks[(actor_topic, p)]
        assert (mark.offset, mark.seq) == (end - 1, int(dict(last.headers)["restream.seq"]))


def test_an_error_in_an_actor_is_raised_by_the_driver_as_itself(
    broker: LocalBroker, new_topic: NewTopic
) -> None:
    topic = new_topic(partitions=3)
    with RaySinks(score_settings(broker, topic), actors=2) as sink:
        epoch = score_epoch(0, 100)
        chunk = score_chunk(epoch, 10, fields=SCORE_FIELDS[:-1])
        sink.write([chunk], epoch)
        with pytest.raises(SerdeError, match="lacks fields \\['sender_flagged'\\]"):
            sink.flush()


def test_an_actor_that_failed_writes_no_later_epoch(
    broker: LocalBroker, new_topic: NewTopic
) -> None:
    """Epoch 1 fails in the actor (a record lacks a schema field) while epoch 2 waits
    behind it: epoch 2 must not be written, or the partition would hold it after a gap that a
    resume, which skips up to a partition's last record, never fills."""
    topic = new_topic(partitions=3)
    with RaySinks(score_settings(broker, topic), actors=1) as sink:
        _write(sink, 0, 300)
        sink.flush()
        bad = score_epoch(1, 1_000)
        with pytest.raises(SerdeError, match="lacks fields"):
            sink.write([score_chunk(bad, 300, fields=SCORE_FIELDS[:-1])], bad)
            _write(sink, 2, 300)  # queued behind the failing epoch
            sink.flush()
        written = dict(sink.written)
    assert written == {topic: 300}
    seqs = [int(dict(r.headers())["restream.seq"]) for r in _everything(broker, topic)]
    assert len(seqs) == 300 and max(seqs) < 1_000


def _everything(broker: LocalBroker, topic: str) -> list[Any]:
    """Every record of ``topic``'s three partitions, read until none comes for 3 s."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"restream-test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    out = []
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
        while (message := consumer.poll(3.0)) is not None:
            assert message.error() is None, message.error()
            out.append(message)
    finally:
        consumer.close()
    return out


def test_a_killed_actor_fails_the_run_within_seconds_naming_it(
    broker: LocalBroker, new_topic: NewTopic
) -> None:
    topic = new_topic(partitions=3)
    with RaySinks(score_settings(broker, topic), actors=2) as sink:
        _write(sink, 0, 500)
        sink.flush()
        victim = sink.places[1]
        assert victim is not None
        os.kill(victim.pid, signal.SIGKILL)
        started = time.monotonic()
        pattern = (
            rf"the sink actor 2 of 2 \(node \S+, pid {victim.pid}, output partitions "
            rf"{topic}/1\) died"
        )
        with pytest.raises(SinkError, match=pattern):
            for index in range(1, 100):
                _write(sink, index, 500)
            sink.flush()
        assert time.monotonic() - started < 10
    assert not running(victim.pid)


def test_a_stopped_actor_fails_the_run_after_the_timeout_and_is_killed(
    broker: LocalBroker, new_topic: NewTopic
) -> None:
    topic = new_topic(partitions=3)
    with RaySinks(score_settings(broker, topic), actors=2, timeout_s=2.0) as sink:
        _write(sink, 0, 500)
        sink.flush()
        victim = sink.places[0]
        assert victim is not None
        os.kill(victim.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(WatchdogError, match=r"the sink actor 1 of 2 .* made no progress"):
                for index in range(1, 100):
                    _write(sink, index, 500)
                sink.flush()
            assert time.monotonic() - started < 2.0 + 8
        finally:
            if running(victim.pid):
                os.kill(victim.pid, signal.SIGCONT)
    deadline = time.monotonic() + 10
    while running(victim.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(victim.pid)
