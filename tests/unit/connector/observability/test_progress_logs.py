"""The progress display and the log format: a bar on a TTY, JSON lines otherwise."""

from __future__ import annotations

import io
import json
import logging

import pytest

from connector.observability.logging_setup import configure_logging
from connector.observability.metrics import JobMetrics
from connector.observability.progress import Progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _metrics() -> JobMetrics:
    m = JobMetrics(job="j", pipeline="p", executor="batch")
    m.set_ranges([("t", 0, 0, 400)])
    m.start_clock()
    m.epoch_done(100, 0, 3_600_000, {})
    return m


def test_a_bar_on_a_terminal() -> None:
    out = _Tty()
    progress = Progress(_metrics(), "auto", out)
    assert progress.mode == "bar"
    progress.update()
    text = out.getvalue()
    assert text.startswith("\r[#######-----------------------]  25.0%")
    assert "ev/s" in text and "x real time" in text and "ETA" in text
    progress.update(final=True)
    assert out.getvalue().endswith("\n")


def test_log_lines_elsewhere(caplog: pytest.LogCaptureFixture) -> None:
    progress = Progress(_metrics(), "auto", io.StringIO(), every_s=3600)
    assert progress.mode == "log"
    with caplog.at_level(logging.INFO, logger="connector.observability.progress"):
        progress.update()
        progress.update()  # within every_s: no second line
        progress.update(final=True)
    lines = [r for r in caplog.records if r.name == "connector.observability.progress"]
    assert len(lines) == 2
    assert lines[0].fields["progress"] == 0.25  # type: ignore[attr-defined]


def test_first_line_on_a_freshly_booted_machine(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The monotonic clock starts near zero at boot: younger than every_s on a new machine.
    monkeypatch.setattr("connector.observability.progress.time.monotonic", lambda: 5.0)
    progress = Progress(_metrics(), "log", io.StringIO(), every_s=3600)
    with caplog.at_level(logging.INFO, logger="connector.observability.progress"):
        progress.update()
    assert [r.name for r in caplog.records] == ["connector.observability.progress"]


def test_none_is_silent() -> None:
    out = _Tty()
    Progress(_metrics(), "none", out).update(final=True)
    assert out.getvalue() == ""


def test_json_logs_when_not_a_terminal() -> None:
    stream = io.StringIO()
    assert configure_logging("auto", "INFO", stream) is True
    logging.getLogger("restream.test").info("hello %s", "world", extra={"fields": {"n": 3}})
    entry = json.loads(stream.getvalue().splitlines()[-1])
    assert entry["message"] == "hello world"
    assert entry["level"] == "info" and entry["logger"] == "restream.test" and entry["n"] == 3
    text = _Tty()
    assert configure_logging("auto", "INFO", text) is False
    logging.getLogger("restream.test").info("plain", extra={"fields": {"n": 4}})
    assert "plain n=4" in text.getvalue()
    # One handler at a time: configuring again replaced the JSON one.
    assert stream.getvalue().count("\n") == 1
