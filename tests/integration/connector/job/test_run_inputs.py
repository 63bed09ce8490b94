"""`restream run` against a real broker: bad records, groups, empty partitions, metrics, CLI."""

from __future__ import annotations

import io
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from connector.cli.app import main
from connector.config import RunConfig
from connector.input.dead_letters import BadRecordError
from connector.job.run import run_job
from connector.kafka.producer import TopicSpec, create_topics
from connector.serde.avro import confluent_header, encode_value, load_schema
from connector.serde.schema_registry import register_value_schema, registry_client
from tests.support.broker import NewTopic, ReadRange
from tooling.broker import LocalBroker

MESSAGE = load_schema("social/Message")
T0 = 1_700_000_000_000


def _message(i: int, sender: int) -> bytes:
    record = {"message_id": i, "ts": T0 + i, "sender": sender, "recipient": 1, "content": "hi"}
    return encode_value(MESSAGE, record)


@pytest.fixture(scope="module")
def no_friendships(broker: LocalBroker) -> str:
    """An empty topic for the spam rules' friendship kind (a kind without an input topic is
    refused); these tests are about messages."""
    name = f"restream-test-{uuid.uuid4().hex[:12]}"
    create_topics(broker.bootstrap, [TopicSpec(name, 1)])
    return name


def _config(broker: LocalBroker, topic: str, friendships: str, **kw: Any) -> RunConfig:
    values: dict[str, Any] = {
        "job_id": f"job-{uuid.uuid4().hex[:10]}",
        "bootstrap_servers": broker.bootstrap,
        "pipeline": "social-spam",
        "inputs": ((topic, "message"), (friendships, "friendship")),
        "executor": "batch",
        "epoch_size": 50,
        "progress": "none",
    }
    values.update(kw)
    return RunConfig(**values)


def _produce(
    producer: Producer, topic: str, rows: list[tuple[int, bytes | None, bytes | None]]
) -> None:
    """Rows of (partition, key, value), each flushed alone so that `latest` is exact on Tansu."""
    for i, (partition, key, value) in enumerate(rows):
        producer.produce(topic, value=value, key=key, partition=partition, timestamp=T0 + i)
        producer.flush(10)


def test_each_kind_of_bad_record_is_dead_lettered_with_its_reason(
    broker: LocalBroker,
    new_topic: NewTopic,
    producer: Producer,
    read_range: ReadRange,
    no_friendships: str,
) -> None:
    topic = new_topic(partitions=2)
    rows: list[tuple[int, bytes | None, bytes | None]] = [
        (0, b"5", _message(0, 5)),
        (0, b"5", b"\xff\x01not avro"),  # undecodable
        (1, b"6", None),  # null value
        (1, b"alice", _message(3, 6)),  # wrong key type: the pipeline wants decimal keys
        (1, b"6", _message(4, 6)),
    ]
    _produce(producer, topic, rows)
    # 3 of 5 records are bad, past the default max_bad_records of 50%: allow them here.
    config = _config(broker, topic, no_friendships, max_bad_records="100%")
    report = run_job(config, out=io.StringIO())
    assert report.events == 2
    assert report.bad_records == {"undecodable": 1, "null-value": 1, "wrong-key-type": 1}
    dead = read_range(config.dead_letter_topic or f"{config.job_id}.dead-letter", {0: (0, 3)})
    by_reason = {dict(r.headers)["restream.reason"]: r for r in dead}
    assert set(by_reason) == {b"undecodable", b"null-value", b"wrong-key-type"}
    undecodable = by_reason[b"undecodable"]
    assert undecodable.value == b"\xff\x01not avro" and undecodable.key == b"5"
    assert dict(undecodable.headers)["restream.source"] == f"{topic}/0@1".encode()
    assert dict(undecodable.headers)["restream.job"] == config.job_id.encode()  # type: ignore[union-attr]
    assert by_reason[b"null-value"].value is None
    assert dict(by_reason[b"wrong-key-type"].headers)["restream.source"] == f"{topic}/1@1".encode()


def test_fail_policy_stops_with_the_records_coordinates(
    broker: LocalBroker, new_topic: NewTopic, producer: Producer, no_friendships: str
) -> None:
    topic = new_topic(partitions=1)
    _produce(producer, topic, [(0, b"5", _message(0, 5)), (0, b"5", b"garbage")])
    with pytest.raises(BadRecordError, match=f"{topic}/0@1 \\(undecodable\\)"):
        run_job(_config(broker, topic, no_friendships, on_bad_record="fail"), out=io.StringIO())


def test_unknown_schema_ids_are_dead_lettered(
    broker: LocalBroker,
    new_topic: NewTopic,
    producer: Producer,
    read_range: ReadRange,
    no_friendships: str,
) -> None:
    topic = new_topic(partitions=1)
    url = f"mock://{uuid.uuid4().hex}"
    config = _config(
        broker, topic, no_friendships, value_format="avro-confluent", schema_registry_url=url
    )
    schema_id = register_value_schema(registry_client(config), topic, MESSAGE)
    good = confluent_header(schema_id) + _message(0, 5)
    unknown = confluent_header(schema_id + 1000) + _message(1, 5)
    _produce(producer, topic, [(0, b"5", good), (0, b"5", unknown), (0, b"5", good)])
    report = run_job(config, out=io.StringIO())
    assert report.events == 2
    assert report.bad_records == {"unknown-schema-id": 1}
    [dead] = read_range(f"{config.job_id}.dead-letter", {0: (0, 1)})
    assert dead.value == unknown


def test_group_start_reads_from_committed_offsets_and_leaves_the_group_alone(
    broker: LocalBroker, new_topic: NewTopic, producer: Producer, no_friendships: str
) -> None:
    topic = new_topic(partitions=2)
    _produce(producer, topic, [(i % 2, b"7", _message(i, 7)) for i in range(10)])
    group = f"app-{uuid.uuid4().hex[:8]}"
    committer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    committer.commit(
        offsets=[
            TopicPartition(topic, 0, 3),
            TopicPartition(topic, 1, 1),
            TopicPartition(no_friendships, 0, 0),
        ],
        asynchronous=False,
    )
    committer.close()
    report = run_job(
        _config(broker, topic, no_friendships, start=f"group:{group}"), out=io.StringIO()
    )
    assert report.events == (5 - 3) + (5 - 1)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    )
    after = admin.list_consumer_group_offsets([request])[group].result()
    assert {(tp.partition, tp.offset) for tp in after.topic_partitions} == {(0, 3), (1, 1)}
    described = admin.describe_consumer_groups([group])[group].result()
    assert list(described.members) == []


def test_empty_partitions_and_several_topics(
    broker: LocalBroker, new_topic: NewTopic, producer: Producer, no_friendships: str
) -> None:
    messages = new_topic(partitions=3)
    more = new_topic(partitions=2)
    _produce(producer, messages, [(1, b"7", _message(i, 7)) for i in range(4)])
    config = _config(
        broker,
        messages,
        no_friendships,
        inputs=((messages, "message"), (more, "message"), (no_friendships, "friendship")),
    )
    report = run_job(config, out=io.StringIO())
    assert report.events == 4
    assert report.outputs == {f"{config.job_id}.scores": 4}


class _Gateway(BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_PUT(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[str]:
    _Gateway.bodies = []
    server = HTTPServer(("127.0.0.1", 0), _Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _samples(text: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not s.labels or s.name.startswith("restream_events_read"):
                out[s.name] = float(s.value)
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_move_while_running_and_are_pushed_at_the_end(
    broker: LocalBroker, new_topic: NewTopic, producer: Producer, gateway: str, no_friendships: str
) -> None:
    topic = new_topic(partitions=1)
    producer.produce(topic, value=_message(0, 1), key=b"1", partition=0, timestamp=T0)
    for i in range(1, 3000):
        producer.produce(
            topic,
            value=_message(i, i % 50),
            key=str(i % 50).encode(),
            partition=0,
            timestamp=T0 + i * 1000,
        )
    producer.flush(30)
    producer.produce(
        topic, value=_message(3000, 1), key=b"1", partition=0, timestamp=T0 + 3_000_000
    )
    producer.flush(30)
    port = _free_port()
    config = _config(
        broker,
        topic,
        no_friendships,
        metrics_port=port,
        metrics_host="127.0.0.1",
        pushgateway=gateway,
        epoch_size=100,
        executor="serial",
    )
    scrapes: list[dict[str, float]] = []
    result: list[Any] = []
    runner = threading.Thread(target=lambda: result.append(run_job(config, out=io.StringIO())))
    runner.start()
    while runner.is_alive():
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
            scrapes.append(_samples(text.decode()))
        except OSError:
            pass
        time.sleep(0.05)
    runner.join()
    assert result, "the run failed"
    processed = [s.get("restream_events_processed_total", 0) for s in scrapes]
    assert len(set(processed)) >= 3, processed  # moved while running
    assert processed == sorted(processed)
    assert any(0 < s.get("restream_progress_ratio", 0) < 1 for s in scrapes)
    [pushed] = _Gateway.bodies
    final = _samples(pushed.decode())
    assert final["restream_events_processed_total"] == 3001
    assert final["restream_progress_ratio"] == 1
    assert final["restream_job_success"] == 1
    assert final["restream_event_time_processed_seconds"] == 3000
    assert final["restream_replay_speedup"] > 0


def test_cli_exit_codes_and_messages(
    broker: LocalBroker,
    new_topic: NewTopic,
    producer: Producer,
    capsys: pytest.CaptureFixture[str],
    no_friendships: str,
) -> None:
    topic = new_topic(partitions=1)
    _produce(producer, topic, [(0, b"5", _message(0, 5)), (0, b"5", b"junk")])
    base = [
        "run",
        "--pipeline",
        "social-spam",
        "--bootstrap-servers",
        broker.bootstrap,
        "--executor",
        "batch",
        "--progress",
        "none",
        "--inputs",
        f"{no_friendships}=friendship",
    ]
    # Forgetting the input of one of the pipeline's kinds: refused, naming it, nothing created.
    forgot = f"f{uuid.uuid4().hex[:6]}"
    assert main([*base[:-2], "--job-id", forgot, "--inputs", f"{topic}=message"]) == 2
    assert "no input topic is of event kind 'friendship'" in capsys.readouterr().err
    topics = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).topics
    assert not [t for t in topics if t.startswith(forgot)]
    missing = f"no-such-{uuid.uuid4().hex[:6]}"
    a1, a2 = f"a1{uuid.uuid4().hex[:6]}", f"a2{uuid.uuid4().hex[:6]}"
    assert main([*base, "--job-id", a1, "--inputs", f"{missing}=message"]) == 2
    assert missing in capsys.readouterr().err
    assert (
        main(
            [
                *base,
                *("--job-id", a2, "--inputs", f"{topic}=message"),
                *("--end", f"offsets:{topic}/0=99,{no_friendships}/0=0"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert f"{topic}/0" in err and "99" in err
    # Refused before the lease (a write) was claimed: nothing of either job exists.
    topics = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).topics
    assert not [t for t in topics if t.startswith((a1, a2))]
    assert main([*base, "--inputs", f"{topic}=message"]) == 2
    assert "job_id" in capsys.readouterr().err
    code = main(
        [
            *base,
            "--job-id",
            f"j{uuid.uuid4().hex[:6]}",
            "--inputs",
            f"{topic}=message",
            "--on-bad-record",
            "fail",
        ]
    )
    assert code == 1
    assert f"{topic}/0@1" in capsys.readouterr().err
    assert (
        main([*base, "--job-id", f"j{uuid.uuid4().hex[:6]}", "--inputs", f"{topic}=message"]) == 0
    )
    assert "1 events" in capsys.readouterr().out
