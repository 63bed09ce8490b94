"""Moving objects through run-directory files: round trips, and string dictionaries sent once."""

from __future__ import annotations

import tempfile
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import EngineError
from engine.executors.arena import ReceivedObjects, RunDir, SentObjects, load, store
from tests.support.budget import examples


def _strings(tag: int, n: int = 2000) -> np.ndarray:
    out = np.empty(n, dtype=object)
    out[:] = [f"text {tag} {i}" for i in range(n)]
    return out


def test_round_trip_keeps_arrays_and_maps_numeric_ones(tmp_path: Path) -> None:
    obj = {"a": np.arange(10_000), "s": _strings(0, 10)}
    store(tmp_path / "f", obj)
    back = load(tmp_path / "f")
    assert np.array_equal(back["a"], obj["a"]) and not back["a"].flags.writeable
    assert back["s"].tolist() == obj["s"].tolist()


def test_a_dictionary_shared_by_epochs_is_written_once(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    sent, received = SentObjects(run_dir), ReceivedObjects(run_dir)
    words = _strings(1)
    store(tmp_path / "e0", {"codes": np.arange(5), "values": words}, sent)
    assert [p.name for p in sent.written] == ["obj0"]
    assert sent.written[0].stat().st_size > 20_000  # the strings are there, not in e0
    e0 = load(tmp_path / "e0", received)
    for path in sent.written:  # the coordinator deletes it once every worker read e0
        path.unlink()
    sent.written = []
    second = store(tmp_path / "e1", {"codes": np.arange(5), "values": words}, sent)
    assert sent.written == [] and second < 1000
    e1 = load(tmp_path / "e1", received)
    assert e1["values"] is e0["values"]  # the worker's one copy
    assert e1["values"].tolist() == words.tolist()
    # Small object arrays travel in band, every time.
    store(tmp_path / "e2", _strings(2, 10), sent)
    assert sent.written == []


@settings(max_examples=examples(60), deadline=None)
@given(
    keep=st.integers(1, 4),
    picks=st.lists(st.lists(st.integers(0, 7), min_size=1, max_size=3), min_size=1, max_size=30),
)
def test_workers_keep_every_array_the_coordinator_may_still_name(
    keep: int, picks: list[list[int]]
) -> None:
    """As the coordinator does: two epochs in flight (epoch i+1 stored before the worker
    reads epoch i), and an epoch's files deleted as soon as the worker has read it; a worker
    that dropped an array the coordinator still names would fail to load a later epoch."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = RunDir(Path(tmp))
        pool = [_strings(i) for i in range(8)]
        sent, received = SentObjects(run_dir, keep), ReceivedObjects(run_dir, keep)
        in_flight: deque[tuple[list[Path], list[int]]] = deque()
        for i, chosen in enumerate([*picks, None, None]):
            if chosen is not None:
                path = run_dir.file(f"epoch{i}")
                store(path, [pool[c] for c in chosen], sent)
                in_flight.append(([path, *sent.written], chosen))
                sent.written = []
            if len(in_flight) == 2 or (chosen is None and in_flight):
                files, wanted = in_flight.popleft()
                back = load(files[0], received)
                assert [b.tolist() for b in back] == [pool[c].tolist() for c in wanted]
                for f in files:
                    f.unlink()
        assert list(Path(tmp).iterdir()) == []  # no array file outlives its epoch


class _TwoInFlight:
    """``ParallelExecutor._drive`` and one worker, without processes: epoch i+1 is stored
    before the worker reads epoch i, and an epoch's files are deleted once it has been read."""

    def __init__(self, run_dir: RunDir, keep: int | None) -> None:
        self.run_dir = run_dir
        if keep is None:  # as the executor and its workers construct them
            self.sent, self.received = SentObjects(run_dir), ReceivedObjects(run_dir)
        else:
            self.sent, self.received = SentObjects(run_dir, keep), ReceivedObjects(run_dir, keep)
        self.loaded: list[list[np.ndarray]] = []
        self._in_flight: deque[list[Path]] = deque()

    def send(self, arrays: list[np.ndarray]) -> list[str]:
        """Store the next epoch; the names of the array files it wrote."""
        path = self.run_dir.file(f"epoch{len(self.loaded) + len(self._in_flight)}")
        store(path, arrays, self.sent)
        self._in_flight.append([path, *self.sent.written])
        written, self.sent.written = [p.name for p in self.sent.written], []
        if len(self._in_flight) == 2:
            self._read_oldest()
        return written

    def drain(self) -> None:
        while self._in_flight:
            self._read_oldest()

    def _read_oldest(self) -> None:
        files = self._in_flight.popleft()
        self.loaded.append(load(files[0], self.received))
        for f in files:
            f.unlink()


@pytest.mark.parametrize("keep", [None, 1, 2, 3, 4])
def test_an_array_named_again_at_the_window_edge_is_not_resent_and_the_worker_still_holds_it(
    tmp_path: Path, keep: int | None
) -> None:
    pipe = _TwoInFlight(RunDir(tmp_path), keep)
    edge = pipe.sent.keep  # the worker must agree with whatever window the coordinator keeps
    words = _strings(0)
    newer = [_strings(i) for i in range(1, edge + 1)]  # alive throughout: no id is reused
    assert pipe.send([words]) == ["obj0"]
    for i in range(1, edge):
        assert pipe.send([newer[i - 1]]) == [f"obj{i}"]
    # obj0 is now the oldest name both windows hold. This epoch is stored before the worker
    # has read the one that wrote obj{edge - 1}, and obj0's file went with epoch 0: only the
    # worker's copy can serve it.
    assert pipe.send([words]) == []
    # Storing the next epoch is when the worker reads that one. One newer array pushes words
    # out of both windows; from then on it travels again.
    assert pipe.send([newer[edge - 1]]) == [f"obj{edge}"]
    assert pipe.send([words]) == [f"obj{edge + 1}"]
    pipe.drain()
    first, again, resent = pipe.loaded[0][0], pipe.loaded[edge][0], pipe.loaded[edge + 2][0]
    assert again is first  # the copy read in epoch 0, not a second read of some file
    assert resent is not first and resent.tolist() == words.tolist()
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=examples(100), deadline=None)
@given(
    keep=st.integers(1, 4),
    gap=st.integers(0, 5),
    cuts=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_an_array_named_again_is_resent_exactly_when_gap_newer_arrays_left_the_window(
    keep: int, gap: int, cuts: list[bool]
) -> None:
    # The stream: words, ``gap`` arrays never seen before, words again, cut into epochs at
    # ``cuts``. Uncut, words is named twice in one epoch whose files still exist, so only
    # identity tells the worker's kept copy from a second read of obj0.
    words = _strings(0)
    stream = [words, *(_strings(i) for i in range(1, gap + 1)), words]
    epochs = [[stream[0]]]
    for array, cut in zip(stream[1:], cuts, strict=False):
        if cut:
            epochs.append([])
        epochs[-1].append(array)
    with tempfile.TemporaryDirectory() as tmp:
        pipe = _TwoInFlight(RunDir(Path(tmp)), keep)
        written = [name for epoch in epochs for name in pipe.send(epoch)]
        pipe.drain()
        back = [array for epoch in pipe.loaded for array in epoch]
        assert [b.tolist() for b in back] == [s.tolist() for s in stream]
        kept = gap < keep  # obj0 is still among the ``keep`` newest names
        assert written == [f"obj{i}" for i in range(gap + 1 if kept else gap + 2)]
        assert (back[-1] is back[0]) == kept
        assert list(Path(tmp).iterdir()) == []


def test_a_window_of_no_arrays_is_refused(tmp_path: Path) -> None:
    for side in (SentObjects, ReceivedObjects):
        with pytest.raises(EngineError, match="keep must be >= 1"):
            side(RunDir(tmp_path), 0)


def test_a_received_array_is_read_only(tmp_path: Path) -> None:
    # Later epochs that name it get the same object: an edit in one would show in the next.
    pipe = _TwoInFlight(RunDir(tmp_path), None)
    pipe.send([_strings(0)])
    pipe.drain()
    with pytest.raises(ValueError, match="read-only"):
        pipe.loaded[0][0][0] = "edited"


def test_dead_runs_directories_are_swept_and_their_size_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import os

    mine = RunDir.create(tmp_path)
    # A dead pid (beyond pid_max), and our own pid recorded with another start time: a
    # coordinator of a restarted container that got the same pid.
    dead = tmp_path / "restream-4194399-0123456789ab"
    reused = tmp_path / f"restream-{os.getpid()}-ba9876543210"
    for d in (dead, reused):
        d.mkdir()
        (d / "epoch0").write_bytes(b"x" * 100_000)
    (reused / "owner").write_text(f"{os.getpid()} 1\n")
    other = tmp_path / "not-a-run-dir"
    other.mkdir()
    with caplog.at_level("WARNING", logger="engine.executors.arena"):
        freed = RunDir.create(tmp_path)
    assert not dead.exists() and not reused.exists()
    assert mine.path.exists() and other.exists()
    assert freed.path.exists() and freed.path != mine.path
    assert any(
        "removed 2 run directories of dead runs" in r.getMessage() and "MiB" in r.getMessage()
        for r in caplog.records
    )


def test_a_full_shared_memory_directory_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    from engine.errors import SharedMemoryError

    run = RunDir.create(tmp_path)

    def full(*_args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("engine.executors.arena.os.replace", full)
    with pytest.raises(
        SharedMemoryError, match=r"no room for epoch3 \(.* bytes\) in .*give it more room"
    ):
        store(run.file("epoch3"), np.arange(10))
    assert list(run.path.iterdir()) == [run.path / "owner"]  # no temporary file left
