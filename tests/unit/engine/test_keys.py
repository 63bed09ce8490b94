"""KeyCodec: injective ids, the same for a column as for its keys one by one."""

from __future__ import annotations

import numpy as np
from hypothesis import given
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
