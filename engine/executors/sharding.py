"""Which worker owns a key, and how work on a batch of events splits across workers.

Every table is hash-partitioned by key over the workers; a worker owns the versions of its
keys. Built-in tables address keys by int64 ids (see :mod:`engine.keys`), Python tables by the
Python key itself; both hashes are deterministic across processes (no ``hash()``, whose seed
differs per process).
"""

from __future__ import annotations

import zlib
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

__all__ = ["Shard", "owner_of_int", "owner_of_key", "owners_of_ids"]

# Odd, and not KeyIndex's multiplier: a worker's hash tables hash its keys by the top bits of
# another product, and ownership by the top bits of that same product would leave every
# worker's keys in one part of its tables (W=2 filled half the cells: 10M spam ran 4x slower).
_MULT = 0xBF58476D1CE4E5B9
_MASK = (1 << 64) - 1
_U32 = np.uint64(32)


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


def owner_of_int(value: int, workers: int) -> int:
    """:func:`owners_of_ids` for one int (any size: it is reduced mod 2**64 first)."""
    x = value & _MASK
    return ((((x ^ (x >> 32)) * _MULT) & _MASK) >> 32) * workers >> 32


def owner_of_key(key: Hashable, workers: int) -> int:
    """The owner of a Python table's key."""
    if isinstance(key, int) and not isinstance(key, bool):
        return owner_of_int(key, workers)
    return owner_of_int(zlib.crc32(repr(key).encode()), workers)
