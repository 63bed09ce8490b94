"""Dense slots for int64 keys, so that per-key state lives in plain numpy arrays.

Two modes. While every key seen is a small non-negative int (ids from a dictionary encoder,
user ids), a key is its own slot: a lookup is a bounds check. The first key outside that range
switches the index, for good, to an open-addressing hash table (linear probing), and later keys
get the next free slots, in order of first appearance. Slots never change, so arrays indexed by
slot stay valid across the switch.

Lookups and registrations probe in a compiled loop (:func:`_probe_cells`): one pass over the
keys, each probe reading a cell's key and slot from one cache line, new keys placed where their
probe ended. The vectorised rounds it replaced (gather a probe position for every unresolved
key, compare, compact, repeat; then sort the missing keys, place them and probe again) cost
3-4x as much on the spam backtest's 3M pair keys. Resizes re-insert the old cells in a compiled
loop too (:func:`_rehash`): their vectorised placement (a radix sort of the new homes, then a
running maximum) cost 13% of the spam backtest's time at 5M events, where every table keyed by
a sender that only some messages write holds a hash table that doubles ~9 times.
"""

from __future__ import annotations

import weakref

import numpy as np

from engine.state.jit import jit, register_warm_up

__all__ = ["KeyIndex", "as_int64"]

_MULT = np.uint64(0x9E37_79B9_7F4A_7C15)
# A direct index may always span this many slots. Small: every table keeps several arrays
# per slot and a checkpoint holds them, so one event keyed 169,693 made each snapshot 11 MB
# when the floor was 2**18 (sparse keys belong in the hash table).
_DIRECT_FLOOR = 1 << 12
_DIRECT_FACTOR = 4  # ... or this many times the keys it holds
# The hash table doubles when more than half full, so it holds 2-4 cells per key (it was 4-8
# at load <= 1/4): linear probing at load 1/2 still resolves most keys in one or two probes,
# and a resize, which re-places the keys in order of their cells (no probing) and is mostly
# the cost of faulting in the new table's pages, touches half the memory. Growing 4x at a time
# instead overshoots: the table of 3.3M pair keys (the spam backtest at 10M events) would be
# 2**24 cells rather than 2**23, and faulting in 256 MB took a second on the 2-core machine.
_MAX_LOAD = 2  # cells per key, at least
_RESIZE_TO = 2  # cells per key at least, after a resize (so: double)


@jit
def _probe_cells(
    cells: np.ndarray, bits: int, keys: np.ndarray, out: np.ndarray, first_slot: int, room: int
) -> tuple[int, int]:
    """Slots of ``keys`` into ``out`` (-1 when absent), inserting absent keys with slots
    ``first_slot, first_slot + 1, ...`` while ``room`` allows (0: look up only).

    Returns ``(done, inserted)``: keys resolved (all of them, unless a key found no room:
    the caller grows the table and goes on from there) and keys inserted."""
    mask = (1 << bits) - 1
    shift = np.uint64(64 - bits)
    mult = np.uint64(0x9E3779B97F4A7C15)
    inserted = 0
    for i in range(len(keys)):
        key = keys[i]
        pos = np.int64((np.uint64(key) * mult) >> shift)
        while True:
            slot = cells[pos, 1]
            if slot < 0:
                if room == 0:
                    out[i] = -1
                elif inserted == room:
                    return i, inserted
                else:
                    cells[pos, 0] = key
                    cells[pos, 1] = first_slot + inserted
                    out[i] = first_slot + inserted
                    inserted += 1
                break
            if cells[pos, 0] == key:
                out[i] = slot
                break
            pos = (pos + 1) & mask
    return len(keys), inserted


@jit
def _rehash(old: np.ndarray, new: np.ndarray, bits: int) -> None:
    """Insert every live (key, slot) cell of ``old`` into the empty table ``new``.

    Old cells are walked in order: with multiplicative hashing a key's home in a table twice
    as large is twice its old home (plus one bit), so the writes run through ``new`` nearly in
    order. Any insertion order gives a valid linear-probing table (nothing is ever deleted)."""
    mask = (1 << bits) - 1
    shift = np.uint64(64 - bits)
    mult = np.uint64(0x9E3779B97F4A7C15)
    for c in range(old.shape[0]):
        slot = old[c, 1]
        if slot < 0:
            continue
        key = old[c, 0]
        pos = np.int64((np.uint64(key) * mult) >> shift)
        while new[pos, 1] >= 0:
            pos = (pos + 1) & mask
        new[pos, 0] = key
        new[pos, 1] = slot


@register_warm_up
def _warm() -> None:
    cells = np.zeros((2, 2), dtype=np.int64)
    cells[:, 1] = -1
    out = np.zeros(1, dtype=np.int64)
    _probe_cells(cells, 1, np.ones(1, dtype=np.int64), out, 0, 1)
    bigger = np.full((4, 2), -1, dtype=np.int64)
    _rehash(cells, bigger, 2)


class KeyIndex:
    """Maps int64 keys to dense slots ``0 .. n_slots - 1`` (never reused, never moved)."""

    __slots__ = ("_bits", "_cells", "_count", "_direct", "_known", "_last", "n_slots")

    def __init__(self) -> None:
        self.n_slots = 0  # arrays indexed by slot need this length
        self._direct = True
        self._known = np.zeros(0, dtype=bool)  # direct mode: which slots are real keys
        self._count = 0  # keys registered
        self._bits = 0
        # Hash mode: one row (key, slot) per cell, slot -1 when empty. A probe reads both
        # from one cache line (as a single 16-byte element), not one line from each of two
        # arrays: 250k lookups among 3.3M keys took 11.5 ms instead of 13.9.
        self._cells = np.zeros((0, 2), dtype=np.int64)
        # The last keys registered and their slots: tables written by the same key column
        # share one index (see engine.executors.followers) and register the same array.
        # Weak references: an epoch's arrays must not outlive it for the sake of this.
        self._last: tuple[weakref.ref[np.ndarray], weakref.ref[np.ndarray]] | None = None

    def __getstate__(self) -> dict[str, object]:
        state = {name: getattr(self, name) for name in self.__slots__ if name != "_last"}
        return state

    def __setstate__(self, state: dict[str, object] | tuple[None, dict[str, object]]) -> None:
        # Snapshots from before __getstate__ hold the default (None, slots) pair.
        items = state[1] if isinstance(state, tuple) else state
        for name, value in items.items():
            setattr(self, name, value)
        self._last = None

    def nbytes(self) -> int:
        return self._known.nbytes + self._cells.nbytes

    @property
    def _table_keys(self) -> np.ndarray:
        return self._cells[:, 0]

    @property
    def _table_slots(self) -> np.ndarray:
        return self._cells[:, 1]

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Slots of ``keys``; -1 for keys never registered (in both modes)."""
        # Contiguous: the compiled probe is specialised (and warmed up) for that layout.
        keys = np.ascontiguousarray(keys, dtype=np.int64)
        if self._direct:
            inside = (keys >= 0) & (keys < self.n_slots)
            known = np.zeros(len(keys), dtype=bool)
            known[inside] = self._known[keys[inside]]
            return np.where(known, keys, -1)
        return self._probe(keys)

    def register(self, keys: np.ndarray) -> np.ndarray:
        """Slots of ``keys``, giving new slots to keys not seen before (read-only: the same
        array object registered again gets the same array back, without probing, since a
        key's slot never changes; callers must not change ``keys`` in place, and should pass
        the array they were given, not a converted copy or view, for the memo to find it)."""
        last = self._last
        if last is not None and last[0]() is keys:
            known = last[1]()
            if known is not None:
                return known
        slots = self._register(np.ascontiguousarray(as_int64(keys)))
        slots.flags.writeable = False
        self._last = (weakref.ref(keys), weakref.ref(slots))
        return slots

    def _register(self, keys: np.ndarray) -> np.ndarray:
        if len(keys) == 0:
            return np.zeros(0, dtype=np.int64)
        if self._direct:
            low, high = int(keys.min()), int(keys.max())
            limit = max(_DIRECT_FLOOR, _DIRECT_FACTOR * (self._count + len(keys)))
            if low >= 0 and high < limit:
                if high >= self.n_slots:
                    self.n_slots = high + 1
                    grown = np.zeros(self.n_slots, dtype=bool)
                    grown[: len(self._known)] = self._known
                    self._known = grown
                fresh = ~self._known[keys]
                if fresh.any():
                    self._known[keys[fresh]] = True
                    self._count = int(np.count_nonzero(self._known))
                return np.array(keys, dtype=np.int64)
            self._to_hash()
        slots = np.empty(len(keys), dtype=np.int64)
        done = 0
        while True:
            # Room for new keys while the table stays at most 1/_MAX_LOAD full.
            room = max(0, (1 << self._bits) // _MAX_LOAD - self._count)
            if room:
                step, inserted = _probe_cells(
                    self._cells, self._bits, keys[done:], slots[done:], self.n_slots, room
                )
                done += step
                self.n_slots += inserted
                self._count += inserted
            if done == len(keys):
                return slots
            self._resize(max(self._bits + 1, (self._count * _RESIZE_TO).bit_length()))

    # ------------------------------------------------------------------ hash mode

    def _to_hash(self) -> None:
        keys = np.flatnonzero(self._known).astype(np.int64)
        self._direct = False
        self._known = np.zeros(0, dtype=bool)
        self._resize(max(10, int(len(keys) * _RESIZE_TO).bit_length()))
        self._insert(keys, keys.copy())

    def _resize(self, bits: int) -> None:
        old = self._cells
        self._bits = bits
        # -1 in both columns: slot -1 marks an empty cell, and one fill faults every page in.
        self._cells = np.full((1 << bits, 2), -1, dtype=np.int64)
        if len(old):
            _rehash(old, self._cells, bits)

    def _hash(self, keys: np.ndarray) -> np.ndarray:
        mixed = keys.view(np.uint64) * _MULT
        return np.asarray((mixed >> np.uint64(64 - self._bits)).astype(np.int64))

    def _insert(self, keys: np.ndarray, slots: np.ndarray) -> None:
        """Add keys known to be absent (and distinct); keeps the load factor at most 1/2.

        Callers count the keys first, so ``_count`` is what the table holds after this;
        counting the table's live cells instead would scan all of it on every call."""
        stored = self._count
        if stored * _MAX_LOAD > (1 << self._bits):
            need = max(self._bits + 1, (stored * _RESIZE_TO).bit_length())
            self._resize(need)
        self._place(keys, slots)

    def _place(self, keys: np.ndarray, slots: np.ndarray) -> None:
        mask = (1 << self._bits) - 1
        pos = self._hash(keys)
        while len(keys):
            free = self._table_slots[pos] < 0
            # Several keys may want the same free cell: each writes its key there, and the
            # one whose key stayed takes it (keys are distinct, so exactly one per cell).
            # A scatter and a gather instead of a sort per round.
            cells = pos[free]
            self._table_keys[cells] = keys[free]
            winner = np.zeros(len(keys), dtype=bool)
            winner[free] = self._table_keys[cells] == keys[free]
            self._table_slots[pos[winner]] = slots[winner]
            lose = ~winner
            keys, slots, pos = keys[lose], slots[lose], (pos[lose] + 1) & mask

    def _probe(self, keys: np.ndarray) -> np.ndarray:
        out = np.full(len(keys), -1, dtype=np.int64)
        if self._bits == 0 or len(keys) == 0:
            return out
        _probe_cells(self._cells, self._bits, keys, out, 0, 0)
        return out


def as_int64(values: np.ndarray) -> np.ndarray:
    """``values`` as int64, the very same object when it already is.

    ``np.asarray(values, dtype=np.int64)`` returns a new view when ``values``' dtype equals
    int64 but is not numpy's own int64 instance, which is what every array unpickled from
    another process carries (a pickled dtype is rebuilt as a copy): the identity memos of
    :meth:`KeyIndex.register` and :class:`~engine.state.epoch.EpochGrouping` then never hit.
    """
    if isinstance(values, np.ndarray) and values.dtype == np.int64:
        return values
    return np.asarray(values, dtype=np.int64)
