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

#: 2**64 / golden ratio, odd: Fibonacci hashing's multiplier.
_GOLDEN = 0x9E3779B97F4A7C15
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

    Fibonacci hashing: the high 32 bits of ``id * 2**64/phi`` (mod 2**64), scaled to
    ``workers`` by a multiply and shift. Three passes over the ids, no division: this runs
    for every row of every epoch on every worker (a splitmix64 finaliser and a modulo took
    ~5x longer). Consecutive ids, strided ids and packed pairs all spread evenly
    (``tests/unit/engine/executors/test_sharding.py``).
    """
    x = np.asarray(ids, dtype=np.int64).view(np.uint64)
    h = x * np.uint64(_GOLDEN)
    h >>= _U32
    h *= np.uint64(workers)
    h >>= _U32
    owners: np.ndarray = h.view(np.int64)
    return owners


def owner_of_int(value: int, workers: int) -> int:
    """:func:`owners_of_ids` for one int (any size: it is reduced mod 2**64 first)."""
    return ((((value & _MASK) * _GOLDEN) & _MASK) >> 32) * workers >> 32


def owner_of_key(key: Hashable, workers: int) -> int:
    """The owner of a Python table's key."""
    if isinstance(key, int) and not isinstance(key, bool):
        return owner_of_int(key, workers)
    return owner_of_int(zlib.crc32(repr(key).encode()), workers)
