"""Bad input on a real broker: a 5 MB poison pill and out-of-range event times are
dead-lettered (the pill cut to fit) while the valid output stays exactly the oracle's, and a
job whose records are all bad fails with exit 1 instead of exiting 0."""

from __future__ import annotations

import hashlib
import io
import uuid

import fastavro
import numpy as np
import pytest
from confluent_kafka import Producer

from connector.cli.app import main
from connector.config import RunConfig
from connector.input.dead_letters import BadRecordLimitError
from connector.job.run import run_job
from connector.kafka.partitioner import java_partition
from connector.serde.avro import encode_value, load_schema
from connector.serde.event_time import EVENT_TIME_RANGE
from engine.examples.social.data import SocialData, generate_social
from engine.examples.social.source import social_source
from engine.examples.social.spam import build_spam_pipeline
from engine.executors.serial import SerialExecutor
from engine.output import collect
from engine.planner import plan
from tests.support.broker import NewTopic, ReadRange
from tooling.broker import LocalBroker
from tooling.generate import write_social

PARTITIONS = 3
POISON = b"\xff" * 5_000_000  # an Avro varint that never ends: undecodable, 5 MB
YEAR_9999 = 253_402_300_799_000


def _oracle(
    data: SocialData, topics: tuple[str, str]
) -> dict[int, list[tuple[bytes, bytes, bytes]]]:
    """The serial oracle's output of the good records: per partition (key, value, seq)."""
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


@pytest.mark.parametrize("executor", ["parallel", "ray"])
def test_a_poison_pill_is_dead_lettered_cut_and_the_output_is_exact(
    broker: LocalBroker, read_range: ReadRange, executor: str, request: pytest.FixtureRequest
) -> None:
    if executor == "ray":
        # Reader actors find the bad records on their nodes; the driver dead-letters them.
        request.getfixturevalue("ray_cluster")
    data = generate_social(users=300, events=3_000, days=2, seed=11, partitions=PARTITIONS)
    prefix = f"restream-test-{uuid.uuid4().hex[:10]}"
    topics = (f"{prefix}.messages", f"{prefix}.friendships")
    write_social(
        data,
        bootstrap=broker.bootstrap,
        messages_topic=topics[0],
        friendships_topic=topics[1],
        partitions=PARTITIONS,
    )
    # After the good records: the pill in partition 1 and a valid message dated 9999 in 2,
    # each flushed alone (so that the end offsets below are exact on the embedded broker).
    middle = int(np.median(data.messages.ts))
    big = Producer({"bootstrap.servers": broker.bootstrap, "message.max.bytes": 10_000_000})
    big.produce(topics[0], POISON, b"42", partition=1, timestamp=middle)
    big.flush(30)
    late = {"message_id": 10**9, "ts": 0, "sender": 42, "recipient": 7, "content": "hi"}
    big.produce(
        topics[0], encode_value(load_schema("social/Message"), late), b"42", 2, timestamp=YEAR_9999
    )
    big.flush(30)
    counts = {
        (topics[0], p): int(n)
        for p, n in enumerate(np.bincount(data.messages.partition, minlength=PARTITIONS))
    }
    counts[(topics[0], 1)] += 1
    counts[(topics[0], 2)] += 1
    for p, n in enumerate(np.bincount(data.friendships.partition, minlength=PARTITIONS)):
        counts[(topics[1], p)] = int(n)
    end = "offsets:" + ",".join(f"{t}/{p}={n}" for (t, p), n in counts.items())
    config = RunConfig(
        job_id=f"job-{uuid.uuid4().hex[:10]}",
        bootstrap_servers=broker.bootstrap,
        pipeline="social-spam",
        inputs=((topics[0], "message"), (topics[1], "friendship")),
        end=end,
        executor=executor,  # type: ignore[arg-type]
        workers=2,
        ray_readers=3,
        epoch_size=1_000,
        progress="none",
    )

    report = run_job(config, out=io.StringIO())

    assert report.bad_records == {"undecodable": 1, "bad-timestamp": 1}
    if executor == "ray":
        # The readers read: the driver only merged keys (its CPU for that is timed).
        assert report.stats.seconds["route"] > 0
        assert report.stats.seconds["stage reader decode"] > 0
    assert report.events == len(data.messages) + len(data.friendships)
    expected = _oracle(data, topics)
    output = f"{config.job_id}.scores"
    assert report.outputs == {output: sum(len(v) for v in expected.values())}
    got = read_range(output, {p: (0, len(expected[p])) for p in range(PARTITIONS)})
    for p in range(PARTITIONS):
        records = [
            (r.key, r.value, dict(r.headers)["restream.seq"]) for r in got if r.partition == p
        ]
        assert records == expected[p]

    dead = read_range(f"{config.job_id}.dead-letter", {0: (0, 2)})
    by_reason = {dict(r.headers)["restream.reason"]: r for r in dead}
    pill = by_reason[b"undecodable"]
    headers = dict(pill.headers)
    assert pill.key == b"42" and pill.value is not None
    assert 900_000 < len(pill.value) < 1_000_000 and POISON.startswith(pill.value)
    assert headers["restream.truncated"] == b"value"
    assert headers["restream.value.size"] == str(len(POISON)).encode()
    assert headers["restream.value.sha256"] == hashlib.sha256(POISON).hexdigest().encode()
    assert headers["restream.source"] == f"{topics[0]}/1@{counts[(topics[0], 1)] - 1}".encode()
    assert pill.timestamp == middle
    dated = by_reason[b"bad-timestamp"]
    headers = dict(dated.headers)
    assert headers["restream.timestamp"] == str(YEAR_9999).encode()
    assert b"2200-01-01" in (headers["restream.detail"] or b"")
    assert EVENT_TIME_RANGE[0] <= dated.timestamp < EVENT_TIME_RANGE[1]  # stamped when written


def test_a_job_whose_records_are_all_bad_fails(
    broker: LocalBroker, new_topic: NewTopic, producer: Producer, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = new_topic(partitions=1)
    friendships = new_topic(partitions=1)  # empty: every kind the pipeline reads needs a topic
    for i in range(4):
        producer.produce(topic, b"\xff garbage", b"5", partition=0, timestamp=1_700_000_000_000 + i)
        producer.flush(10)
    config = RunConfig(
        job_id=f"job-{uuid.uuid4().hex[:10]}",
        bootstrap_servers=broker.bootstrap,
        pipeline="social-spam",
        inputs=((topic, "message"), (friendships, "friendship")),
        executor="batch",
        progress="none",
    )
    with pytest.raises(
        BadRecordLimitError, match=r"4 bad records of 4 read \(100\.0%: 4 undecodable\)"
    ):
        run_job(config, out=io.StringIO())
    base = ["run", "--bootstrap-servers", broker.bootstrap, "--pipeline", "social-spam"]
    base += ["--inputs", f"{topic}=message", "--inputs", f"{friendships}=friendship"]
    base += ["--executor", "batch", "--progress", "none"]
    assert main([*base, "--job-id", f"j{uuid.uuid4().hex[:6]}"]) == 1
    err = capsys.readouterr().err
    assert "4 bad records of 4 read" in err and "--max-bad-records" in err and "50%" in err
    assert "Traceback" not in err
    # A limit that allows them all lets the job finish: every record went to the dead letters.
    assert main([*base, "--job-id", f"j{uuid.uuid4().hex[:6]}", "--max-bad-records", "100%"]) == 0
