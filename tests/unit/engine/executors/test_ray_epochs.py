"""Epochs packed for Ray actors: equal after the trip, their string dictionaries sent once.

The object store is stood in for by a dict of pickled objects (``put`` pickles, ``get``
unpickles: a copy, as in another process), and the packed epoch itself goes through pickle
protocol 5 with its buffers out of band, as Ray moves it.
"""

from __future__ import annotations

import pickle
from dataclasses import replace
from functools import cache
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import EngineError
from engine.examples.social.data import generate_social
from engine.examples.social.source import social_source
from engine.executors.ray_epochs import PackedEpoch, ReceivedArrays, SentArrays
from engine.log import Epoch, StringColumn
from engine.merge import merge_log
from tests.support.budget import examples


class _Store:
    def __init__(self) -> None:
        self.blobs: dict[int, bytes] = {}

    def put(self, obj: Any) -> int:
        ref = len(self.blobs)
        self.blobs[ref] = pickle.dumps(obj, protocol=5)
        return ref

    def get(self, ref: int) -> Any:
        return pickle.loads(self.blobs[ref])


def _travel(packed: PackedEpoch) -> PackedEpoch:
    """``packed`` as an actor receives it: pickled with its buffers out of band."""
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(packed, protocol=5, buffer_callback=buffers.append)
    back = pickle.loads(data, buffers=[b.raw() for b in buffers])
    assert isinstance(back, PackedEpoch)
    return back


@cache
def _epochs() -> tuple[Epoch, ...]:
    data = generate_social(users=1000, events=20_000, days=3, seed=1)
    return tuple(merge_log(social_source(data), epoch_size=4000))


def _content(epoch: Epoch) -> StringColumn:
    column = epoch.events["message"].columns["content"]
    assert isinstance(column, StringColumn)
    return column


def _assert_same(a: Epoch, b: Epoch) -> None:
    assert (a.index, a.seq_start, a.seq_end, a.kinds, a.topics) == (
        b.index,
        b.seq_start,
        b.seq_end,
        b.kinds,
        b.topics,
    )
    assert np.array_equal(a.ts, b.ts) and np.array_equal(a.kind, b.kind)
    assert a.events.keys() == b.events.keys()
    for kind, events in a.events.items():
        other = b.events[kind].columns
        assert events.columns.keys() == other.keys()
        for name, column in events.columns.items():
            if isinstance(column, StringColumn):
                theirs = other[name]
                assert isinstance(theirs, StringColumn) and column.equals(theirs)
            else:
                assert np.array_equal(column, other[name])


def test_epochs_sharing_a_dictionary_put_it_once_and_the_actor_gets_it_once() -> None:
    epochs = _epochs()
    assert len(epochs) > 2 and len(_content(epochs[0]).values) >= 1024
    assert all(_content(e).values is _content(epochs[0]).values for e in epochs)
    store = _Store()
    sent, received = SentArrays(store.put), ReceivedArrays(store.get)
    packed = [sent.pack(e) for e in epochs]
    assert sent.puts == 1 and len(store.blobs) == 1
    in_band = len(pickle.dumps(epochs[1], protocol=5))
    # The strings left the payload: what stays is the numeric columns' buffers' metadata.
    assert len(packed[1].payload) < in_band // 10
    back = [received.unpack(_travel(p)) for p in packed]
    assert received.gets == 1
    for original, unpacked in zip(epochs, back, strict=True):
        _assert_same(original, unpacked)
    shared = _content(back[0]).values
    assert all(_content(e).values is shared for e in back)
    assert not shared.flags.writeable  # an edit would leak into every later epoch


def _with_strings(epoch: Epoch, index: int, dictionaries: list[np.ndarray]) -> Epoch:
    """``epoch`` renumbered ``index``, its messages' strings against ``dictionaries`` only."""
    message = epoch.events["message"]
    codes = np.arange(len(message), dtype=np.int32) % 3
    columns = {n: c for n, c in message.columns.items() if not isinstance(c, StringColumn)}
    for i, values in enumerate(dictionaries):
        columns[f"text{i}"] = StringColumn(codes, values)
    events = {**epoch.events, "message": replace(message, columns=columns)}
    return replace(epoch, index=index, events=events)


def test_small_object_arrays_travel_in_band() -> None:
    store = _Store()
    sent = SentArrays(store.put)
    small = np.empty(3, dtype=object)
    small[:] = ["a", "b", "c"]
    few = _with_strings(_epochs()[0], 0, [small])
    packed = sent.pack(few)
    assert sent.puts == 0 and packed.arrays == {}
    _assert_same(few, ReceivedArrays(store.get).unpack(_travel(packed)))


def _dictionary(tag: int) -> np.ndarray:
    out = np.empty(1500, dtype=object)
    out[:] = [f"text {tag} {i}" for i in range(1500)]
    return out


@settings(max_examples=examples(60), deadline=None)
@given(
    sent_keep=st.integers(1, 4),
    received_keep=st.integers(1, 4),
    picks=st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=3), min_size=1, max_size=25),
)
def test_every_epoch_unpacks_to_its_own_arrays_whatever_each_side_keeps(
    sent_keep: int, received_keep: int, picks: list[list[int]]
) -> None:
    """Any order of dictionaries, any window on either side: an actor always unpacks the
    arrays the epoch named (a reference travels with every epoch). Each side keeps the
    arrays it named or used most recently: the driver puts an array again exactly when it
    left the driver's window, an actor fetches one again exactly when it left its own."""
    pool = [_dictionary(t) for t in range(6)]
    store = _Store()
    sent = SentArrays(store.put, sent_keep)
    received = ReceivedArrays(store.get, received_keep)
    put_window: list[int] = []  # pool indices, least recently named first
    numbers: dict[int, int] = {}  # pool index -> its number while in the driver's window
    used: list[int] = []  # numbers in the actor's window, least recently used first
    puts = gets = 0
    for i, chosen in enumerate(picks):
        epoch = _with_strings(_epochs()[0], i, [pool[t] for t in chosen])
        back = received.unpack(_travel(sent.pack(epoch)))
        texts = back.events["message"].columns
        for j, t in enumerate(chosen):
            column = texts[f"text{j}"]
            assert isinstance(column, StringColumn)
            assert column.values.tolist() == pool[t].tolist()
            if t in put_window:
                put_window.remove(t)
            else:
                numbers[t] = puts
                puts += 1
            put_window.append(t)
            del put_window[:-sent_keep]
            n = numbers[t]
            if n in used:
                used.remove(n)
            else:
                gets += 1
            used.append(n)
            del used[:-received_keep]
        assert (sent.puts, received.gets) == (puts, gets)


def test_a_dictionary_every_epoch_shares_is_put_once_however_many_others_come_and_go() -> None:
    store = _Store()
    sent, received = SentArrays(store.put, keep=3), ReceivedArrays(store.get, keep=3)
    shared = _dictionary(0)
    for i in range(6):
        # Each epoch also brings two dictionaries of its own (a decoded batch's, say).
        epoch = _with_strings(_epochs()[0], i, [shared, _dictionary(10 + i), _dictionary(20 + i)])
        received.unpack(_travel(sent.pack(epoch)))
    assert sent.puts == 1 + 2 * 6 and received.gets == 1 + 2 * 6


def test_arrays_of_another_run_are_never_taken_for_this_ones() -> None:
    """Numbers start at 0 in every run of the driver: an actor that served an earlier run
    must fetch this run's array 0, not reuse the earlier run's."""
    store = _Store()
    received = ReceivedArrays(store.get)
    first, second = _dictionary(1), _dictionary(2)
    for values in (first, second):
        epoch = _with_strings(_epochs()[0], 0, [values])
        back = received.unpack(_travel(SentArrays(store.put).pack(epoch)))
        column = back.events["message"].columns["text0"]
        assert isinstance(column, StringColumn) and column.values.tolist() == values.tolist()
    assert received.gets == 2


def test_a_packed_epoch_says_which_epoch_it_holds() -> None:
    epoch = _epochs()[1]
    packed = SentArrays(_Store().put).pack(epoch)
    assert (packed.index, packed.seq_start, packed.seq_end) == (
        epoch.index,
        epoch.seq_start,
        epoch.seq_end,
    )


def test_an_epoch_naming_an_array_it_carries_no_reference_to_is_an_error() -> None:
    store = _Store()
    sent = SentArrays(store.put)
    packed = sent.pack(_epochs()[0])
    broken = replace(packed, arrays={})
    with pytest.raises(EngineError, match="carries no reference"):
        ReceivedArrays(store.get).unpack(broken)


def test_a_window_of_no_arrays_is_refused() -> None:
    store = _Store()
    with pytest.raises(EngineError, match="keep must be >= 1"):
        SentArrays(store.put, 0)
    with pytest.raises(EngineError, match="keep must be >= 1"):
        ReceivedArrays(store.get, 0)
