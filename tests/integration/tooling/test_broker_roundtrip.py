"""Generated data through a real broker and back, record by record; the broker's lifecycle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from connector.errors import BrokerError, ConfigError
from connector.kafka.producer import BulkProducer
from connector.serde import ValueFormat
from connector.serde.avro import decode_value, encode_columns, load_schema
from engine.examples.social.data import SocialData, generate_social
from tests.support.broker import NewTopic, ReadRange, ReadRecord
from tests.support.procs import running
from tooling.broker import LocalBroker, wait_for_broker
from tooling.generate import write_social

MESSAGE_FIELDS = ("message_id", "ts", "sender", "recipient", "content")
FRIENDSHIP_FIELDS = ("ts", "user_a", "user_b")


@pytest.fixture(scope="module")
def social() -> SocialData:
    """About 101k messages and 9k friendships over 4 partitions, timestamps jittered."""
    return generate_social(users=5_000, events=110_000, days=3, seed=7, jitter_ms=2_000)


def _ranges(partition: np.ndarray[Any, Any], partitions: int = 4) -> dict[int, tuple[int, int]]:
    counts = np.bincount(partition, minlength=partitions)
    return {p: (0, int(c)) for p, c in enumerate(counts)}


def _assert_table(
    records: list[ReadRecord],
    table: Any,
    fields: tuple[str, ...],
    key: str,
    schema_name: str,
    headers: bool = False,
    schema_id: int | None = None,
) -> None:
    """Each record is the generated row: place, key, timestamp, value (decoded), headers."""
    schema = load_schema(schema_name)
    fmt: ValueFormat = "avro" if schema_id is None else "avro-confluent"
    columns = {name: getattr(table, name).tolist() for name in fields}
    expected = [
        (
            partition,
            offset,
            str(k).encode("utf-8"),
            ts,
            schema_id,
            {name: columns[name][i] for name in fields},
            (("row", str(i).encode()), ("source", b"generator")) if headers else (),
        )
        for i, (partition, offset, k, ts) in enumerate(
            zip(
                table.partition.tolist(),
                table.offset.tolist(),
                getattr(table, key).tolist(),
                table.ts.tolist(),
                strict=True,
            )
        )
    ]
    got = []
    for r in records:
        decoded = decode_value(schema, r.value or b"", fmt)
        got.append(
            (
                r.partition,
                r.offset,
                r.key,
                r.timestamp,
                decoded.schema_id,
                decoded.record,
                r.headers,
            )
        )
    assert len(got) == len(expected)
    pairs = enumerate(zip(got, expected, strict=True))
    first_difference = next((i for i, (a, b) in pairs if a != b), None)
    assert first_difference is None, (got[first_difference], expected[first_difference])


@pytest.mark.slow
def test_100k_generated_events_round_trip_record_by_record(
    social: SocialData, new_topic: NewTopic, read_range: ReadRange, broker: LocalBroker
) -> None:
    m = social.messages
    assert len(m.ts) >= 100_000 and set(np.unique(m.partition)) == {0, 1, 2, 3}
    topic = new_topic(partitions=4)
    schema = load_schema("social/Message")
    values = encode_columns(schema, {name: getattr(m, name) for name in MESSAGE_FIELDS}).values()
    headers = [[("row", str(i).encode()), ("source", b"generator")] for i in range(len(values))]
    producer = BulkProducer(broker.bootstrap)
    producer.produce(
        topic,
        values,
        [str(s).encode() for s in m.sender.tolist()],
        m.partition.tolist(),
        m.ts.tolist(),
        headers,
    )
    producer.flush()

    records = read_range(topic, _ranges(m.partition))
    _assert_table(records, m, MESSAGE_FIELDS, "sender", "social/Message", headers=True)


def test_a_range_in_the_middle_of_a_partition_reads_exactly_those_offsets(
    social: SocialData, new_topic: NewTopic, read_range: ReadRange, broker: LocalBroker
) -> None:
    f = social.friendships
    topic = new_topic(partitions=4)
    schema = load_schema("social/Friendship")
    values = encode_columns(schema, {n: getattr(f, n) for n in FRIENDSHIP_FIELDS}).values()
    producer = BulkProducer(broker.bootstrap)
    producer.produce(topic, values, [b"k"] * len(values), f.partition.tolist(), f.ts.tolist())
    producer.flush()

    records = read_range(topic, {2: (100, 350), 3: (0, 0)})
    assert [(r.partition, r.offset) for r in records] == [(2, o) for o in range(100, 350)]
    rows = np.flatnonzero(f.partition == 2)[100:350]
    assert [r.value for r in records] == [values[i] for i in rows.tolist()]


@pytest.mark.slow
# No settings: the native producer writes; compression: librdkafka does.
@pytest.mark.parametrize("overrides", [None, {"compression.type": "gzip"}])
def test_write_social_writes_both_topics_at_the_generated_offsets(
    social: SocialData,
    read_range: ReadRange,
    broker: LocalBroker,
    overrides: dict[str, str] | None,
) -> None:
    suffix = os.urandom(4).hex()
    topics = (f"social.messages.{suffix}", f"social.friendships.{suffix}")
    report = write_social(
        social,
        bootstrap=broker.bootstrap,
        messages_topic=topics[0],
        friendships_topic=topics[1],
        partitions=4,
        producer_overrides=overrides,
    )
    m, f = social.messages, social.friendships
    assert report.records == len(m.ts) + len(f.ts)
    assert [w.topic for w in report.writes] == list(topics)
    _assert_table(
        read_range(topics[0], _ranges(m.partition)), m, MESSAGE_FIELDS, "sender", "social/Message"
    )
    _assert_table(
        read_range(topics[1], _ranges(f.partition)),
        f,
        FRIENDSHIP_FIELDS,
        "user_a",
        "social/Friendship",
    )

    with pytest.raises(ConfigError, match="already holds records"):
        write_social(
            social,
            bootstrap=broker.bootstrap,
            messages_topic=topics[0],
            friendships_topic=topics[1],
            partitions=4,
        )


@pytest.fixture
def schema_registry() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A minimal Confluent Schema Registry: registers schemas, ids counting from 41."""
    registered: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            registered.append({"path": self.path, "schema": body["schema"]})
            answer = json.dumps({"id": 40 + len(registered)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", registered
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_confluent_framing_with_two_writer_processes(
    read_range: ReadRange,
    broker: LocalBroker,
    schema_registry: tuple[str, list[dict[str, Any]]],
) -> None:
    small = generate_social(users=2_000, events=20_000, days=2, seed=3)
    url, registered = schema_registry
    suffix = os.urandom(4).hex()
    topics = (f"m.{suffix}", f"f.{suffix}")
    write_social(
        small,
        bootstrap=broker.bootstrap,
        messages_topic=topics[0],
        friendships_topic=topics[1],
        partitions=4,
        value_format="avro-confluent",
        schema_registry=url,
        workers=2,
    )
    assert [r["path"] for r in registered] == [f"/subjects/{t}-value/versions" for t in topics]
    assert json.loads(registered[0]["schema"])["name"] == "Message"
    m, f = small.messages, small.friendships
    _assert_table(
        read_range(topics[0], _ranges(m.partition)),
        m,
        MESSAGE_FIELDS,
        "sender",
        "social/Message",
        schema_id=41,
    )
    _assert_table(
        read_range(topics[1], _ranges(f.partition)),
        f,
        FRIENDSHIP_FIELDS,
        "user_a",
        "social/Friendship",
        schema_id=42,
    )


def test_a_failed_delivery_is_an_error_not_a_gap(new_topic: NewTopic, broker: LocalBroker) -> None:
    topic = new_topic(partitions=1)
    producer = BulkProducer(broker.bootstrap, {"message.timeout.ms": 10_000})
    producer.produce(topic, [b"a", b"b"], [b"k", b"k"], [0, 7], [1, 2])  # no partition 7
    with pytest.raises(BrokerError, match=r"records failed delivery and were not retried.*\[7\]"):
        producer.flush(30)
    with pytest.raises(ConfigError, match="length"):
        producer.produce(topic, [b"a"], [b"k", b"k"], [0], [1])


@pytest.mark.needs_apache_kafka
def test_the_high_watermark_counts_every_record_of_a_batch(
    new_topic: NewTopic, producer: Producer, broker: LocalBroker
) -> None:
    """Apache Kafka's high watermark is the next offset; Tansu's is wrong inside batches."""
    topic = new_topic(partitions=1)
    for i in range(1_000):
        producer.produce(topic, str(i).encode(), partition=0)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "watermarks"})
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 1_000)
    finally:
        consumer.close()


def test_the_generate_command_writes_what_the_generator_makes(
    read_range: ReadRange, broker: LocalBroker
) -> None:
    """The CLI end to end, with two writer processes (forked: the CLI has no Kafka threads)."""
    suffix = os.urandom(4).hex()
    topics = (f"cli.m.{suffix}", f"cli.f.{suffix}")
    args = ["--users", "1000", "--events", "30000", "--days", "2", "--seed", "5"]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "connector.cli",
            "generate",
            "social",
            *args,
            "--jitter-ms",
            "500",
            "--bootstrap",
            broker.bootstrap,
            "--messages-topic",
            topics[0],
            "--friendships-topic",
            topics[1],
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote 30,000 events" in done.stdout and "events/s" in done.stdout
    expected = generate_social(users=1000, events=30_000, days=2, seed=5, jitter_ms=500)
    m, f = expected.messages, expected.friendships
    _assert_table(
        read_range(topics[0], _ranges(m.partition)), m, MESSAGE_FIELDS, "sender", "social/Message"
    )
    _assert_table(
        read_range(topics[1], _ranges(f.partition)),
        f,
        FRIENDSHIP_FIELDS,
        "user_a",
        "social/Friendship",
    )


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not running(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_stopped_tansu_broker_leaves_no_process() -> None:
    broker = LocalBroker("tansu").start()
    pid = broker.pid
    assert pid is not None and running(pid)
    assert broker.log_path is None  # the log is an unnamed file unless keep_log is asked
    broker.stop()
    assert not running(pid)
    assert broker.pid is None and not broker.running
    broker.stop()  # twice is harmless


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_restream_broker_serves_until_interrupted() -> None:
    command = [sys.executable, "-m", "connector.cli", "broker"]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert child.stdout is not None
        lines = [child.stdout.readline() for _ in range(6)]
        assert lines[0].startswith("tansu at 127.0.0.1:")
        # What differs from Kafka, said where a user starts it.
        assert "`--end latest` misses the rest of that batch" in lines[4]
        assert lines[5].startswith("Ctrl-C stops it.")
        log = Path(lines[1].removeprefix("log: ").strip())
        bootstrap = lines[2].removeprefix("bootstrap: ").strip()
        assert wait_for_broker(bootstrap, 10) == "tansu-restream"
        tansu = [
            int(pid)
            for pid in Path(f"/proc/{child.pid}/task/{child.pid}/children").read_text().split()
        ]
        assert len(tansu) == 1 and log.exists()
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=10) == 0
        assert "broker stopped" in child.stdout.read()
        assert _gone_within(tansu[0], 5) and not log.exists()
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_tansu_dies_with_the_process_that_started_it(sig: signal.Signals) -> None:
    """Also when the parent is killed hard: the kernel kills Tansu (PR_SET_PDEATHSIG)."""
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from tooling.broker import LocalBroker\n"
        "broker = LocalBroker('tansu').start()\n"
        "print(broker.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    logs_before = set(Path(tempfile.gettempdir()).glob("restream-tansu-*"))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        pid = int(child.stdout.readline())
        assert running(pid)
        child.send_signal(sig)
        child.wait(timeout=10)
        assert _gone_within(pid, 5), f"Tansu {pid} outlived its parent after {sig.name}"
        assert set(Path(tempfile.gettempdir()).glob("restream-tansu-*")) <= logs_before
    finally:
        child.kill()
        child.wait()
