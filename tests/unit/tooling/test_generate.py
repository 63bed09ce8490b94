"""Writing the social data set: keys, layout checks and schema registration (no broker)."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Producer
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.errors import BrokerError, ConfigError
from connector.runtime.processes import kafka_client_threads, process_context
from connector.serde.avro import load_schema, register_schema
from engine.examples.social.data import FriendshipColumns, SocialData, generate_social
from tests.support.budget import examples
from tooling.generate import _DecimalKeys, decimal_keys, write_social

INT64 = st.integers(-(2**63), 2**63 - 1)


@settings(max_examples=examples(100), deadline=None)  # timing varies on a loaded 2-core machine
@given(values=st.lists(INT64, max_size=50))
def test_keys_are_utf8_decimal_text(values: list[int]) -> None:
    assert decimal_keys(np.array(values, dtype=np.int64)) == [str(v).encode() for v in values]


@settings(max_examples=examples(100), deadline=None)  # timing varies on a loaded 2-core machine
@given(values=st.lists(st.integers(-50, 10_000), max_size=200), data=st.data())
def test_key_table_slices_match_decimal_keys(values: list[int], data: st.DataObject) -> None:
    column = np.array(values, dtype=np.int64)
    keys = _DecimalKeys(column)
    start = data.draw(st.integers(0, len(values)))
    stop = data.draw(st.integers(start, len(values)))
    assert keys.slice(start, stop) == [str(v).encode() for v in values[start:stop]]


def test_sparse_ids_fall_back_to_formatting() -> None:
    column = np.array([0, 10**15, -(10**15)], dtype=np.int64)
    assert _DecimalKeys(column).slice(0, 3) == [b"0", b"1000000000000000", b"-1000000000000000"]


@pytest.fixture(scope="module")
def small() -> SocialData:
    return generate_social(users=200, events=2_000, days=2, seed=1)


def _write(data: SocialData, **kwargs: Any) -> None:
    # Port 1 has no broker: these calls must fail before connecting.
    options: dict[str, Any] = {"bootstrap": "127.0.0.1:1", "partitions": 4, **kwargs}
    write_social(data, **options)


def test_bad_settings_fail_before_any_connection(small: SocialData) -> None:
    with pytest.raises(ConfigError, match="format"):
        _write(small, value_format="json")
    with pytest.raises(ConfigError, match="schema-registry"):
        _write(small, value_format="avro-confluent")
    with pytest.raises(ConfigError, match="friendships-topic"):
        _write(small, messages_topic="t", friendships_topic="t")
    with pytest.raises(ConfigError, match="workers"):
        _write(small, workers=0)
    with pytest.raises(ConfigError, match="partitions"):
        _write(small, partitions=2)


def test_rows_out_of_offset_order_are_refused(small: SocialData) -> None:
    f = small.friendships
    reversed_offsets = FriendshipColumns(
        f.ts, f.user_a, f.user_b, f.partition, f.offset[::-1].copy()
    )
    shuffled = SocialData(
        small.messages,
        reversed_offsets,
        small.users,
        small.days,
        small.partitions,
        small.spammers,
    )
    with pytest.raises(ConfigError, match="offsets 0, 1, 2"):
        _write(shuffled)


def test_writers_are_not_forked_while_kafka_client_threads_run() -> None:
    quiet = logging.getLogger("test.librdkafka")
    quiet.disabled = True
    producer = Producer({"bootstrap.servers": "127.0.0.1:1", "logger": quiet})
    try:
        assert kafka_client_threads()
        assert process_context().get_start_method() != "fork"
    finally:
        producer.flush(0)
        del producer


@pytest.fixture
def registry() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A Schema Registry stand-in answering id 7 (or no id for subjects containing "bad")."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(
                {
                    "path": self.path,
                    "auth": self.headers.get("Authorization"),
                    "type": self.headers.get("Content-Type"),
                    "body": json.loads(body),
                }
            )
            answer = b'{"id": 7}' if "bad" not in self.path else b'{"error_code": 42201}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_registering_a_schema_posts_it_under_the_subject(
    registry: tuple[str, list[dict[str, Any]]],
) -> None:
    address, seen = registry
    schema = load_schema("social/Message")
    assert register_schema(f"http://alice:s%40cret@{address}/", "a/b-value", schema) == 7
    (request,) = seen
    assert request["path"] == "/subjects/a%2Fb-value/versions"
    assert request["type"] == "application/vnd.schemaregistry.v1+json"
    assert json.loads(request["body"]["schema"]) == json.loads(schema.text)
    assert request["auth"] == "Basic " + base64.b64encode(b"alice:s@cret").decode()


def test_registry_failures_are_broker_errors(registry: tuple[str, list[dict[str, Any]]]) -> None:
    address, _ = registry
    schema = load_schema("social/Message")
    with pytest.raises(BrokerError, match="instead of an id"):
        register_schema(f"http://{address}", "bad-value", schema)
    with pytest.raises(ConfigError, match="http"):
        register_schema("mock://registry", "x-value", schema)
    with pytest.raises(BrokerError, match="cannot register"):
        register_schema("http://127.0.0.1:1", "x-value", schema, timeout_s=2)
