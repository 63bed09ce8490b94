"""``engine`` must import without Kafka, Prometheus, Ray, the connector or the tooling
(DESIGN.md §7)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Iterator

import pytest

# Ray too: only the ray executor imports it, lazily, when a run starts.
BLOCKED = ("confluent_kafka", "prometheus_client", "connector", "tooling", "ray")


def _is_engine(name: str) -> bool:
    return name == "engine" or name.startswith("engine.")


def _is_blocked(name: str) -> bool:
    return any(name == b or name.startswith(f"{b}.") for b in BLOCKED)


@pytest.fixture
def engine_without_kafka() -> Iterator[None]:
    """Drop engine modules and make the blocked packages unimportable; restore afterwards."""
    saved = {n: m for n, m in sys.modules.items() if _is_engine(n) or _is_blocked(n)}
    for name in saved:
        del sys.modules[name]
    for name in BLOCKED:
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        yield
    finally:
        for name in [n for n in sys.modules if _is_engine(n) or _is_blocked(n)]:
            del sys.modules[name]
        sys.modules.update(saved)


def test_blocking_works(engine_without_kafka: None) -> None:
    for name in BLOCKED:
        with pytest.raises(ImportError):
            importlib.import_module(name)


def test_engine_and_all_its_modules_import_without_kafka(engine_without_kafka: None) -> None:
    engine = importlib.import_module("engine")
    importlib.import_module("engine.errors")
    imported = ["engine", "engine.errors"]
    for module in pkgutil.walk_packages(engine.__path__, prefix="engine."):
        importlib.import_module(module.name)
        imported.append(module.name)
    assert len(imported) > 2, "walk_packages found no engine submodules"
    leaked = sorted(n for n, m in sys.modules.items() if _is_blocked(n) and m is not None)
    assert leaked == [], f"engine pulled in {leaked}"
