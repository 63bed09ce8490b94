"""Moving objects through run-directory files: round trips, and string dictionaries sent once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.executors.arena import ReceivedObjects, RunDir, SentObjects, load, store
from tests.budget import examples


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
    import tempfile
    from collections import deque

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
