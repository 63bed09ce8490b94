"""Output marks against a real broker: a checkpoint's flush marks each written partition's
last record as the broker holds it (also where the embedded broker's high watermark lags
inside a batch), the marks pass the resume check while the output stands, and fail it once a
topic is deleted, recreated or rewritten; starting over deletes only the job's own topics."""

from __future__ import annotations

import numpy as np
import pytest
from confluent_kafka.admin import AdminClient

from connector.errors import ConfigError
from connector.kafka.offsets import KafkaOffsets
from connector.kafka.producer import BulkProducer, TopicSpec, create_topics
from connector.output.sink import OutputTarget, output_producer_settings
from connector.output.sink_process import SinkProcess, SinkSettings
from connector.output.verify import OutputLostError, OutputMarks, delete_job_topics, verify_outputs
from connector.serde.avro import load_schema
from connector.serde.values import value_encoder
from engine.examples.social.spam import SCORE_FIELDS
from engine.log import Epoch, Events
from engine.output import OutputChunk
from tests.support.broker import NewTopic, ReadRange
from tooling.broker import LocalBroker

JOB = "marks-job"


def _epoch(index: int, n: int) -> Epoch:
    seq = np.arange(index * n, (index + 1) * n, dtype=np.int64)
    events = Events(
        kind="message",
        seq=seq,
        ts=1_700_000_000_000 + seq,
        topic=np.zeros(n, dtype=np.int16),
        partition=np.zeros(n, dtype=np.int32),
        offset=seq,
        columns={},
    )
    return Epoch(
        index,
        index * n,
        (index + 1) * n,
        events.ts,
        np.zeros(n, dtype=np.int8),
        ("message",),
        ("messages",),
        {"message": events},
    )


def _chunk(epoch: Epoch) -> OutputChunk:
    """Three records per event, all keyed by the sender: several records per seq."""
    seq = np.repeat(np.arange(epoch.seq_start, epoch.seq_end, dtype=np.int64), 3)
    sender = seq % 7
    columns = {
        "message_id": seq,
        "ts": 1_700_000_000_000 + seq,
        "sender": sender,
        "recipient": seq % 5,
        "rules": (seq % 3).astype(np.int32),
        "score": (seq % 9).astype(np.int32),
        "spam": seq % 2 == 0,
        "sender_flagged": seq % 4,
    }
    return OutputChunk("scores", seq, sender, columns)


def _write(broker: LocalBroker, topic: str, epochs: int) -> OutputMarks:
    target = OutputTarget(
        "scores", topic, 3, SCORE_FIELDS, value_encoder("avro", load_schema("social/SpamScore"))
    )
    settings = SinkSettings(
        broker.bootstrap, output_producer_settings(), {"scores": target}, JOB, {}
    )
    with SinkProcess(settings) as sink:
        for i in range(epochs):
            sink.write([_chunk(_epoch(i, 2_000))], _epoch(i, 2_000))
        sink.flush(mark=True)
        return OutputMarks({topic: 3}).merged(sink.marks, {topic: 3})


def test_marks_are_the_last_records_and_pass_while_the_output_stands(
    broker: LocalBroker, new_topic: NewTopic, read_range: ReadRange
) -> None:
    topic = new_topic(partitions=3)
    marks = _write(broker, topic, 2)
    client = {"bootstrap.servers": broker.bootstrap}
    with KafkaOffsets(client) as offsets:
        bounds = offsets.watermarks([(topic, p) for p in range(3)])
    assert set(marks.marks) == {(topic, p) for p in range(3)}
    for (t, p), mark in marks.marks.items():
        # Read exactly up to the mark (the broker's high watermark may lag it: Tansu).
        records = read_range(t, {p: (0, mark.offset + 1)})
        last = dict(records[-1].headers)
        assert last["restream.seq"] == str(mark.seq).encode()
        assert last["restream.job"] == JOB.encode()
        assert mark.low == bounds[(t, p)][0] == 0
    if not broker.supports_apache_kafka_semantics:
        # Tansu's high watermark is the first offset of the last batch + 1: at or before the
        # true last record, which the marks (and the check) find by reading on from there.
        assert any(bounds[tp][1] <= m.offset for tp, m in marks.marks.items()), bounds
    verify_outputs(client, marks, job=JOB, seq=4_000)


def test_a_deleted_then_rewritten_topic_fails_the_check(
    broker: LocalBroker, new_topic: NewTopic
) -> None:
    topic = new_topic(partitions=3)
    marks = _write(broker, topic, 2)
    client = {"bootstrap.servers": broker.bootstrap}
    assert delete_job_topics(client, [topic, "no-such-topic"], job=JOB) == [topic]
    with pytest.raises(OutputLostError, match=f"topic {topic} is missing; it held this job's"):
        verify_outputs(client, marks, job=JOB, seq=4_000)
    # Recreated and written by this job again from a later point: shorter partitions.
    create_topics(broker.bootstrap, [TopicSpec(topic, 3)])
    _write(broker, topic, 1)
    with pytest.raises(OutputLostError) as lost:
        verify_outputs(client, marks, job=JOB, seq=4_000)
    assert f"{topic}/0 " in str(lost.value) and "--restart-from-scratch" in str(lost.value)


def test_starting_over_never_deletes_another_jobs_topic(
    broker: LocalBroker, new_topic: NewTopic
) -> None:
    topic = new_topic(partitions=1)
    producer = BulkProducer(broker.bootstrap)
    producer.produce_record(topic, b"v", b"k", [("restream.job", b"someone-else")])
    producer.flush()
    client = {"bootstrap.servers": broker.bootstrap}
    with pytest.raises(ConfigError, match="will not delete topics holding records of others"):
        delete_job_topics(client, [topic], job=JOB)
    assert topic in AdminClient(client).list_topics(timeout=10).topics
