"""Output chunks keep each record's own field set, whatever shares the chunk; their canonical
bytes, which every equivalence test compares, tell every difference a sink would write."""

from __future__ import annotations

import math
import pickle
import struct

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


def test_the_seq_of_a_record_is_part_of_its_bytes() -> None:
    # A record attributed to the next event (seq + 1) is a different output: the sink
    # writes seq in restream.seq and a restart skips output by it.
    record = [(1, {"a": 1})]
    at_0 = OutputChunk.from_records("s", [0], record)
    at_1 = OutputChunk.from_records("s", [1], record)
    assert canonical_bytes([at_0]) != canonical_bytes([at_1])


def test_floats_compare_by_their_bits() -> None:
    nan = float("nan")
    other_nan = struct.unpack(">d", bytes.fromhex("7ff8000000000001"))[0]
    assert math.isnan(other_nan)

    def one(value: object) -> bytes:
        return canonical_bytes([OutputChunk.from_records("s", [0], [(1, {"a": value})])])["s"]

    assert one(nan) != one(other_nan)
    assert one(nan) == one(float("nan"))
    assert one(0.0) != one(-0.0)
    assert one(1) != one(1.0) != one(True)
    assert one(0.1) != one(float(np.float32(0.1)))
    # Inside containers too, and numpy scalars like the Python values they equal.
    assert one((nan, 1)) != one((other_nan, 1))
    assert one(np.float32(0.5)) == one(0.5)
    assert one(np.int64(3)) == one(3)


def test_the_key_compares_exactly_too() -> None:
    nan_key = OutputChunk.from_records("s", [0], [(float("nan"), {})])
    zero_key = OutputChunk.from_records("s", [0], [(0.0, {})])
    neg_zero_key = OutputChunk.from_records("s", [0], [(-0.0, {})])
    assert canonical_bytes([zero_key]) != canonical_bytes([neg_zero_key])
    assert canonical_bytes([nan_key]) != canonical_bytes([zero_key])
