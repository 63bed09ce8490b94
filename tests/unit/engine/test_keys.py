"""KeyCodec: injective ids, the same for a column as for its keys one by one."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.keys import KeyCodec, Unordered, scalar_key

INTS = st.one_of(
    st.integers(-5, 5),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([2**30, -(2**30), 2**30 - 1, 2**62, -(2**62), 2**62 - 1]),
)
KEYS = st.one_of(
    INTS,
    st.tuples(INTS, INTS),
    st.tuples(INTS, INTS, INTS),
    st.text(max_size=3),
    st.tuples(st.text(max_size=2), INTS),
)


@given(st.lists(KEYS, max_size=40))
def test_ids_are_injective(keys: list[object]) -> None:
    codec = KeyCodec()
    ids = [codec.encode_one(k) for k in keys]  # type: ignore[arg-type]
    for i, a in enumerate(keys):
        for j, b in enumerate(keys):
            assert (ids[i] == ids[j]) == (a == b and type(a) is type(b)), (a, b)


# No deadline: the first call in a process compiles the pair packing (or loads it).
@settings(deadline=None)
@given(st.lists(st.tuples(INTS, INTS), max_size=30), st.booleans())
def test_column_ids_equal_scalar_ids(pairs: list[tuple[int, int]], unordered: bool) -> None:
    codec = KeyCodec()
    a = np.array([p[0] for p in pairs], dtype=np.int64)
    b = np.array([p[1] for p in pairs], dtype=np.int64)
    spec = Unordered("a", "b") if unordered else ("a", "b")
    ids = codec.encode(spec, {"a": a, "b": b})

    class E:
        def __init__(self, x: int, y: int) -> None:
            self.a, self.b = x, y

    expected = [codec.encode_one(scalar_key(spec, E(x, y))) for x, y in pairs]  # type: ignore[arg-type]
    assert ids.tolist() == expected
    singles = codec.encode("a", {"a": a})
    assert singles.tolist() == [codec.encode_one(x) for x, _ in pairs]


@settings(deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), max_size=30),
    st.sampled_from(["int8", "int32", "uint8", "uint16", "uint32", "uint64", "bool"]),
    st.booleans(),
)
def test_pair_ids_do_not_depend_on_the_columns_integer_type(
    pairs: list[tuple[int, int]], dtype: str, unordered: bool
) -> None:
    """Narrow integer columns take the compiled packing (int64 ones too); uint64 the numpy
    path. Either way a pair's id is that of the same Python ints."""
    codec = KeyCodec()
    kind = np.dtype(dtype)
    values = [(min(x, 1), min(y, 1)) if kind.kind == "b" else (x % 128, y % 128) for x, y in pairs]
    a = np.array([v[0] for v in values], dtype=kind)
    b = np.array([v[1] for v in values], dtype=kind)
    spec = Unordered("a", "b") if unordered else ("a", "b")
    ids = codec.encode(spec, {"a": a, "b": b})
    assert ids.dtype == np.int64
    expected = [
        codec.encode_one((min(x, y), max(x, y)) if unordered else (x, y)) for x, y in values
    ]
    assert ids.tolist() == expected


def test_pairs_too_wide_to_pack_are_interned_in_row_order() -> None:
    codec = KeyCodec()
    wide = 2**40
    a = np.array([wide, 3, 5, wide, 7], dtype=np.int64)
    b = np.array([1, wide + 1, 5, 1, 2], dtype=np.int64)
    ids = codec.encode(Unordered("a", "b"), {"a": a, "b": b})
    assert ids[0] == ids[3]
    assert len(set(ids.tolist())) == 4
    # Interned in first-seen order: (1, 2**40) first, then (3, 2**40 + 1).
    assert ids[0] < ids[1] < 0 < ids[2]
    assert ids.tolist() == [
        codec.encode_one(k) for k in [(1, wide), (3, wide + 1), (5, 5), (1, wide), (2, 7)]
    ]
