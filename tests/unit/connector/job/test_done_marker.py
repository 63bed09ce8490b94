"""The done marker of a finished job: its file, what it says, when it counts, who removes it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from connector.job.checkpoints import DoneMarker, FileCheckpoints, Manifest, read_done
from connector.output.verify import OutputMarks, PartitionMark


def _marks() -> OutputMarks:
    return OutputMarks(
        {"j.scores": 2, "j.dead-letter": 1},
        {
            ("j.scores", 0): PartitionMark("j.scores", 0, 0, 599, 1234, "in/0@9"),
            ("j.scores", 1): PartitionMark("j.scores", 1, 0, 399, 1200, "in/1@7"),
        },
    )


def _done(fp: str = "f1", job: str = "j") -> DoneMarker:
    return DoneMarker(job, fp, "2026-12-06T04:30:00+00:00", 1_500, _marks())


def _store(tmp_path: Path) -> FileCheckpoints:
    return FileCheckpoints(tmp_path, job="j", every_epochs=2, every_seconds=3600)


def test_round_trip_and_records_per_topic(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write_done(_done())
    back = read_done(tmp_path, "j", "f1")
    assert back == _done()
    # offset + 1 - low per partition; a topic that holds nothing says 0.
    assert back.records() == {"j.dead-letter": 0, "j.scores": 1_000}
    assert back.describe() == (
        "job j already finished at 2026-12-06T04:30:00+00:00: 0 records in j.dead-letter, "
        "1,000 in j.scores (1,500 events replayed), nothing to do"
    )


def test_no_marker_is_no_finished_job(tmp_path: Path) -> None:
    assert read_done(tmp_path, "j", "f1") is None


@pytest.mark.parametrize(
    ("written", "why"), [(_done(fp="f0"), "other settings"), (_done(job="k"), "job 'k'")]
)
def test_a_marker_of_other_settings_or_another_job_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, written: DoneMarker, why: str
) -> None:
    _store(tmp_path).write_done(written)
    with caplog.at_level(logging.WARNING):
        assert read_done(tmp_path, "j", "f1") is None
    assert f"ignoring the done marker {tmp_path / 'j' / 'done.json'}: it is of {why}" in caplog.text


def test_a_damaged_marker_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(tmp_path)
    store.write_done(_done())
    store.done_path.write_text('{"job": "j"', encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert read_done(tmp_path, "j", "f1") is None
    assert "ignoring the damaged done marker" in caplog.text


def test_starting_over_and_a_new_manifest_remove_the_marker(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write_done(_done())
    store.discard()
    assert not store.done_path.exists()
    # A manifest deleted by hand: the job's next start is fresh, and an old marker with the
    # same fingerprint must not make a later restart of it look finished.
    store.write_done(_done())
    store.write_manifest(Manifest("j", "f1", {}, ()))
    assert not store.done_path.exists()
    assert store.manifest_path.exists()
