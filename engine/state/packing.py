"""Sorting helpers: a compiled counting sort for keys from a small range (slots: dense
integers), radix passes for keys of up to 32 bits, packing small non-negative integers into one
int64 so numpy's (fast) value sort can replace its (several times slower) argsort, plus range
expansion.

Every helper falls back to ``np.argsort(kind="stable")`` / ``np.lexsort`` when the fields do not
fit in 63 bits, so results never depend on the packing.
"""

from __future__ import annotations

import numpy as np

from engine.state.jit import jit, register_warm_up

__all__ = ["bits_for", "expand_ranges", "pack_order", "radix_order", "sort_pairs"]


def bits_for(values: np.ndarray) -> int:
    """Bits needed for the largest of ``values`` (non-negative); 0 for an empty array."""
    return int(values.max()).bit_length() if len(values) else 0


#: Below this many keys a value sort is as fast as radix passes.
_RADIX_MIN = 2048
_RADIX_MAX_BITS = 32
#: A counting sort's extra memory and time go with its key range: it is used when the range
#: is at most this many times the number of keys (plus :data:`_COUNTING_SLACK`).
_COUNTING_SPAN = 2
_COUNTING_SLACK = 1 << 16


@jit
def _counting_order(keys: np.ndarray, low: int, span: int) -> np.ndarray:
    """The stable argsort of ``keys`` (all in ``low .. low + span - 1``) by counting: one
    histogram, its running sum, one scatter. Linear in keys plus range."""
    n = len(keys)
    at = np.zeros(span + 1, dtype=np.int64)
    for i in range(n):
        at[keys[i] - low + 1] += 1
    for k in range(span):
        at[k + 1] += at[k]
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        k = keys[i] - low
        out[at[k]] = i
        at[k] += 1
    return out


@register_warm_up
def _warm() -> None:
    _counting_order(np.zeros(1, dtype=np.int64), 0, 1)
    # Key slots come read-only from KeyIndex.register (twins share them): numba types them
    # apart, and a worker must not compile that variant on its first large epoch.
    slots = np.zeros(1, dtype=np.int64)
    slots.flags.writeable = False
    _counting_order(slots, 0, 1)
    _lsd_order(np.zeros(1, dtype=np.int64), 1)
    _lsd_order(slots, 1)


@jit
def _lsd_order(keys: np.ndarray, bits: int) -> np.ndarray:
    n = len(keys)
    passes = max(1, (bits + 10) // 11)
    width = (bits + passes - 1) // passes
    mask = (1 << width) - 1
    order = np.arange(n)
    cur = np.empty(n, dtype=np.int64)
    for i in range(n):
        cur[i] = keys[i]
    next_order = np.empty(n, dtype=np.int64)
    next_cur = np.empty(n, dtype=np.int64)
    count = np.empty(mask + 2, dtype=np.int64)
    for p in range(passes):
        shift = p * width
        count[:] = 0
        for i in range(n):
            count[((cur[i] >> shift) & mask) + 1] += 1
        if n == 0 or count[((cur[0] >> shift) & mask) + 1] == n:
            continue  # one digit value for every key: this pass would keep the order
        for d in range(mask + 1):
            count[d + 1] += count[d]
        for i in range(n):
            d = (cur[i] >> shift) & mask
            j = count[d]
            next_order[j] = order[i]
            next_cur[j] = cur[i]
            count[d] = j + 1
        order, next_order = next_order, order
        cur, next_cur = next_cur, cur
    return order


def radix_order(keys: np.ndarray, bits: int) -> np.ndarray:
    """A stable argsort of non-negative int64 ``keys`` below ``2**bits``, by least significant
    digit first: one stable counting pass per digit of at most 11 bits (a histogram that
    stays in the L1 cache), compiled, each pass moving the keys along with their order so
    that none reads them through it. numpy's radix sort of uint16 digits, with a gather of
    the keys and of the order per pass, took 1.4-1.7x as long (250,000 keys of 20-22 bits)."""
    out: np.ndarray = _lsd_order(np.ascontiguousarray(keys, dtype=np.int64), bits)
    return out


def pack_order(keys: np.ndarray) -> np.ndarray:
    """A stable argsort of non-negative int64 ``keys``."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    low = int(keys.min())
    span = int(keys.max()) - low + 1
    if n >= _RADIX_MIN and span <= _COUNTING_SPAN * n + _COUNTING_SLACK:
        # Slots of an epoch's keys are such a range: 12x faster than the radix passes at
        # 230,000 keys over 100,000 slots.
        return _counting_order(np.ascontiguousarray(keys, dtype=np.int64), low, span)
    bits = bits_for(keys)
    # numpy's value sort of int64 is a plain introsort here (~50 ns a key at 100k keys); the
    # compiled radix passes are linear: at most three 11-bit passes for 32-bit keys.
    if n >= _RADIX_MIN and bits <= _RADIX_MAX_BITS and low >= 0:
        return radix_order(keys, bits)
    ib = max(1, (n - 1).bit_length())
    if bits + ib <= 63:
        packed = np.sort((keys << ib) | np.arange(n, dtype=np.int64))
        return packed & ((1 << ib) - 1)
    return np.argsort(keys, kind="stable")


def sort_pairs(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """A stable argsort by ``(first, second)``: ``first`` non-negative int64, ``second`` any
    int64 (time keys may be negative). Where both fit in 62 bits (``second`` counted from its
    smallest value) one packed sort does it, ~4x faster than ``np.lexsort``'s two passes at
    125,000 writes."""
    if len(second) > 1 and bool((second[1:] >= second[:-1]).all()):
        # Already in ``second`` order (reads in log order and their cutoffs): a stable sort
        # by ``first`` alone keeps it, and ``first`` (slots) has a small range.
        return pack_order(first)
    if len(first) and int(first.min()) >= 0:
        low = int(second.min())
        b2 = (int(second.max()) - low).bit_length()
        if bits_for(first) + b2 <= 62:
            shifted = second - low if low else second
            return pack_order((first << b2) | shifted)
    return np.lexsort((second, first))


def expand_ranges(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All positions ``starts[i] + k`` for ``k < lengths[i]``, with the range ``i`` of each."""
    lengths = np.maximum(lengths, 0)
    total = int(lengths.sum())
    owner = np.repeat(np.arange(len(starts), dtype=np.int64), lengths)
    if total == 0:
        return np.zeros(0, dtype=np.int64), owner
    offsets = np.cumsum(lengths) - lengths
    within = np.arange(total, dtype=np.int64) - offsets[owner]
    return starts[owner] + within, owner
