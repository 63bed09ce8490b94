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

__all__ = ["Shard", "owner_of_key", "owners_of_ids"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Shard:
    """This worker's place among ``count`` workers."""

    index: int = 0
    count: int = 1

    def rows(self, n: int) -> slice:
        """The contiguous share of ``n`` rows this worker computes for stateless work."""
        return slice(self.index * n // self.count, (self.index + 1) * n // self.count)


def owners_of_ids(ids: np.ndarray, workers: int) -> np.ndarray:
    """The owner of each int64 key id (splitmix64 finaliser, then modulo)."""
    x = ids.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= _M1
        x ^= x >> np.uint64(27)
        x *= _M2
        x ^= x >> np.uint64(31)
    owners: np.ndarray = (x % np.uint64(workers)).astype(np.int64)
    return owners


def _mix(value: int) -> int:
    x = value & _MASK
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK
    x ^= x >> 31
    return x


def owner_of_key(key: Hashable, workers: int) -> int:
    """The owner of a Python table's key."""
    if isinstance(key, int) and not isinstance(key, bool):
        return _mix(key) % workers
    return _mix(zlib.crc32(repr(key).encode())) % workers
