"""Kafka's default partitioner hash, scalar and vectorised.

Kafka's Java producer places a keyed record in partition
``toPositive(murmur2(keyBytes)) % numPartitions`` (``org.apache.kafka.common.utils.Utils``).
Output records are keyed and placed with it (:mod:`connector.output.sink`), so that they land
where a Java producer would put them. The reference data set's generator, in the engine, keeps
its own copy of the vectorised decimal-key part (:mod:`engine.examples.social.partitioning`):
the engine never imports the connector.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from engine.errors import EngineError

__all__ = ["java_partition", "murmur2", "partition_byte_keys", "partition_decimal_keys"]

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK32 = 0xFFFFFFFF
_POW10 = np.array([10**k for k in range(20)], dtype=np.uint64)


def murmur2(data: bytes) -> int:
    """Return Kafka's ``Utils.murmur2(data)``: MurmurHash2, seed 0x9747b28c, as a signed int32."""
    length = len(data)
    h = (_SEED ^ length) & _MASK32
    body = length & ~3
    for i in range(0, body, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK32
        k ^= k >> 24
        k = (k * _M) & _MASK32
        h = ((h * _M) & _MASK32) ^ k
    tail = length & 3
    if tail == 3:
        h ^= data[body + 2] << 16
    if tail >= 2:
        h ^= data[body + 1] << 8
    if tail >= 1:
        h ^= data[body]
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def java_partition(key: bytes, partitions: int) -> int:
    """Return the partition that Kafka's Java producer picks for ``key`` among ``partitions``."""
    if partitions < 1:
        raise EngineError(
            f"partitions must be >= 1, got {partitions}; pass the topic's partition count"
        )
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def _murmur2_columns(columns: list[npt.NDArray[np.uint32]], n: int) -> npt.NDArray[np.uint32]:
    """Murmur2 of ``n`` equal-length byte strings given column by column (byte j of each)."""
    length = len(columns)
    m = np.uint32(_M)
    h = np.full(n, (_SEED ^ length) & _MASK32, dtype=np.uint32)
    body = length & ~3
    for i in range(0, body, 4):
        k = columns[i] | (columns[i + 1] << 8) | (columns[i + 2] << 16) | (columns[i + 3] << 24)
        k *= m
        k ^= k >> 24
        k *= m
        h *= m
        h ^= k
    tail = length & 3
    if tail == 3:
        h ^= columns[body + 2] << 16
    if tail >= 2:
        h ^= columns[body + 1] << 8
    if tail >= 1:
        h ^= columns[body]
        h *= m
    h ^= h >> 13
    h *= m
    h ^= h >> 15
    return h


def partition_decimal_keys(values: npt.NDArray[np.int64], partitions: int) -> npt.NDArray[np.int32]:
    """Partition of each value's UTF-8 decimal string, as ``java_partition(str(v).encode())``.

    Vectorised: the decimal strings are never built as Python objects; rows are grouped by
    string length (at most 40 sign/length groups) and hashed column by column.
    """
    if partitions < 1:
        raise EngineError(
            f"partitions must be >= 1, got {partitions}; pass the topic's partition count"
        )
    v = np.asarray(values, dtype=np.int64).ravel()
    neg = v < 0
    as_unsigned = v.astype(np.uint64)
    # Two's-complement negation in uint64 is exact for every int64, including its minimum.
    remaining = np.where(neg, np.uint64(0) - as_unsigned, as_unsigned)
    # Number of decimal digits: how many powers of ten are <= the magnitude (0 has one digit).
    ndigits = np.maximum(np.searchsorted(_POW10, remaining, side="right"), 1)
    # Digits from the right. Split the magnitude into base-10^9 chunks so that the per-digit
    # divisions run on uint32, which numpy vectorises far better than uint64.
    billion = np.uint64(1_000_000_000)
    max_digits = int(ndigits.max(initial=1))
    from_right: list[npt.NDArray[np.uint32]] = []
    ten = np.uint32(10)
    for chunk_index in range((max_digits + 8) // 9):
        if chunk_index > 0:
            remaining = remaining // billion
        chunk = (remaining % billion if max_digits > 9 else remaining).astype(np.uint32)
        for _ in range(9):
            quotient = chunk // ten
            from_right.append(chunk - quotient * ten)
            chunk = quotient
    # Group rows by (length, sign); a stable sort of small ints is a radix sort in numpy.
    group_key = (ndigits * 2 + neg).astype(np.int16)
    order = np.argsort(group_key, kind="stable")
    bounds = np.flatnonzero(np.diff(group_key[order])) + 1
    hashes = np.empty(v.shape[0], dtype=np.uint32)
    for rows in np.split(order, bounds):
        if rows.size == 0:
            continue
        sign = int(neg[rows[0]])
        digits = int(ndigits[rows[0]])
        columns = [np.full(rows.size, ord("-"), dtype=np.uint32)] if sign else []
        columns.extend(from_right[digits - 1 - d][rows] + np.uint32(48) for d in range(digits))
        hashes[rows] = _murmur2_columns(columns, rows.size)
    positive = (hashes & np.uint32(0x7FFFFFFF)).astype(np.int64)
    partition: npt.NDArray[np.int32] = (positive % partitions).astype(np.int32)
    return partition


def partition_byte_keys(keys: Sequence[bytes], partitions: int) -> npt.NDArray[np.int32]:
    """Partition of each key, as ``java_partition(key, partitions)``, vectorised.

    Keys are grouped by length; each group's bytes are joined once and read as an
    ``(n, length)`` matrix, hashed column by column (no per-key Python arithmetic).
    """
    if partitions < 1:
        raise EngineError(
            f"partitions must be >= 1, got {partitions}; pass the topic's partition count"
        )
    n = len(keys)
    lengths = np.fromiter(map(len, keys), dtype=np.int64, count=n)
    hashes = np.empty(n, dtype=np.uint32)
    order = np.argsort(lengths, kind="stable")
    bounds = np.flatnonzero(np.diff(lengths[order])) + 1
    for rows in np.split(order, bounds):
        if rows.size == 0:
            continue
        length = int(lengths[rows[0]])
        picked = [keys[i] for i in rows.tolist()]
        matrix = np.frombuffer(b"".join(picked), dtype=np.uint8).reshape(rows.size, length)
        columns = [matrix[:, j].astype(np.uint32) for j in range(length)]
        hashes[rows] = _murmur2_columns(columns, rows.size)
    positive = (hashes & np.uint32(0x7FFFFFFF)).astype(np.int64)
    partition: npt.NDArray[np.int32] = (positive % partitions).astype(np.int32)
    return partition
