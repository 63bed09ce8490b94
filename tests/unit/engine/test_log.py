"""Columns, batches, the in-memory source and events of the log."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import LogError
from engine.log import (
    Column,
    Events,
    InMemorySource,
    PartitionSpec,
    StringColumn,
    TopicTable,
    concat_columns,
    take_column,
)
from engine.merge import merge_log
from tests.support.budget import examples

texts = st.lists(st.text(max_size=6), max_size=40)


def array(column: Column) -> np.ndarray[Any, Any]:
    assert isinstance(column, np.ndarray)
    return column


@given(strings=texts)
def test_encode_decode_round_trip_with_a_sorted_dictionary(strings: list[str]) -> None:
    col = StringColumn.encode(strings)
    assert col.decode().tolist() == strings and len(col) == len(strings)
    assert col.codes.dtype == np.int32 and col.values.dtype == object
    assert col.values.tolist() == sorted(set(strings))
    assert StringColumn.encode(np.array(strings, dtype=object)).values.tolist() == sorted(
        set(strings)
    )


@given(strings=texts, picks=st.lists(st.integers(0, 10**6), max_size=30))
def test_take_keeps_the_dictionary(strings: list[str], picks: list[int]) -> None:
    col = StringColumn.encode(strings)
    index = np.array([p % len(strings) for p in picks] if strings else [], dtype=np.int64)
    taken = col.take(index)
    assert taken.values is col.values
    assert taken.decode().tolist() == [strings[i] for i in index]
    mask = np.array([len(s) % 2 == 0 for s in strings], dtype=bool)
    assert col.take(mask).decode().tolist() == [s for s in strings if len(s) % 2 == 0]


@settings(max_examples=examples(200))
@given(parts=st.lists(texts, max_size=5), share=st.booleans())
def test_concat_round_trips_with_shared_or_different_dictionaries(
    parts: list[list[str]], share: bool
) -> None:
    whole = StringColumn.encode([s for p in parts for s in p])
    if share:
        cols = [
            StringColumn(whole.codes[i : i + len(p)], whole.values)
            for i, p in zip(np.cumsum([0, *map(len, parts)]), parts, strict=False)
        ]
    else:
        cols = [StringColumn.encode(p) for p in parts]
    joined = StringColumn.concat(cols)
    assert joined.decode().tolist() == [s for p in parts for s in p]
    assert joined.equals(whole)
    if share and parts:
        assert joined.values is whole.values
    elif len({tuple(c.values.tolist()) for c in cols}) > 1:
        # Each string once, in the order the parts' dictionaries first hold it.
        first_seen = dict.fromkeys(v for c in cols for v in c.values.tolist())
        assert joined.values.tolist() == list(first_seen)


def test_equal_but_distinct_dictionaries_are_not_remapped() -> None:
    a, b = StringColumn.encode(["x", "y"]), StringColumn.encode(["y", "x"])
    joined = StringColumn.concat([a, b])
    assert joined.values is a.values and joined.codes.tolist() == [0, 1, 1, 0]


def test_equals_compares_strings_not_dictionaries() -> None:
    a = StringColumn.encode(["x", "y"])
    b = StringColumn(np.array([1, 2], np.int32), np.array(["z", "x", "y"], dtype=object))
    assert a.equals(b) and not a.equals(StringColumn.encode(["x"]))
    assert not a.equals(StringColumn.encode(["x", "z"]))


def test_string_column_rejects_wrong_arrays_and_non_strings() -> None:
    with pytest.raises(LogError, match="codes must be a 1-D int32 array, got 1-D int64"):
        StringColumn(np.array([0]), np.array(["a"], dtype=object))
    with pytest.raises(LogError, match="values must be a 1-D object array of str, got 1-D <U1"):
        StringColumn(np.array([0], np.int32), np.array(["a"]))
    with pytest.raises(LogError, match="takes str values only, got NoneType None"):
        StringColumn.encode(["a", None])  # type: ignore[list-item]


def test_take_and_concat_columns_handle_both_column_types() -> None:
    ints = np.array([10, 20, 30])
    strings = StringColumn.encode(["a", "b", "c"])
    assert array(take_column(ints, np.array([2, 0]))).tolist() == [30, 10]
    taken = take_column(strings, slice(1, None))
    assert isinstance(taken, StringColumn) and taken.decode().tolist() == ["b", "c"]
    assert array(concat_columns([ints, ints[:1]])).tolist() == [10, 20, 30, 10]
    assert concat_columns([ints]) is ints
    both = concat_columns([strings, strings.take(np.array([0]))])
    assert isinstance(both, StringColumn) and both.decode().tolist() == ["a", "b", "c", "a"]
    with pytest.raises(LogError, match="cannot concatenate a StringColumn with a numpy array"):
        concat_columns([strings, ints])
    with pytest.raises(LogError, match="cannot concatenate a numpy array column with a String"):
        concat_columns([ints, strings])


def make_parts() -> list[tuple[PartitionSpec, np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
    out = []
    for p, n in enumerate([5, 0, 2]):
        off = np.arange(n, dtype=np.int64) + 100
        out.append((PartitionSpec("t", p, "k"), off, off * 10, {"v": off + 1}))
    return out


def test_in_memory_source_chunks_round_robin_and_ends_every_partition() -> None:
    source = InMemorySource(make_parts(), batch_size=2)
    assert [s.partition for s in source.partitions()] == [0, 1, 2]
    got = [(b.partition, b.offsets.tolist(), b.final) for b in source.batches()]
    assert got == [
        (0, [100, 101], False),
        (1, [], True),
        (2, [100, 101], True),
        (0, [102, 103], False),
        (0, [104], True),
    ]
    for b in source.batches():
        assert b.ts.tolist() == [o * 10 for o in b.offsets]
        assert array(b.columns["v"]).tolist() == [o + 1 for o in b.offsets]
        assert len(b.columns["v"]) == len(b.offsets)  # also for the empty partition


def test_in_memory_source_validates_batch_size() -> None:
    with pytest.raises(LogError, match="batch_size must be >= 1, got 0"):
        InMemorySource(make_parts(), batch_size=0)


def test_from_tables_splits_by_partition_and_encodes_strings() -> None:
    messages = TopicTable(
        "social.messages",
        "Message",
        {
            "partition": [1, 0, 1, 1],
            "ts": [5, 6, 7, 3],
            "sender": np.array([10, 11, 12, 13]),
            "content": ["hi", "a@b.co", "hi", "yo"],
        },
        partitions=3,
    )
    friends = TopicTable(
        "social.friendships",
        "Friendship",
        {"partition": [0, 0], "ts": [1, 2], "offset": [7, 9], "user_a": [1, 2]},
    )
    source = InMemorySource.from_tables(messages, friends, batch_size=100)
    specs = source.partitions()
    assert [(s.topic, s.partition, s.kind) for s in specs] == [
        ("social.messages", 0, "Message"),
        ("social.messages", 1, "Message"),
        ("social.messages", 2, "Message"),
        ("social.friendships", 0, "Friendship"),
    ]
    batches = {(b.topic, b.partition): b for b in source.batches()}
    p1 = batches[("social.messages", 1)]
    assert p1.offsets.tolist() == [0, 1, 2] and p1.ts.tolist() == [5, 7, 3] and p1.final
    assert set(p1.columns) == {"sender", "content"}
    assert array(p1.columns["sender"]).tolist() == [10, 12, 13]
    content = p1.columns["content"]
    assert isinstance(content, StringColumn) and content.decode().tolist() == ["hi", "hi", "yo"]
    assert len(batches[("social.messages", 2)].offsets) == 0
    assert batches[("social.friendships", 0)].offsets.tolist() == [7, 9]
    epochs = list(merge_log(source, epoch_size=10))
    assert epochs[0].ts.tolist() == [1, 2, 5, 6, 7, 3]  # backwards ts 3 follows 7 in partition 1
    assert epochs[0].events["Message"].offset.tolist() == [0, 0, 1, 2]


def test_from_tables_rejects_missing_columns_and_bad_partitions() -> None:
    with pytest.raises(LogError, match=r"topic 't' lacks column\(s\) \['ts'\]"):
        InMemorySource.from_tables(TopicTable("t", "k", {"partition": [0]}))
    with pytest.raises(LogError, match=r"partition numbers outside \[0, 2\)"):
        InMemorySource.from_tables(TopicTable("t", "k", {"partition": [2], "ts": [0]}, 2))


def make_events() -> Events:
    return Events(
        "k",
        np.array([3, 5, 8], np.int64),
        np.array([30, 50, 80], np.int64),
        np.array([0, 1, 0], np.int16),
        np.array([2, 2, 4], np.int32),
        np.array([7, 8, 9], np.int64),
        {"v": np.array([1.5, 2.5, 3.5]), "s": StringColumn.encode(["x", "y", "z"])},
    )


def test_events_take_and_concat() -> None:
    ev = make_events()
    part = ev.take(np.array([2, 0]))
    assert len(part) == 2 and part.kind == "k"
    assert (part.seq.tolist(), part.ts.tolist(), part.topic.tolist()) == ([8, 3], [80, 30], [0, 0])
    assert (part.partition.tolist(), part.offset.tolist()) == ([4, 2], [9, 7])
    assert array(part.columns["v"]).tolist() == [3.5, 1.5]
    s = part.columns["s"]
    assert isinstance(s, StringColumn) and s.decode().tolist() == ["z", "x"]
    joined = Events.concat([ev.take(slice(0, 1)), ev.take(slice(1, None))])
    assert joined.seq.tolist() == [3, 5, 8] and array(joined.columns["v"]).tolist() == [
        1.5,
        2.5,
        3.5,
    ]
    assert Events.concat([ev]) is ev
