"""Output chunks keep each record's own field set, whatever shares the chunk."""

from __future__ import annotations

import pickle

import numpy as np

from engine.output import ABSENT, OutputChunk, absent_column, canonical_bytes


def test_records_keep_their_own_fields_in_a_shared_chunk() -> None:
    records = [(1, {"a": 1}), (2, {"a": 2, "b": None}), (3, {"b": 3})]
    chunk = OutputChunk.from_records("s", [0, 1, 2], records)
    assert chunk.records() == records
    alone = [OutputChunk.from_records("s", [i], [r]) for i, r in enumerate(records)]
    assert canonical_bytes([chunk]) == canonical_bytes(alone)


def test_an_explicit_none_is_not_an_absent_field() -> None:
    with_none = OutputChunk.from_records("s", [0], [(1, {"a": None})])
    without = OutputChunk.from_records("s", [0], [(1, {})])
    assert canonical_bytes([with_none]) != canonical_bytes([without])


def test_absent_survives_pickling_as_the_same_marker() -> None:
    col = absent_column(3)
    back = pickle.loads(pickle.dumps(col, protocol=5))
    assert all(v is ABSENT for v in back)
    assert pickle.loads(pickle.dumps(ABSENT)) is ABSENT
    chunk = OutputChunk("s", np.arange(3), np.arange(3), {"a": back})
    assert chunk.records() == [(0, {}), (1, {}), (2, {})]
