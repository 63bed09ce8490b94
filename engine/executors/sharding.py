"""Which worker owns a key, and how work on a batch of events splits across workers.

Every table is hash-partitioned by key over the workers; a worker owns the versions of its
keys. Built-in tables address keys by int64 ids (see :mod:`engine.keys`), Python tables by the
Python key itself; both hashes are deterministic across processes (no ``hash()``, whose seed
differs per process).

On logs shaped like production one key can carry a large share of the events (a hot sender),
and the worker that owns it would carry that share plus its hash share of every other key
while the rest wait at the barrier. :class:`Ownership` therefore lets a run *balance* its
built-in tables' keys once, from its first epoch (:func:`balanced_ownership`): the heaviest
keys are pinned to workers (largest first, each to the least loaded), and the hash ranges of
all other keys are widened or narrowed so that every worker ends up with about the same load.
A pinned key's state lives on one worker, so a key with more than 1/W of the load still
bounds the speed-up; everything else moves away from it. Every worker decides the same from
the same epoch, and the decision is part of each worker's snapshot.
"""

from __future__ import annotations

import zlib
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np

from engine.keys import canonical_key
from engine.state.jit import jit, register_warm_up

__all__ = [
    "Ownership",
    "Shard",
    "balanced_ownership",
    "owner_of_int",
    "owner_of_key",
    "owners_of_ids",
]

# Odd, and not KeyIndex's multiplier: a worker's hash tables hash its keys by the top bits of
# another product, and ownership by the top bits of that same product would leave every
# worker's keys in one part of its tables (W=2 filled half the cells: 10M spam ran 4x slower).
_MULT = 0xBF58476D1CE4E5B9
_MASK = (1 << 64) - 1
_U32 = np.uint64(32)
_SPAN = 1 << 32  # the range of the 32-bit hash that ranges of workers divide
#: A key is pinned when it carries at least 1/(_PIN_SHARE * W) of the first epoch's load,
#: and at most _PIN_SHARE * W keys are: keys that size, left to the hash, land unevenly
#: enough (30 keys of 1% each over 2 workers: 53/47) to matter.
_PIN_SHARE = 64


@dataclass(frozen=True, slots=True)
class Shard:
    """This worker's place among ``count`` workers."""

    index: int = 0
    count: int = 1

    def rows(self, n: int) -> slice:
        """The contiguous share of ``n`` rows this worker computes for stateless work."""
        return slice(self.index * n // self.count, (self.index + 1) * n // self.count)


def owners_of_ids(ids: np.ndarray, workers: int) -> np.ndarray:
    """The owner of each int64 key id.

    Multiplicative hashing: the high 32 bits of ``(id ^ id >> 32) * M`` (mod 2**64), scaled
    to ``workers`` by a multiply and shift. A few passes over the ids, no division: this runs
    for every row of every epoch on every worker (a splitmix64 finaliser and a modulo took
    ~25x longer). Consecutive ids, strided ids and packed pairs all spread evenly, also over
    each worker's hash tables (``tests/unit/engine/executors/test_sharding.py``).
    """
    x = np.asarray(ids, dtype=np.int64).view(np.uint64)
    h = x >> _U32
    h ^= x
    h *= np.uint64(_MULT)
    h >>= _U32
    h *= np.uint64(workers)
    h >>= _U32
    owners: np.ndarray = h.view(np.int64)
    return owners


@dataclass(frozen=True, slots=True, eq=False)
class Ownership:
    """Which of ``workers`` workers owns each built-in table key id.

    A pinned id (``pinned``, sorted, with its worker in ``pinned_owner``) belongs to that
    worker; any other id belongs to the worker whose range of the 32-bit hash holds it
    (worker k: ``[bounds[k], bounds[k + 1])``). :meth:`uniform` is :func:`owners_of_ids`.
    """

    workers: int
    bounds: np.ndarray
    pinned: np.ndarray
    pinned_owner: np.ndarray
    _plain: bool = field(init=False, repr=False)
    #: The pins as an open-addressing table (slots of ids, their owners; -1: empty), built
    #: when first needed: a lookup per id costs a probe or two, not a search.
    _table: tuple[np.ndarray, np.ndarray] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        plain = self.pinned.size == 0 and self.bounds.tolist() == _equal_bounds(self.workers)
        object.__setattr__(self, "_plain", plain)

    @classmethod
    def uniform(cls, workers: int) -> Ownership:
        """Equal hash ranges and no pins: exactly :func:`owners_of_ids`."""
        bounds = np.array(_equal_bounds(workers), dtype=np.int64)
        none = np.zeros(0, dtype=np.int64)
        return cls(workers, bounds, none, none)

    @property
    def is_uniform(self) -> bool:
        """Whether this is :meth:`uniform` (no pins, equal ranges)."""
        return self._plain

    def owners(self, ids: np.ndarray) -> np.ndarray:
        """The owner of each int64 key id."""
        if self._plain:
            return owners_of_ids(ids, self.workers)
        if self._table is None:
            object.__setattr__(self, "_table", _pin_table(self.pinned, self.pinned_owner))
        assert self._table is not None
        slots, owner = self._table
        out: np.ndarray = _owners_weighted(
            np.ascontiguousarray(ids, dtype=np.int64), self.bounds, slots, owner
        )
        return out


def _equal_bounds(workers: int) -> list[int]:
    """The hash ranges of :func:`owners_of_ids`: (h * W) >> 32 >= k exactly when
    h >= ceil(k * 2**32 / W)."""
    return [-(-k * _SPAN // workers) for k in range(workers + 1)]


def _pin_table(pinned: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size = 8
    while size < 4 * len(pinned):
        size *= 2
    slots = np.zeros(size, dtype=np.int64)
    owners = np.full(size, -1, dtype=np.int64)
    _fill_pins(pinned, owner, slots, owners)
    return slots, owners


@jit
def _slot_of(key: int, size: int) -> int:
    x = np.uint64(key)
    h = (x ^ (x >> np.uint64(29))) * np.uint64(_MULT)
    return int(h >> np.uint64(40)) & (size - 1)


@jit
def _fill_pins(
    pinned: np.ndarray, owner: np.ndarray, slots: np.ndarray, owners: np.ndarray
) -> None:
    size = slots.shape[0]
    for i in range(pinned.shape[0]):
        k = _slot_of(pinned[i], size)
        while owners[k] >= 0:
            k = (k + 1) & (size - 1)
        slots[k] = pinned[i]
        owners[k] = owner[i]


@jit
def _owners_weighted(
    ids: np.ndarray, bounds: np.ndarray, slots: np.ndarray, owners: np.ndarray
) -> np.ndarray:
    n = ids.shape[0]
    workers = bounds.shape[0] - 1
    size = slots.shape[0]
    out = np.empty(n, dtype=np.int64)
    mult = np.uint64(_MULT)
    for i in range(n):
        key = ids[i]
        k = _slot_of(key, size)
        found = -1
        while owners[k] >= 0:
            if slots[k] == key:
                found = owners[k]
                break
            k = (k + 1) & (size - 1)
        if found >= 0:
            out[i] = found
            continue
        x = np.uint64(key)
        h = np.int64(((x ^ (x >> np.uint64(32))) * mult) >> np.uint64(32))
        # The last worker whose range starts at or below h: ranges are ordered, so that is
        # how many later ones start there. Counted, not searched: a search's branch goes
        # either way for half of all keys, and its mispredictions cost twice the count.
        lo = 0
        for w in range(1, workers):
            lo += bounds[w] <= h
        out[i] = lo
    return out


@register_warm_up
def _warm() -> None:
    ownership = balanced_ownership(np.arange(40, dtype=np.int64), np.arange(40.0), 2)
    ownership.owners(np.arange(50, dtype=np.int64))
    # Key ids of an int column are that column itself, read-only when it came from a file.
    ids = np.arange(50, dtype=np.int64)
    ids.flags.writeable = False
    ownership.owners(ids)


def balanced_ownership(ids: np.ndarray, loads: np.ndarray, workers: int) -> Ownership:
    """An :class:`Ownership` that spreads ``loads`` (per distinct key id ``ids``: how much
    work its rows make, e.g. rows times the operators keyed by it) evenly over ``workers``.

    Keys with at least 1/(64 W) of the load (at most 64 W of them, heaviest first) are pinned,
    each to the least loaded worker so far (ties: the lower index, then the lower id, so every
    worker computes the same); the other keys' hash ranges are then sized so that each worker
    tops up to one level (water filling). Without such keys it is :meth:`Ownership.uniform`.
    """
    ids = np.asarray(ids, dtype=np.int64)
    loads = np.asarray(loads, dtype=np.float64)
    total = float(loads.sum())
    if workers < 2 or total <= 0:
        return Ownership.uniform(workers)
    order = np.lexsort((ids, -loads))
    heavy = order[loads[order] >= total / (_PIN_SHARE * workers)][: _PIN_SHARE * workers]
    if heavy.size == 0:
        return Ownership.uniform(workers)
    held = np.zeros(workers, dtype=np.float64)
    owner = np.empty(heavy.size, dtype=np.int64)
    for i, k in enumerate(heavy.tolist()):
        w = int(np.argmin(held))
        owner[i] = w
        held[w] += loads[k]
    rest = total - float(held.sum())
    shares = _water_fill(held, rest) if rest > 0 else np.full(workers, 1.0 / workers)
    cum = np.cumsum(shares)
    bounds = np.empty(workers + 1, dtype=np.int64)
    bounds[0] = 0
    bounds[1:] = np.clip(np.rint(cum * _SPAN), 0, _SPAN).astype(np.int64)
    bounds[-1] = _SPAN
    bounds = np.maximum.accumulate(bounds)
    pinned = ids[heavy]
    by_id = np.argsort(pinned, kind="stable")
    return Ownership(workers, bounds, pinned[by_id], owner[by_id])


def _water_fill(held: np.ndarray, rest: float) -> np.ndarray:
    """Shares of ``rest`` per worker that raise the lowest ``held`` loads to one level."""
    low = np.sort(held)
    level = low[-1]
    for m in range(1, len(low) + 1):
        level = (rest + float(low[:m].sum())) / m
        if m == len(low) or level <= low[m]:
            break
    top: np.ndarray = np.maximum(level - held, 0.0)
    return top / float(top.sum())


def owner_of_int(value: int, workers: int) -> int:
    """:func:`owners_of_ids` for one int (any size: it is reduced mod 2**64 first)."""
    x = value & _MASK
    return ((((x ^ (x >> 32)) * _MULT) & _MASK) >> 32) * workers >> 32


def owner_of_key(key: Hashable, workers: int) -> int:
    """The owner of a Python table's key: keys equal under ``==`` (``True``, ``1``, ``1.0``,
    ``np.int32(1)``) have one owner, as they are one key in the serial executor's dicts."""
    key = canonical_key(key)
    if type(key) is int:
        return owner_of_int(key, workers)
    return owner_of_int(zlib.crc32(repr(key).encode()), workers)
