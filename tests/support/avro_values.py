"""Avro values and column checks shared by the serde tests (bulk decoding and value decoders).

``VALUES`` draws a value of every flat Avro kind, edge cases included; ``flat_fields`` draws a
record's fields; :func:`assert_column` checks a decoded column against fastavro's values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from connector.serde.avro_bulk import BulkKind
from connector.serde.avro_decode import COLUMN_DTYPES
from engine.log import StringColumn

__all__ = ["INT_RANGE", "KINDS", "LONG_RANGE", "VALUES", "Fields", "assert_column", "flat_fields"]

KINDS: tuple[BulkKind, ...] = ("long", "int", "boolean", "float", "double", "string")
INT_RANGE = (-(2**31), 2**31 - 1)
LONG_RANGE = (-(2**63), 2**63 - 1)
VALUES: dict[BulkKind, st.SearchStrategy[Any]] = {
    "long": st.one_of(
        st.integers(*LONG_RANGE), st.sampled_from([*LONG_RANGE, 0, -1, 2**62, -(2**62) - 1])
    ),
    "int": st.one_of(st.integers(*INT_RANGE), st.sampled_from([*INT_RANGE, 0, -1])),
    "boolean": st.booleans(),
    "float": st.floats(width=32),
    "double": st.floats(),
    "string": st.text(max_size=30),
}
Fields = list[tuple[str, BulkKind]]


def assert_column(column: Any, kind: BulkKind, expected: list[Any]) -> None:
    """``column`` holds ``expected`` (fastavro's values) exactly; floats compared bit-wise."""
    if kind == "string":
        assert isinstance(column, StringColumn)
        assert column.decode().tolist() == expected
        assert len(set(column.values.tolist())) == len(column.values)  # a real dictionary
        return
    assert isinstance(column, np.ndarray)
    assert column.dtype == COLUMN_DTYPES[kind]
    want = np.array(expected, dtype=COLUMN_DTYPES[kind])
    if kind in ("float", "double"):
        bits = np.uint32 if kind == "float" else np.uint64
        assert column.view(bits).tolist() == want.view(bits).tolist()
    else:
        assert column.tolist() == want.tolist()


@st.composite
def flat_fields(draw: st.DrawFn) -> Fields:
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=6))
    return [(f"f{i}", kind) for i, kind in enumerate(kinds)]
