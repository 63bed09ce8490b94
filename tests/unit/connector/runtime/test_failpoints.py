"""Fail-point settings: which point, on which hit, and how the process dies there."""

from __future__ import annotations

import signal

import pytest

from connector.runtime import failpoints


def test_points_parse_with_their_hit_and_way_of_dying() -> None:
    assert failpoints._parse("checkpoint.write:2, sink.epoch:5:segv,other") == {
        "checkpoint.write": (2, "kill"),
        "sink.epoch": (5, "segv"),
        "other": (1, "kill"),
    }
    assert failpoints._parse("") == {}


def test_a_segv_point_raises_sigsegv_on_its_hit(monkeypatch: pytest.MonkeyPatch) -> None:
    raised: list[int] = []
    monkeypatch.setattr(failpoints, "_POINTS", {"p": (2, "segv")})
    monkeypatch.setattr(failpoints, "_HITS", {})
    monkeypatch.setattr(failpoints.signal, "raise_signal", raised.append)
    failpoints.hit("p")
    assert raised == []
    failpoints.hit("p")
    assert raised == [signal.SIGSEGV]
