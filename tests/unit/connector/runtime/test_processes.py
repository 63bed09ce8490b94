"""How the connector starts its child processes: never by fork from a Ray driver."""

from __future__ import annotations

import multiprocessing
import sys
import types

import pytest

from connector.runtime.processes import kafka_client_threads, process_context, ray_connected


def test_a_ray_driver_does_not_fork_its_children(monkeypatch: pytest.MonkeyPatch) -> None:
    if kafka_client_threads() or "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("fork is not chosen here anyway (Kafka client threads, or no fork)")
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(is_initialized=lambda: False))
    assert not ray_connected()
    assert process_context().get_start_method() == "fork"
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(is_initialized=lambda: True))
    assert ray_connected()
    assert process_context().get_start_method() != "fork"
