"""KeyCodec: one id per key as Python's ``==`` sees keys (the serial executor's dicts), the same
for a column as for its keys one by one."""

from __future__ import annotations

import pickle
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.errors import CheckpointError, PipelineError
from engine.keys import KeyCodec, Unordered, canonical_key, scalar_key

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


#: Numbers of other types that may equal an int: what a bool column, a numpy scalar or a
#: float computed by operator code hands to ``view.get``.
EQUAL_NUMBERS = st.one_of(
    st.booleans(),
    st.integers(-5, 5).map(float),
    st.floats(allow_nan=False, allow_infinity=True, width=64),
    st.integers(-5, 5).map(np.int32),
    st.booleans().map(np.bool_),
    st.sampled_from([2.0**62, -(2.0**62), 2.0**70, 0.5]),
    st.sampled_from([Decimal(1), Decimal("1.5"), Fraction(3, 1), Fraction(1, 2), 1 + 0j, 1 + 1j]),
)
MIXED = st.one_of(KEYS, EQUAL_NUMBERS, st.tuples(EQUAL_NUMBERS, EQUAL_NUMBERS | INTS))


@example(
    keys=[True, 1, 1.0, np.int32(1), np.bool_(True), (True, 3), (1, 3), (1.0, np.uint8(3)), 2**70]
)
@example(keys=[float(2**70), 2**70, (0.5, 3), ("a", 1.0), ("a", True)])
@given(st.lists(MIXED, max_size=40))
def test_keys_share_an_id_exactly_when_equal(keys: list[object]) -> None:
    """As in the serial executor's dicts: ``True``, ``1``, ``np.int32(1)`` and ``1.0`` are
    one key, and so are ``(True, 3)`` and ``(1, 3)``; keys that differ never share an id."""
    codec = KeyCodec()
    ids = [codec.encode_one(k) for k in keys]  # type: ignore[arg-type]
    for i, a in enumerate(keys):
        for j, b in enumerate(keys):
            assert (ids[i] == ids[j]) == (_python(a) == _python(b)), (a, b)


def _python(key: object) -> object:
    """``key`` with numpy scalars as the Python values they equal (numpy's ``==`` against a
    tuple broadcasts instead of comparing)."""
    if isinstance(key, np.generic):
        return key.item()
    if isinstance(key, tuple):
        return tuple(_python(k) for k in key)
    return key


@given(st.lists(st.one_of(st.integers(-5, 5), st.booleans(), st.text(max_size=2)), max_size=20))
def test_an_object_column_gives_its_ints_the_ids_of_an_int_column(values: list[object]) -> None:
    """A key field decoded as objects (ints among strings) must address the same keys as the
    same field of another kind decoded as int64: else one kind's writes miss the other's
    reads."""
    codec = KeyCodec()
    column = np.empty(len(values), dtype=object)
    column[:] = values
    assert codec.encode("k", {"k": column}).tolist() == [codec.encode_one(v) for v in values]
    pairs = np.empty(len(values), dtype=object)
    pairs[:] = [7] * len(values)
    ids = codec.encode(("k", "p"), {"k": column, "p": pairs})
    assert ids.tolist() == [codec.encode_one((v, 7)) for v in values]


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


_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"]
_EDGES = [0, 1, -1, 2**30 - 1, 2**30, -(2**30), -(2**30) - 1, 2**62, -(2**63), 2**63 - 1]


def _column(values: list[int], dtype: np.dtype, read_only: bool) -> np.ndarray:
    column = np.array(values, dtype=dtype)
    column.flags.writeable = not read_only  # as loaded from the arena, or derived
    return column


def _fits(value: int, dtype: np.dtype) -> bool:
    if dtype.kind == "b":
        return value in (0, 1)
    info = np.iinfo(dtype)
    return info.min <= value <= info.max


@settings(deadline=None)  # the first call in a process compiles the pair packing
@given(
    st.lists(
        st.tuples(st.sampled_from(_EDGES) | INTS, st.sampled_from(_EDGES) | INTS), max_size=30
    ),
    st.sampled_from(_DTYPES),
    st.sampled_from(_DTYPES),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_pair_ids_are_those_of_the_same_python_ints_whatever_the_columns_types(
    pairs: list[tuple[int, int]],
    first: str,
    second: str,
    unordered: bool,
    first_read_only: bool,
    second_read_only: bool,
) -> None:
    """Columns of any two integer types (mixed, read-only or not, uint64 included) give each
    pair the id its Python ints get one at a time: the compiled packing where both fit
    +-2**30, interning otherwise, in row order."""
    a_type, b_type = np.dtype(first), np.dtype(second)
    rows = [(x, y) for x, y in pairs if _fits(x, a_type) and _fits(y, b_type)]
    codec = KeyCodec()
    a = _column([x for x, _ in rows], a_type, first_read_only)
    b = _column([y for _, y in rows], b_type, second_read_only)
    spec = Unordered("a", "b") if unordered else ("a", "b")
    ids = codec.encode(spec, {"a": a, "b": b})
    assert ids.dtype == np.int64 and len(ids) == len(rows)
    expected = [
        codec.encode_one((min(x, y), max(x, y)) if unordered else (x, y))
        for x, y in ((int(x), int(y)) for x, y in rows)
    ]
    assert ids.tolist() == expected


@settings(deadline=None)
@given(st.lists(st.sampled_from(_EDGES) | st.integers(0, 2**64 - 1), max_size=30))
def test_uint64_ids_never_wrap_onto_other_keys(values: list[int]) -> None:
    """Above 2**63 a cast to int64 would give a uint64 key the id of a negative int key."""
    values = [v for v in values if v >= 0]
    codec = KeyCodec()
    ids = codec.encode("k", {"k": np.array(values, dtype=np.uint64)})
    assert ids.tolist() == [codec.encode_one(v) for v in values]
    assert codec.encode_one(2**64 - 1) != codec.encode_one(-1)


def test_key_columns_of_different_lengths_are_refused() -> None:
    with pytest.raises(PipelineError, match="differ in length"):
        KeyCodec().encode(("a", "b"), {"a": np.arange(3), "b": np.arange(2)})


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


def test_a_wide_int_and_a_tuple_naming_it_are_different_keys() -> None:
    codec = KeyCodec()
    wide = 2**70
    column = codec.encode("k", {"k": np.array([2**63 + 5], dtype=np.uint64)})
    assert column[0] == codec.encode_one(2**63 + 5)
    assert codec.encode_one(wide) != codec.encode_one(("wide", wide))
    assert codec.encode_one(2**63 + 5) != codec.encode_one(("wide", 2**63 + 5))
    again = pickle.loads(pickle.dumps(codec))
    assert again.encode_one(wide) == codec.encode_one(wide)
    assert again.encode_one(("wide", wide)) == codec.encode_one(("wide", wide))


def test_a_snapshot_from_before_typed_wide_ints_keeps_their_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Such snapshots interned a wide int as the tuple ("wide", v); restored, the int must
    still find its id (else a resumed run loses every wide key's state)."""
    old = KeyCodec()
    old._interned.update({("wide", 2**70): -(2**63), "x": -(2**63) + 1})
    monkeypatch.delattr(KeyCodec, "__getstate__")  # pickled as the old class did: slots
    blob = pickle.dumps(old)
    monkeypatch.undo()
    restored = pickle.loads(blob)
    assert restored.encode_one(2**70) == -(2**63)
    assert restored.encode_one("x") == -(2**63) + 1
    assert restored.encode_one(("wide", 2**70)) not in (-(2**63), -(2**63) + 1)


@pytest.mark.parametrize(
    "stale", [True, 5, 1.0, (1, 3), (True, 3)], ids=["bool", "int", "float", "pair", "bool pair"]
)
def test_a_snapshot_whose_interned_keys_have_other_ids_now_is_refused(
    monkeypatch: pytest.MonkeyPatch, stale: object
) -> None:
    """Before format 7, ``np.bool_``, floats, ints in object columns and such pairs were
    interned; now they have their int's id. Resuming would look for their state under the
    new id and not find it, so the snapshot is refused with what to do."""
    old = KeyCodec()
    old._interned.update({"x": -(2**63), stale: -(2**63) + 1})
    monkeypatch.delattr(KeyCodec, "__getstate__")
    blob = pickle.dumps(old)
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="start the job over without the checkpoint"):
        pickle.loads(blob)


def test_known_id_gives_encode_ones_id_and_never_adds_a_key() -> None:
    codec = KeyCodec()
    assert codec.known_id("never seen") is None
    assert codec.known_id(("a", 1)) is None
    assert codec.known_id(2**70) is None
    assert codec._interned == {}  # lookups of unknown keys left the codec as it was
    assert codec.known_id(7) == codec.encode_one(7.0) == 7  # ids by value need no interning
    assert codec.known_id((True, 3)) == codec.encode_one((1, 3))
    ident = codec.encode_one("seen")
    assert codec.known_id("seen") == ident
    assert codec.known_id(np.str_("seen")) == ident


def test_numpy_strings_in_an_object_column_get_the_ids_of_plain_strings() -> None:
    """Operator code that builds keys with numpy (np.str_ in an object column) meets a
    source's string column, alone and in a pair."""
    plain = np.array(["b", "a", "b", "c"], dtype=object)
    numpy_strings = np.empty(4, dtype=object)
    numpy_strings[:] = [np.str_(s) for s in plain]
    codec = KeyCodec()
    ids = codec.encode("k", {"k": plain})
    assert codec.encode("k", {"k": numpy_strings}).tolist() == ids.tolist()
    assert codec.encode_one(np.str_("a")) == ids[1]
    other = np.array([1, 2, 1, 2])
    pairs = codec.encode(("k", "o"), {"k": plain, "o": other})
    assert codec.encode(("k", "o"), {"k": numpy_strings, "o": other}).tolist() == pairs.tolist()
    assert canonical_key((np.str_("a"), np.int32(1))) == canonical_key(("a", 1.0)) == ("a", 1)
