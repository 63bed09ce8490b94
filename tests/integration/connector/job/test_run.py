"""`restream run` end to end: topics in, the spam backtest, output equal to the oracle's."""

from __future__ import annotations

import gc
import io
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

import connector.job.run as run_module
from connector.config import RunConfig
from connector.errors import ConfigError, SinkError
from connector.job.run import run_job
from connector.kafka.partitioner import java_partition
from connector.output.headers import identity
from connector.output.ray_sinks import RaySinks
from connector.runtime.gcpolicy import REPLAY_THRESHOLDS
from connector.serde.avro import load_schema
from engine.examples.social.data import SocialData, generate_social
from engine.examples.social.source import social_source
from engine.examples.social.spam import build_spam_pipeline
from engine.executors.serial import SerialExecutor
from engine.output import collect
from engine.planner import plan
from tests.support.broker import ReadRange
from tooling.broker import LocalBroker
from tooling.generate import write_social

PARTITIONS = 3


def _ends(data: SocialData, topics: tuple[str, str]) -> str:
    parts = []
    for topic, column in (
        (topics[0], data.messages.partition),
        (topics[1], data.friendships.partition),
    ):
        for p, n in enumerate(np.bincount(column, minlength=PARTITIONS).tolist()):
            parts.append(f"{topic}/{p}={n}")
    return "offsets:" + ",".join(parts)


def _expected(
    data: SocialData, topics: tuple[str, str]
) -> dict[int, list[tuple[bytes, bytes, bytes]]]:
    """The serial oracle's output, encoded independently: per partition (key, value, seq)."""
    sink = collect()
    source = social_source(data, messages_topic=topics[0], friendships_topic=topics[1])
    SerialExecutor().run(plan(build_spam_pipeline()), source, sink)
    schema = load_schema("social/SpamScore")
    out: dict[int, list[tuple[bytes, bytes, bytes]]] = {p: [] for p in range(PARTITIONS)}
    for chunk in sink.chunks:
        for seq, (key, record) in zip(chunk.seq.tolist(), chunk.records(), strict=True):
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, schema.parsed, record)
            key_bytes = str(key).encode()
            out[java_partition(key_bytes, PARTITIONS)].append(
                (key_bytes, buf.getvalue(), str(seq).encode())
            )
    return out


@pytest.fixture(scope="module")
def social() -> SocialData:
    return generate_social(users=800, events=12_000, days=4, seed=7, partitions=PARTITIONS)


def _write(broker: LocalBroker, data: SocialData) -> tuple[str, str]:
    prefix = f"restream-test-{uuid.uuid4().hex[:10]}"
    topics = (f"{prefix}.messages", f"{prefix}.friendships")
    write_social(
        data,
        bootstrap=broker.bootstrap,
        messages_topic=topics[0],
        friendships_topic=topics[1],
        partitions=PARTITIONS,
    )
    return topics


def _config(
    broker: LocalBroker, data: SocialData, topics: tuple[str, str], **kw: object
) -> RunConfig:
    values: dict[str, object] = {
        "job_id": f"job-{uuid.uuid4().hex[:10]}",
        "bootstrap_servers": broker.bootstrap,
        "pipeline": "social-spam",
        "inputs": ((topics[0], "message"), (topics[1], "friendship")),
        "end": _ends(data, topics),
        "workers": 2,
        "epoch_size": 2_000,
        "progress": "none",
    }
    values.update(kw)
    return RunConfig(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("executor", ["parallel", "batch", "ray"])
def test_spam_backtest_output_topic_equals_the_serial_oracle(
    broker: LocalBroker,
    social: SocialData,
    read_range: ReadRange,
    executor: str,
    request: pytest.FixtureRequest,
) -> None:
    if executor == "ray":
        # Two actors of one CPU, one on each node of the session's local cluster.
        request.getfixturevalue("ray_cluster")
    topics = _write(broker, social)
    config = _config(broker, social, topics, executor=executor)
    report = run_job(config, out=io.StringIO())
    output = f"{config.job_id}.scores"
    expected = _expected(social, topics)
    total = sum(len(v) for v in expected.values())
    assert report.events == len(social.messages) + len(social.friendships)
    assert report.outputs == {output: total}
    assert report.bad_records == {}
    got = read_range(output, {p: (0, len(expected[p])) for p in range(PARTITIONS)})
    for p in range(PARTITIONS):
        records = [r for r in got if r.partition == p]
        assert [(r.key, r.value, dict(r.headers)["restream.seq"]) for r in records] == expected[p]
        for r in records:
            headers = dict(r.headers)
            assert headers["restream.job"] == config.job_id.encode()
            source_topic, _, rest = bytes(headers["restream.source"] or b"").decode().partition("/")
            assert source_topic == topics[0] and "@" in rest


def test_refuses_an_output_topic_holding_another_jobs_records(
    broker: LocalBroker, social: SocialData
) -> None:
    topics = _write(broker, social)
    first = _config(broker, social, topics, executor="batch")
    run_job(first, out=io.StringIO())
    second = _config(
        broker, social, topics, executor="batch", outputs={"scores": f"{first.job_id}.scores"}
    )
    with pytest.raises(ConfigError, match=f"written by job '{first.job_id}'"):
        run_job(second, out=io.StringIO())
    # Refused before anything was created: not even its dead-letter topic.
    topics = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).topics
    assert f"{second.job_id}.dead-letter" not in topics


def test_rerun_of_the_same_job_skips_what_is_written(
    broker: LocalBroker, social: SocialData, read_range: ReadRange
) -> None:
    topics = _write(broker, social)
    config = _config(broker, social, topics, executor="batch")
    first = run_job(config, out=io.StringIO())
    again = run_job(config, out=io.StringIO())
    output = f"{config.job_id}.scores"
    assert again.outputs.get(output, 0) == 0
    assert again.skipped == first.outputs
    expected = _expected(social, topics)
    got = read_range(output, {p: (0, len(expected[p])) for p in range(PARTITIONS)})
    assert len(got) == sum(len(v) for v in expected.values())


def test_the_executor_runs_with_the_replay_collector_thresholds(
    broker: LocalBroker, social: SocialData, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, int, int]] = []
    make = run_module._executor

    def recording(config: RunConfig, events: int | None = None) -> object:
        executor = make(config, events)
        run = executor.run

        def run_and_record(*args: object, **kwargs: object) -> object:
            seen.append(gc.get_threshold())
            return run(*args, **kwargs)  # type: ignore[arg-type]

        executor.run = run_and_record  # type: ignore[method-assign,assignment]
        return executor

    monkeypatch.setattr(run_module, "_executor", recording)
    before = gc.get_threshold()
    topics = _write(broker, social)
    run_job(_config(broker, social, topics, executor="batch"), out=io.StringIO())
    assert seen == [REPLAY_THRESHOLDS]
    assert gc.get_threshold() == before


@pytest.mark.parametrize("mode", ["compact", "none"])
def test_every_header_mode_writes_the_oracles_records(
    broker: LocalBroker, social: SocialData, read_range: ReadRange, mode: str
) -> None:
    topics = _write(broker, social)
    config = _config(broker, social, topics, executor="batch", output_headers=mode)
    run_job(config, out=io.StringIO())
    expected = _expected(social, topics)
    output = f"{config.job_id}.scores"
    got = read_range(output, {p: (0, len(expected[p])) for p in range(PARTITIONS)})
    for p in range(PARTITIONS):
        records = [r for r in got if r.partition == p]
        assert [(r.key, r.value) for r in records] == [(k, v) for k, v, _ in expected[p]]
        if mode == "none":
            assert all(not r.headers for r in records)
        else:
            seqs = [identity(r.headers) for r in records]
            assert seqs == [(config.job_id, int(s), None) for _, _, s in expected[p]]


def test_without_headers_a_rerun_needs_the_jobs_checkpoints(
    broker: LocalBroker, social: SocialData, tmp_path: Path
) -> None:
    topics = _write(broker, social)
    bare = _config(broker, social, topics, executor="batch", output_headers="none")
    run_job(bare, out=io.StringIO())
    # Nothing says the records are its own: refused before anything is written.
    with pytest.raises(ConfigError, match="already hold records") as refused:
        run_job(bare, out=io.StringIO())
    assert refused.value.field.startswith("output_headers (--output-headers")
    # With checkpoints, its manifest makes them its own (a resume then skips by count).
    config = _config(
        broker,
        social,
        topics,
        executor="batch",
        output_headers="none",
        checkpoint_dir=str(tmp_path),
    )
    first = run_job(config, out=io.StringIO())
    output = f"{config.job_id}.scores"
    assert first.outputs[output] > 0
    # Finished: its done marker's output checks pass on records without headers, and the
    # rerun replays nothing.
    again = run_job(config, out=io.StringIO())
    assert again.already_finished is not None
    assert again.outputs.get(output, 0) == 0 and again.events == 0


@pytest.mark.parametrize("mode", ["full", "compact", "none"])
def test_several_sink_processes_write_what_one_writes(
    broker: LocalBroker,
    social: SocialData,
    read_range: ReadRange,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``sink_processes`` 2 and 3 split the output by partition: every record (key, value,
    partition, timestamp, headers but the job id) and every partition's order as with one."""
    topics = _write(broker, social)
    counts = {p: len(rows) for p, rows in _expected(social, topics).items()}
    written: dict[int, list[tuple[object, ...]]] = {}
    for processes in (1, 2, 3):
        config = _config(
            broker, social, topics, executor="batch", output_headers=mode, sink_processes=processes
        )
        caplog.clear()
        with caplog.at_level("INFO", logger="connector.output.shards"):
            report = run_job(config, out=io.StringIO())
        plural = "" if processes == 1 else "es"
        assert f"{processes} sink process{plural} (sink_processes)" in caplog.messages
        output = f"{config.job_id}.scores"
        assert report.outputs == {output: sum(counts.values())}
        records = read_range(output, {p: (0, n) for p, n in counts.items()})
        written[processes] = [
            (r.partition, r.offset, r.key, r.value, r.timestamp, _without_job(r.headers, mode))
            for r in records
        ]
    assert written[2] == written[1]
    assert written[3] == written[1]


def _without_job(headers: tuple[tuple[str, object], ...], mode: str) -> object:
    """A record's headers without the job id, which differs from job to job."""
    if mode == "compact":
        job, seq, _ = identity(headers)
        assert job is not None
        return seq
    return [(k, v) for k, v in headers if k != "restream.job"]


def _oracle_records(
    got: list[Any], expected: dict[int, list[tuple[bytes, bytes, bytes]]]
) -> dict[int, list[tuple[object, ...]]]:
    return {
        p: [(r.key, r.value, dict(r.headers)["restream.seq"]) for r in got if r.partition == p]
        for p in expected
    }


@pytest.mark.parametrize("sinks", [1, 2, 3])
def test_sink_actors_write_the_oracles_records(
    broker: LocalBroker,
    social: SocialData,
    read_range: ReadRange,
    sinks: int,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    """``ray_sinks`` 1, 2 and 3: the workers' output goes to sink actors unmerged (the driver
    never fetches it) and every partition holds the oracle's records in its order; a rerun of
    the job skips all of them, each in the actor that owns its partition."""
    request.getfixturevalue("ray_cluster")
    topics = _write(broker, social)
    config = _config(broker, social, topics, executor="ray", ray_sinks=sinks)
    with caplog.at_level("INFO", logger="connector.output.ray_sinks"):
        report = run_job(config, out=io.StringIO())
    assert any(m.startswith(f"{sinks} sink actor") for m in caplog.messages), caplog.messages
    output = f"{config.job_id}.scores"
    expected = _expected(social, topics)
    total = sum(len(v) for v in expected.values())
    assert report.outputs == {output: total}
    # The driver merged nothing: the executor's merge is the step it skips for sink actors.
    assert "merge" not in report.stats.seconds
    got = read_range(output, {p: (0, len(expected[p])) for p in range(PARTITIONS)})
    assert _oracle_records(got, expected) == expected
    again = run_job(config, out=io.StringIO())
    assert again.outputs.get(output, 0) == 0
    assert again.skipped == {output: total}


def test_a_run_whose_sink_actor_was_killed_resumes_to_the_oracles_records(
    broker: LocalBroker,
    social: SocialData,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """A sink actor killed after a few checkpoints fails the run (exit 1: a SinkError naming
    it); the job run again resumes from its newest checkpoint and the output is exactly the
    oracle's: what the killed attempt wrote past the checkpoint is skipped, not doubled."""
    request.getfixturevalue("ray_cluster")
    topics = _write(broker, social)
    config = _config(
        broker,
        social,
        topics,
        executor="ray",
        ray_sinks=2,
        epoch_size=1_000,
        checkpoint_dir=str(tmp_path),
        checkpoint_every_epochs=2,
    )
    write_shares = RaySinks.write_shares

    def killing(self: RaySinks, shares: Any, epoch: Any, records: int) -> None:
        if epoch.index == 7:
            victim = self.places[1]
            assert victim is not None
            os.kill(victim.pid, signal.SIGKILL)
        write_shares(self, shares, epoch, records)

    monkeypatch.setattr(RaySinks, "write_shares", killing)
    with pytest.raises(SinkError, match=r"the sink actor 2 of 2 \(node \S+, pid \d+, output"):
        run_job(config, out=io.StringIO())
    monkeypatch.undo()
    report = run_job(config, out=io.StringIO())
    assert report.resumed_from is not None and report.resumed_from > 0
    output = f"{config.job_id}.scores"
    expected = _expected(social, topics)
    assert report.skipped.get(output, 0) > 0  # written by the killed attempt past its checkpoint
    assert _everything_in(broker, output) == expected


def _everything_in(broker: LocalBroker, topic: str) -> dict[int, list[tuple[object, ...]]]:
    """Every record of ``topic`` per partition as (key, value, seq), read until none comes
    for 3 s (the embedded broker's watermarks cannot say where a partition ends)."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"restream-test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    out: dict[int, list[tuple[object, ...]]] = {p: [] for p in range(PARTITIONS)}
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        while (message := consumer.poll(3.0)) is not None:
            assert message.error() is None, message.error()
            headers = dict(message.headers() or [])
            out[message.partition()].append(
                (message.key(), message.value(), headers["restream.seq"])
            )
    finally:
        consumer.close()
    return out
