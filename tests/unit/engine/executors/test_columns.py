"""Columns at a worker's rows, and which write of its key each row sees."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.executors.columns import Columns, Keyed, Part, assemble
from engine.log import Events, StringColumn
from tests.support.budget import examples


@settings(max_examples=examples(300), deadline=None)
@given(
    ids=st.lists(st.integers(0, 4), max_size=40),
    data=st.data(),
    before=st.booleans(),
)
def test_latest_writes_is_the_last_write_of_the_key_at_or_before_each_row(
    ids: list[int], data: st.DataObject, before: bool
) -> None:
    n = len(ids)
    masked = data.draw(st.booleans())
    written = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    keyed = Keyed(None, np.array(ids, dtype=np.int64), np.arange(n), np.arange(n))
    got = keyed.latest_writes(written if masked else None, before).tolist()
    rows_written = [i for i in range(n) if not masked or written[i]]
    expected = []
    for i in range(n):
        seen = [w for w in rows_written if ids[w] == ids[i] and (w < i or (w == i and not before))]
        expected.append(rows_written.index(seen[-1]) if seen else -1)
    assert got == expected


def _columns() -> Columns:
    n = 6
    events = Events(
        "a",
        np.arange(n, dtype=np.int64),
        np.arange(n, dtype=np.int64) * 10,
        np.zeros(n, dtype=np.int16),
        np.zeros(n, dtype=np.int32),
        np.arange(n, dtype=np.int64),
        {
            "k": np.array([5, 6, 5, 7, 6, 5], dtype=np.int64),
            "s": StringColumn.encode(["a", "b", "c", "d", "e", "f"]),
        },
    )
    return Columns(events)


def test_home_rows_are_gathered_once_and_derived_parts_assembled_when_read_elsewhere() -> None:
    c = _columns()
    home = np.array([0, 2, 5])
    c.set_home(home)
    first = c.take("k", home)
    assert first.tolist() == [5, 5, 5] and c.take("k", home) is first
    assert c.take("s", home).tolist() == ["a", "c", "f"]
    assert c.take("k", np.array([0, 2, 5])) is not first  # other rows: no cache
    mine = Part("a", "x", home, np.array([1, 2, 3]))
    theirs = Part("a", "x", np.array([1, 3, 4]), np.array([9, 8, 7]))
    assemble([mine, theirs], {"a": c})
    assert c.take("x", home) is mine.values  # made here: never gathered
    assert c.derived_names() == ["x"]
    assert c.get("x").tolist() == [1, 9, 2, 8, 7, 3]
    assert c.take("x", slice(1, 3)).tolist() == [9, 2]
