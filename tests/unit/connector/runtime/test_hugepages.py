"""numpy's huge-page advice: off for a replay unless the environment asks for it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from numpy._core import multiarray

from connector.runtime.hugepages import ENV, prefer_small_pages


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    before = multiarray._get_madvise_hugepage()
    yield
    multiarray._set_madvise_hugepage(before)


def test_off_by_default_here_and_for_processes_started_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    multiarray._set_madvise_hugepage(True)
    assert prefer_small_pages() is False
    assert multiarray._get_madvise_hugepage() is False
    assert os.environ[ENV] == "0"


@pytest.mark.parametrize(("value", "on"), [("1", True), ("0", False)])
def test_the_environment_decides_when_set(
    monkeypatch: pytest.MonkeyPatch, value: str, on: bool
) -> None:
    monkeypatch.setenv(ENV, value)
    multiarray._set_madvise_hugepage(not on)
    assert prefer_small_pages() is on
    assert multiarray._get_madvise_hugepage() is on
