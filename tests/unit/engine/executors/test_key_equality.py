"""Keys that Python's ``==`` calls equal are one key in every executor, as in the serial
oracle's dicts: ``True`` and ``1``, ``(True, 3)`` and ``(1, 3)``, ``np.bool_(True)``, ``1.0``,
and an int among strings in an object column. A one-field tuple, which the serial executor
would keep apart from its field's values, is refused on built-in tables."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import ExecutionError, Pipeline, PipelineError, Record
from engine.testing import assert_executors_agree, run_pipeline


def _reads_with_equal_keys() -> Pipeline:
    p = Pipeline("equal-keys")
    pair = p.count("by_flag_user", on="x", key=("flag", "user"))
    single = p.count("by_flag", on="x", key="flag")
    out = p.output("o", key="user")

    def show(e: Any, v: Any) -> list[Record]:
        flag = bool(e.flag)
        return [
            Record(
                e.user,
                {
                    "pair": v.get(pair, (flag, e.user)),
                    "pair_np": v.get(pair, (np.bool_(flag), np.int32(e.user))),
                    "pair_float": v.get(pair, (float(flag), float(e.user))),
                    "single": v.get(single, flag),
                    "single_np": v.get(single, np.bool_(flag)),
                    "single_float": v.get(single, float(flag)),
                },
            )
        ]

    p.emit("show", on="x", output=out, reads=[pair, single], fn=show)
    return p


@pytest.mark.parametrize("epoch_size", [1, 3, None])
def test_python_reads_find_keys_written_from_a_bool_column(epoch_size: int | None) -> None:
    events = {
        "x": {
            "ts": [1, 2, 3, 4, 5],
            "flag": np.array([True, False, True, True, False]),
            "user": [3, 3, 4, 3, 4],
        }
    }
    got = assert_executors_agree(
        _reads_with_equal_keys(), events, executors=("serial", "batch"), epoch_size=epoch_size
    )
    # (True, 3) was written twice before the fourth event's read, and once before the first's.
    assert [r.value["pair_float"] for r in got["o"]] == [1, 1, 1, 2, 1]


def _across_kinds() -> Pipeline:
    p = Pipeline("object-keys")
    seen = p.count("seen", on="a", key="user")
    pairs = p.count("seen_pairs", on="a", key=("user", "peer"))

    def who_batch(c: Any) -> np.ndarray:
        # Operator code that builds its key column from Python values: an object array.
        out = np.empty(len(c["user"]), dtype=object)
        out[:] = [u if u < 100 else f"guest{u}" for u in c["user"].tolist()]
        return out

    who = p.derive(
        "who",
        on="b",
        dtype="object",
        fn=lambda e, _v: e.user if e.user < 100 else f"guest{e.user}",
        batch_fn=who_batch,
    )
    n = p.lookup("n", on="b", table=seen, key=who.name, inputs=[who])
    m = p.lookup("m", on="b", table=pairs, key=(who.name, "peer"), inputs=[who])
    out = p.output("o", key="user")
    p.emit(
        "show",
        on="b",
        output=out,
        inputs=[n, m],
        fn=lambda e, _v: [Record(e.user, {"n": e.n, "m": e.m})],
    )
    return p


@pytest.mark.parametrize("epoch_size", [1, 2, None])
def test_an_object_key_column_meets_an_int_one(epoch_size: int | None) -> None:
    """Kind ``b``'s key column is made by operator code as objects (strings among ints);
    its ints are the very keys kind ``a`` (an int64 column) wrote."""
    events = {
        "a": {"ts": [1, 2, 3], "user": [5, 6, 5], "peer": [1, 1, 1]},
        "b": {"ts": [4, 4, 5], "user": [5, 200, 6], "peer": [1, 1, 1]},
    }
    got = assert_executors_agree(
        _across_kinds(), events, executors=("serial", "batch"), epoch_size=epoch_size
    )
    assert [(r.value["n"], r.value["m"]) for r in got["o"]] == [(2, 2), (0, 0), (1, 1)]


def test_a_one_field_tuple_key_on_a_built_in_table_is_refused() -> None:
    """The serial executor would key such a table by 1-tuples, the vectorised ones by the
    field's values: ``view.get(table, (x,))`` could not mean the same in both."""
    p = Pipeline("one-field")
    with pytest.raises(
        PipelineError, match=r"tuple of one field; name the field itself \(key='u'\)"
    ):
        p.count("c", on="x", key=("u",))
    table = p.count("by_u", on="x", key="u")
    with pytest.raises(PipelineError, match="tuple of one field"):
        p.lookup("n", on="x", table=table, key=("u",))
    # A Python table keeps its keys as Python values in every executor: a 1-tuple is fine.
    python = p.table("py", default=0)
    p.update("inc", on="x", table=python, key=("u",), merge=lambda old, _e, _v: old + 1)


def _distinct_of(value: Any) -> Pipeline:
    """A distinct count per user over ``value`` (a field name, or a derived column's values
    by event index ``i``)."""
    p = Pipeline("distinct-values")
    if isinstance(value, list):
        values = value

        def made(c: Any) -> np.ndarray:
            out = np.empty(len(c["i"]), dtype=object)
            out[:] = [values[i] for i in c["i"].tolist()]
            return out

        column: Any = p.derive(
            "v", on="x", dtype="object", fn=lambda e, _v: values[e.i], batch_fn=made
        )
    else:
        column = value
    table = p.distinct("dv", on="x", key="user", value=column)
    n = p.lookup("n", on="x", table=table, key="user")
    out = p.output("o", key="user")
    p.emit("show", on="x", output=out, inputs=[n], fn=lambda e, _v: [Record(e.user, {"n": e.n})])
    return p


@pytest.mark.parametrize(
    ("values", "counts"),
    [
        # Operator code's objects: the oracle counts int(2.5) == 2, str as str, True as 1.
        ([2, 2.5, "a", 2.0, True, 1, Decimal("3.9"), b"a"], [1, 1, 2, 2, 3, 3, 4, 5]),
        (np.array([1.5, 1.0, 2.7, -0.5, 0.2, -1.0]), [1, 1, 2, 3, 3, 4]),
        (np.array([2**63 + 1, 5, 2**62], dtype=np.uint64), None),
        (np.array([2**63 - 1, 5, 2**63 - 2, 5], dtype=np.uint64), [1, 2, 3, 3]),
        (np.array([1.0, np.nan]), None),
        (np.array([b"a", b"b", b"a"]), [1, 2, 2]),
    ],
    ids=["objects", "floats", "uint64 beyond int64", "uint64 just below 2**63", "nan", "bytes"],
)
def test_distinct_counts_the_values_the_oracle_counts(
    values: Any, counts: list[int] | None
) -> None:
    """A distinct table's values are equal when the serial executor's coercion makes them so
    (strings and bytes as they are, anything else as the int64 it truncates to); values it
    refuses fail the batch run too."""
    rows = len(values)
    events = {"x": {"ts": list(range(rows)), "user": [1] * rows, "i": list(range(rows))}}
    if isinstance(values, np.ndarray):
        events["x"]["v"] = values
    pipeline = _distinct_of("v" if isinstance(values, np.ndarray) else values)
    if counts is None:
        for executor in ("serial", "batch"):
            with pytest.raises(ExecutionError):
                run_pipeline(pipeline, events, executor=executor)
        return
    got = assert_executors_agree(pipeline, events, executors=("serial", "batch"))
    assert [r.value["n"] for r in got["o"]] == counts


@pytest.mark.parametrize(
    "keys",
    [np.array([1.0, 2.5, 1.0, -0.0, 0.0, 2.5]), np.array([b"a", b"b", b"a", b"", b"", b"b"])],
    ids=["floats", "bytes"],
)
def test_float_and_bytes_key_columns_key_as_in_the_oracle(keys: np.ndarray) -> None:
    """A float key column (1.0 is the key 1, -0.0 the key 0) and a bytes one work in every
    executor, as they do in the serial one."""
    p = Pipeline("float-keys")
    table = p.count("per_key", on="x", key="k")
    n = p.lookup("n", on="x", table=table, key="k")
    out = p.output("o", key="i")
    p.emit("show", on="x", output=out, inputs=[n], fn=lambda e, _v: [Record(e.i, {"n": e.n})])
    rows = len(keys)
    events = {"x": {"ts": list(range(rows)), "i": list(range(rows)), "k": keys}}
    got = assert_executors_agree(p, events, executors=("serial", "batch"), epoch_size=2)
    assert [r.value["n"] for r in got["o"]] == [1, 1, 2, 1, 2, 2]


_CONVERSIONS: dict[str, Any] = {
    "int": int,
    "float": float,
    "numpy": np.int64,
    "decimal": lambda x: Decimal(int(x)) if float(x).is_integer() else Decimal(str(x)),
}


@settings(deadline=None)
@given(
    dtype=st.sampled_from(["int64", "uint8", "bool", "float64"]),
    values=st.lists(st.integers(0, 3), min_size=1, max_size=25),
    halves=st.lists(st.booleans(), min_size=25, max_size=25),
    read_as=st.sampled_from(sorted(_CONVERSIONS)),
    epoch_size=st.integers(1, 6),
)
def test_key_columns_of_any_dtype_meet_python_keys_of_any_type(
    dtype: str, values: list[int], halves: list[bool], read_as: str, epoch_size: int
) -> None:
    """Random key columns of every dtype, read by operator code with keys of another type:
    the batch executor's output equals the oracle's byte for byte."""
    if dtype == "bool":
        column = np.array([v % 2 for v in values], dtype=bool)
    elif dtype == "float64":
        column = np.array([v + 0.5 * h for v, h in zip(values, halves, strict=False)])
    else:
        column = np.array(values, dtype=dtype)
    convert = _CONVERSIONS[read_as]
    p = Pipeline("any-dtype")
    single = p.count("single", on="x", key="a")
    pair = p.count("pair", on="x", key=("a", "b"))
    n = p.lookup("n", on="x", table=single, key="a")
    out = p.output("o", key="i")

    def show(e: Any, v: Any) -> list[Record]:
        key = convert(e.a)
        return [Record(e.i, {"n": e.n, "get": v.get(single, key), "pair": v.get(pair, (key, 1))})]

    p.emit("show", on="x", output=out, reads=[single, pair], inputs=[n], fn=show)
    rows = len(values)
    events = {
        "x": {
            "ts": [r // 2 for r in range(rows)],
            "i": list(range(rows)),
            "a": column,
            "b": [1] * rows,
        }
    }
    assert_executors_agree(p, events, executors=("serial", "batch"), epoch_size=epoch_size)
