"""Epochs on their way to Ray actors, with their string dictionaries sent once.

A source that dictionary-encodes its strings against one stable dictionary (the in-memory
social source: ~60,000 distinct texts) hands every epoch the same dictionary. Put into the
object store as it is, each epoch carried that whole dictionary pickled in band: at 10M
events in 40 epochs the driver pickled it 40 times (24 ms each) and every actor unpickled
it 40 times (13 ms each), about 2 s of CPU on two cores (18 MB per epoch, of which the
numeric columns are a few).

So the driver packs an epoch itself, as the parallel executor's arena does
(:class:`~engine.executors.arena.SentObjects`): pickle protocol 5 with numpy buffers out of
band (the object store keeps them, actors read them without copying) and each large object
array (:func:`~engine.executors.arena.is_dictionary`) put into the object store once, named
by a number in the payload. A :class:`PackedEpoch` carries the references of the arrays it
names, so an array stays in the store while any epoch that names it is in flight, however
long ago the driver put it. Each actor's :class:`ReceivedArrays` gets a name once and keeps
the few most recently used, which every later epoch that names them shares (read-only: an
edit would leak into them). Names are those of one driver's run (a random ``sender`` tag
goes with them), so an actor that served another run never takes its arrays for this one's.

Where dictionaries are not shared (a decoded batch's own), each epoch's large object arrays
become objects of their own: one more put in the driver and one more fetch in every actor
an epoch, and each side keeps the last few alive (as the arena does).

Ray is not imported here: the driver and the actors hand in ``ray.put`` and ``ray.get``.
"""

from __future__ import annotations

import io
import pickle
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import EngineError
from engine.executors.arena import is_dictionary
from engine.log import Epoch

__all__ = ["PackedEpoch", "ReceivedArrays", "SentArrays"]

#: How many arrays each side keeps. The driver keeps an array (and its reference) so that
#: the next epoch naming it is recognised; an actor keeps it so that it is fetched once.
#: Where dictionaries are not shared (one per decoded batch) each side holds this many
#: for nothing, so few.
_KEEP = 4


@dataclass(frozen=True, slots=True)
class PackedEpoch:
    """An epoch as the driver puts it into the object store: the pickle ``payload``, its
    out-of-band ``buffers`` (the numpy columns) and, by number, the references of the large
    object arrays the payload names (numbers of the driver's run ``sender``)."""

    payload: bytes
    buffers: tuple[Any, ...]
    arrays: dict[int, Any]
    #: The driver's run that numbered the arrays.
    sender: str
    #: The epoch's number and its events' seq range, for messages about a failed unpack.
    index: int
    seq_start: int
    seq_end: int


class SentArrays:
    """The driver's side: packs epochs, putting each large object array once (``put``:
    ``ray.put``) while it stays among the ``keep`` most recently named."""

    def __init__(self, put: Callable[[Any], Any], keep: int = _KEEP) -> None:
        if keep < 1:
            raise EngineError(f"keep must be >= 1 (arrays the driver remembers), got {keep}")
        self._put = put
        self.keep = keep
        self.sender = uuid.uuid4().hex
        #: id of the array -> (its number, the array, kept alive so the id stays its own,
        #: its reference).
        self._known: OrderedDict[int, tuple[int, Any, Any]] = OrderedDict()
        self._count = 0
        #: Arrays put so far (a figure for tests and logs).
        self.puts = 0

    def pack(self, epoch: Epoch) -> PackedEpoch:
        """``epoch`` packed for the actors (see the module docstring)."""
        buffers: list[pickle.PickleBuffer] = []
        named: dict[int, Any] = {}
        out = io.BytesIO()
        _Pickler(out, self, named, buffer_callback=buffers.append).dump(epoch)
        return PackedEpoch(
            out.getvalue(),
            tuple(buffers),
            named,
            self.sender,
            epoch.index,
            epoch.seq_start,
            epoch.seq_end,
        )

    def number_of(self, obj: Any, named: dict[int, Any]) -> int | None:
        """The number ``obj`` travels by (putting it on first sight, and noting its reference
        in ``named``); None: pickle it in band."""
        if not is_dictionary(obj):
            return None
        hit = self._known.get(id(obj))
        if hit is None or hit[1] is not obj:
            hit = (self._count, obj, self._put(obj))
            self._count += 1
            self.puts += 1
            self._known[id(obj)] = hit
            # Least recently named first out: a dictionary every epoch shares stays however
            # many other arrays come and go (each epoch carries its own references, so the
            # actors need no agreement on the order, unlike the arena's workers).
            while len(self._known) > self.keep:
                self._known.popitem(last=False)
        else:
            self._known.move_to_end(id(obj))
        named[hit[0]] = hit[2]
        return hit[0]


class ReceivedArrays:
    """An actor's side: unpacks epochs, getting each named array once (``get``:
    ``ray.get``) and keeping the ``keep`` most recently used."""

    def __init__(self, get: Callable[[Any], Any], keep: int = _KEEP) -> None:
        if keep < 1:
            raise EngineError(f"keep must be >= 1 (arrays an actor remembers), got {keep}")
        self._get = get
        self.keep = keep
        self._arrays: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        #: Arrays fetched so far (a figure for tests and logs).
        self.gets = 0

    def unpack(self, packed: PackedEpoch) -> Epoch:
        """The epoch ``packed`` holds; its numpy columns are views of the buffers."""
        epoch = _Unpickler(io.BytesIO(packed.payload), self, packed, buffers=packed.buffers).load()
        if not isinstance(epoch, Epoch):
            raise EngineError(f"expected a packed epoch, got {type(epoch).__name__}")
        return epoch

    def array(self, number: int, packed: PackedEpoch) -> np.ndarray:
        """The array called ``number`` in ``packed``, fetched the first time."""
        name = (packed.sender, number)
        array = self._arrays.get(name)
        if array is None:
            if number not in packed.arrays:
                raise EngineError(
                    f"a packed epoch names array {number} but carries no reference to it"
                )
            array = np.asarray(self._get(packed.arrays[number]))
            # Every later epoch that names it gets this same array: an edit would leak.
            array.flags.writeable = False
            self._arrays[name] = array
            self.gets += 1
            while len(self._arrays) > self.keep:
                self._arrays.popitem(last=False)
        else:
            self._arrays.move_to_end(name)
        return array


class _Pickler(pickle.Pickler):
    def __init__(
        self, file: io.BytesIO, sent: SentArrays, named: dict[int, Any], **kwargs: Any
    ) -> None:
        super().__init__(file, protocol=5, **kwargs)
        self._sent = sent
        self._named = named

    def persistent_id(self, obj: Any) -> int | None:
        return self._sent.number_of(obj, self._named)


class _Unpickler(pickle.Unpickler):
    def __init__(
        self, file: io.BytesIO, received: ReceivedArrays, packed: PackedEpoch, **kwargs: Any
    ) -> None:
        super().__init__(file, **kwargs)
        self._received = received
        self._packed = packed

    def persistent_load(self, pid: Any) -> Any:
        return self._received.array(int(pid), self._packed)
