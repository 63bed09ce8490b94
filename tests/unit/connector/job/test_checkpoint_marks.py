"""Output marks on disk: written before each snapshot (once its output is delivered), kept
and pruned with it, read for the snapshot a job resumes from; a snapshot without them is not
resumed; starting over deletes everything of the job."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config import load_config
from connector.errors import ConfigError, ConnectorError
from connector.job.checkpoints import FileCheckpoints, Manifest
from connector.job.run import _resumed_marks, build_job
from connector.output.verify import OutputMarks, PartitionMark
from engine.checkpoint import EngineSnapshot
from engine.positions import LogPosition, PartitionPosition


def _snapshot(seq: int) -> EngineSnapshot:
    position = LogPosition(seq, 1, {("t", 0): PartitionPosition(seq, 1000 + seq)})
    return EngineSnapshot(position, "batch", 1, 10, (b"state-%d" % seq,))


def _marks(offset: int) -> OutputMarks:
    mark = PartitionMark("out", 0, 0, offset, offset // 2, "t/0@1")
    return OutputMarks({"out": 1, "dlq": 1}, {("out", 0): mark})


def test_marks_are_written_before_their_snapshot_and_pruned_with_it(tmp_path: Path) -> None:
    asked: list[int] = []
    order: list[str] = []
    directory = tmp_path / "j"

    def marks() -> OutputMarks:
        # Asked after the flush, before the snapshot file exists.
        order.append("marks")
        asked.append(len(asked))
        assert not list(directory.glob(f"ckpt-{10 * len(asked):020d}.snap"))
        return _marks(10 * len(asked))

    store = FileCheckpoints(
        tmp_path,
        job="j",
        every_epochs=1,
        every_seconds=3600,
        keep=2,
        before_save=lambda: order.append("flush"),
        output_marks=marks,
    )
    for seq in (10, 20, 30):
        store.save(_snapshot(seq))
    assert order == ["flush", "marks"] * 3
    names = sorted(p.name for p in directory.glob("ckpt-*"))
    assert names == [
        f"ckpt-{20:020d}.out.json",
        f"ckpt-{20:020d}.snap",
        f"ckpt-{30:020d}.out.json",
        f"ckpt-{30:020d}.snap",
    ]
    latest = store.latest()
    assert latest is not None and store.output_marks(latest) == _marks(30)


def test_marks_left_by_a_crash_before_their_snapshot_are_pruned(tmp_path: Path) -> None:
    store = FileCheckpoints(
        tmp_path, job="j", every_epochs=1, every_seconds=3600, output_marks=lambda: _marks(5)
    )
    orphan = tmp_path / "j" / f"ckpt-{15:020d}.out.json"
    orphan.write_text(_marks(7).to_json())
    store.save(_snapshot(20))
    assert not orphan.exists()


def test_damaged_marks_say_how_to_start_over(tmp_path: Path) -> None:
    store = FileCheckpoints(
        tmp_path, job="j", every_epochs=1, every_seconds=3600, output_marks=lambda: _marks(5)
    )
    store.save(_snapshot(20))
    (tmp_path / "j" / f"ckpt-{20:020d}.out.json").write_text("{")
    with pytest.raises(ConnectorError, match=r"damaged .* --restart-from-scratch"):
        store.output_marks(_snapshot(20))


def test_a_snapshot_without_marks_is_not_resumed(tmp_path: Path) -> None:
    # As taken by a restream from before output marks: no marks file beside it.
    store = FileCheckpoints(tmp_path, job="j", every_epochs=1, every_seconds=3600)
    store.save(_snapshot(20))
    config = load_config(
        {"job_id": "j", "bootstrap_servers": "x:9", "pipeline": "social-spam"}, environ={}
    )
    snapshot = store.latest()
    assert snapshot is not None and store.output_marks(snapshot) is None
    with pytest.raises(ConfigError, match="does not record what its output topics held") as err:
        _resumed_marks(store, snapshot, build_job(config))
    assert "--restart-from-scratch" in str(err.value)


def test_discard_deletes_the_jobs_checkpoints_and_manifest(tmp_path: Path) -> None:
    store = FileCheckpoints(
        tmp_path, job="j", every_epochs=1, every_seconds=3600, output_marks=lambda: _marks(5)
    )
    store.write_manifest(Manifest("j", "f", {}, ()))
    store.save(_snapshot(10))
    store.save(_snapshot(20))
    (tmp_path / "j" / "ckpt-x.snap.tmp").write_bytes(b"torn")
    assert store.discard() == 2
    assert list((tmp_path / "j").iterdir()) == []
    assert store.latest() is None and store.manifest("f", {}) is None
