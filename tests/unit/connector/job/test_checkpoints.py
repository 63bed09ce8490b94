"""The checkpoint directory: atomic snapshots, pruning, damage, manifests, stopping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from connector.errors import ConfigError, ConnectorError
from connector.job import checkpoints
from connector.job.checkpoints import FileCheckpoints, Manifest, Stopped, fingerprint, resume_ranges
from connector.positions.ranges import PartitionRange
from engine.checkpoint import EngineSnapshot
from engine.log import Epoch
from engine.positions import LogPosition, PartitionPosition


def _snapshot(seq: int, epoch: int = 1) -> EngineSnapshot:
    position = LogPosition(seq, epoch, {("t", 0): PartitionPosition(seq, 1000 + seq)})
    return EngineSnapshot(position, "batch", 1, 10, (b"state-%d" % seq,))


def _epoch(index: int) -> Epoch:
    empty = np.empty(0, dtype=np.int64)
    return Epoch(index, 0, 0, empty, np.empty(0, dtype=np.int8), (), (), {})


def _store(tmp_path: Path, **kw: object) -> FileCheckpoints:
    values: dict[str, object] = {"job": "j", "every_epochs": 2, "every_seconds": 3600}
    values.update(kw)
    return FileCheckpoints(tmp_path, **values)  # type: ignore[arg-type]


def test_snapshots_round_trip_and_old_ones_are_pruned(tmp_path: Path) -> None:
    flushed: list[int] = []
    store = _store(tmp_path, keep=2, before_save=lambda: flushed.append(1))
    for seq in (10, 20, 30):
        store.save(_snapshot(seq))
    assert len(flushed) == 3  # the output is flushed before every snapshot
    assert sorted(p.name for p in (tmp_path / "j").glob("ckpt-*")) == [
        f"ckpt-{20:020d}.snap",
        f"ckpt-{30:020d}.snap",
    ]
    latest = _store(tmp_path).latest()
    assert latest is not None and latest.position.seq == 30 and latest.states == (b"state-30",)


def test_a_damaged_snapshot_is_skipped_for_the_previous_one(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.save(_snapshot(10))
    store.save(_snapshot(20))
    newest = tmp_path / "j" / f"ckpt-{20:020d}.snap"
    newest.write_bytes(newest.read_bytes()[:-3])
    latest = _store(tmp_path).latest()
    assert latest is not None and latest.position.seq == 10


def test_when_every_snapshot_is_damaged_the_message_says_what_to_delete(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.save(_snapshot(10))
    (tmp_path / "j" / f"ckpt-{10:020d}.snap").write_bytes(b"garbage")
    with pytest.raises(ConnectorError, match=r"delete the ckpt-\*\.snap files"):
        _store(tmp_path).latest()


def test_torn_temporary_files_are_removed_and_never_read(tmp_path: Path) -> None:
    (tmp_path / "j").mkdir()
    torn = tmp_path / "j" / f"ckpt-{5:020d}.snap.tmp"
    torn.write_bytes(b"half")
    assert _store(tmp_path).latest() is None
    assert not torn.exists()


def test_due_every_n_epochs_and_stop_after_the_next_snapshot(tmp_path: Path) -> None:
    store = _store(tmp_path, every_epochs=3)
    assert [store.due(_epoch(i)) for i in range(3)] == [False, False, True]
    store.save(_snapshot(30, epoch=3))
    store.request_stop()
    assert store.due(_epoch(3))
    with pytest.raises(Stopped, match="seq 40"):
        store.save(_snapshot(40, epoch=4))


def test_a_manifest_of_other_settings_is_refused_naming_what_changed(tmp_path: Path) -> None:
    store = _store(tmp_path)
    parts = {"epoch_size": 10, "pipeline": "p", "start": "earliest"}
    ranges = (PartitionRange("t", 0, 0, 5, 0, 5),)
    store.write_manifest(Manifest("j", fingerprint(parts), parts, ranges))
    again = store.manifest(fingerprint(parts), parts)
    assert again is not None and again.ranges == ranges
    changed = {**parts, "epoch_size": 20}
    with pytest.raises(ConfigError, match=r"changed: epoch_size was 10, now 20\)"):
        store.manifest(fingerprint(changed), changed)
    # Values too long (or not scalars) to quote are only named.
    plan = {**parts, "plan": ["op"] * 50, "start": "x" * 41}
    with pytest.raises(ConfigError, match=r"changed: plan, start\)"):
        store.manifest(fingerprint(plan), plan)


def test_resume_ranges_start_after_the_snapshot(tmp_path: Path) -> None:
    ranges = (PartitionRange("t", 0, 0, 100, 0, 100), PartitionRange("t", 1, 5, 50, 0, 50))
    snapshot = _snapshot(40)
    assert resume_ranges(ranges, None) == ranges
    resumed = resume_ranges(ranges, snapshot)
    assert (resumed[0].start, resumed[0].end) == (40, 100)
    assert resumed[1] == ranges[1]  # no record of it was in the log prefix yet


def test_an_unwritable_directory_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="checkpoint_dir"):
        FileCheckpoints(blocker, job="j", every_epochs=1, every_seconds=1)


def test_another_jobs_manifest_is_refused(tmp_path: Path) -> None:
    parts = {"pipeline": "p"}
    other = FileCheckpoints(tmp_path, job="other", every_epochs=1, every_seconds=1)
    other.write_manifest(Manifest("other", fingerprint(parts), parts, ()))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "manifest.json").write_bytes(other.manifest_path.read_bytes())
    mine = FileCheckpoints(tmp_path, job="mine", every_epochs=1, every_seconds=1)
    with pytest.raises(ConfigError, match="belongs to job 'other'"):
        mine.manifest(fingerprint(parts), parts)


def _snaps(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "j").glob("ckpt-*.snap"))


def test_with_flush_then_a_snapshot_is_written_only_once_the_flush_is_done(
    tmp_path: Path,
) -> None:
    asked: list[object] = []
    synced: list[int] = []
    store = _store(
        tmp_path,
        keep=5,
        before_save=lambda: synced.append(1),
        flush_then=asked.append,
    )
    store.save(_snapshot(10, epoch=1))
    store.save(_snapshot(20, epoch=2))
    # The run went on: nothing written, the previous snapshot (none) is still the one to use.
    assert _snaps(tmp_path) == [] and store.saved == 0 and len(asked) == 2
    asked[0]()  # the output up to seq 10 is delivered
    assert _snaps(tmp_path) == [f"ckpt-{10:020d}.snap"]
    asked[1]()
    assert _snaps(tmp_path) == [f"ckpt-{10:020d}.snap", f"ckpt-{20:020d}.snap"]
    assert store.saved == 2 and synced == []


def test_with_flush_then_a_stopping_run_still_waits_for_its_last_snapshot(
    tmp_path: Path,
) -> None:
    asked: list[object] = []
    synced: list[int] = []
    store = _store(tmp_path, before_save=lambda: synced.append(1), flush_then=asked.append)
    store.request_stop()
    assert store.due(_epoch(3))
    with pytest.raises(Stopped, match="seq 40"):
        store.save(_snapshot(40, epoch=4))
    assert synced == [1] and asked == []
    assert _snaps(tmp_path) == [f"ckpt-{40:020d}.snap"]


def test_a_snapshot_is_streamed_and_its_fail_point_fires_at_half_of_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two state blobs of different sizes: the half falls inside the larger one.
    states = (b"a" * 1000, b"b" * 5001)
    position = LogPosition(7, 1, {("t", 0): PartitionPosition(7, 1007)})
    snapshot = EngineSnapshot(position, "parallel", 2, 10, states)
    expected = snapshot.to_bytes()
    tmp = tmp_path / "j" / f"ckpt-{7:020d}.snap.tmp"
    seen: list[tuple[str, bytes]] = []

    def hit(name: str) -> None:
        seen.append((name, tmp.read_bytes() if tmp.exists() else b""))

    monkeypatch.setattr("connector.job.checkpoints.failpoints.hit", hit)
    store = _store(tmp_path)
    store.save(snapshot)
    assert [name for name, _ in seen] == ["checkpoint.flushed", "checkpoint.write"]
    assert seen[1][1] == expected[: len(expected) // 2]  # a torn file: exactly the first half
    assert (tmp_path / "j" / f"ckpt-{7:020d}.snap").read_bytes() == expected
    assert store.last_bytes == len(expected) and not tmp.exists()


def test_a_snapshot_that_cannot_be_written_fails_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(path: Path, pieces: list[bytes], failpoint: str | None = None) -> int:
        raise OSError(28, "No space left on device")

    store = _store(tmp_path)
    monkeypatch.setattr(checkpoints, "_write_atomically", full)
    with pytest.raises(ConnectorError, match=r"ckpt-0+10\.snap .*No space left.*make room"):
        store.save(_snapshot(10))
    assert store.saved == 0


def test_a_write_that_fails_midway_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def die(name: str) -> None:
        if name == "checkpoint.write":
            raise OSError(28, "No space left on device")

    monkeypatch.setattr("connector.job.checkpoints.failpoints.hit", die)
    store = _store(tmp_path)
    with pytest.raises(ConnectorError, match="plus the one being written"):
        store.save(_snapshot(10))
    assert list((tmp_path / "j").iterdir()) == []


def test_the_torn_write_fail_point_fires_for_an_empty_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    monkeypatch.setattr("connector.job.checkpoints.failpoints.hit", seen.append)
    for pieces in ([], [b""], [b"", b""]):
        assert checkpoints._write_atomically(tmp_path / "x", pieces, "p") == 0
    assert seen == ["p", "p", "p"] and (tmp_path / "x").read_bytes() == b""


def test_reading_a_manifest_before_the_lease_creates_and_deletes_nothing(tmp_path: Path) -> None:
    """A run asks for its manifest before it holds the job's lease: another run's torn write
    in progress (a .tmp file) and an absent directory stay as they are."""
    parts = {"pipeline": "p"}
    assert checkpoints.read_manifest(tmp_path, "j", fingerprint(parts), parts) is None
    assert not (tmp_path / "j").exists()
    store = _store(tmp_path)
    store.write_manifest(Manifest("j", fingerprint(parts), parts, (), {"pay": '{"x": 1}'}))
    torn = tmp_path / "j" / "ckpt-00000000000000000042.snap.tmp"
    torn.write_bytes(b"half")
    got = checkpoints.read_manifest(tmp_path, "j", fingerprint(parts), parts)
    assert got is not None and got.inferred == {"pay": '{"x": 1}'}  # inferred schemas kept
    assert torn.exists()
    changed = {"pipeline": "q"}
    with pytest.raises(ConfigError, match="changed: pipeline"):
        checkpoints.read_manifest(tmp_path, "j", fingerprint(changed), changed)


def test_manifests_written_before_schemas_were_inferred_still_load() -> None:
    text = '{"fingerprint": "f", "job": "j", "parts": {}, "ranges": [["t", 0, 0, 5, 0, 5]]}'
    manifest = Manifest.from_json(text)
    assert manifest.inferred == {} and manifest.ranges[0].end == 5
