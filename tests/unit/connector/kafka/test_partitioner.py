"""Kafka's default partitioner hash: known vectors, the vectorised form against the scalar, and
the social generator's copy in the engine against this one."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.kafka.partitioner import (
    java_partition,
    murmur2,
    partition_byte_keys,
    partition_decimal_keys,
)
from engine.errors import EngineError
from engine.examples.social import partitioning as generator_copy
from tests.support.budget import examples

# From org.apache.kafka.common.utils.UtilsTest#testMurmur2 (Apache Kafka).
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}
# librdkafka's rdmurmur2.c unit test (its murmur2 partitioner is Java-compatible), as signed ints.
LIBRDKAFKA_VECTORS = {
    b"kafka": -798503068,
    b"giberish123456789": -1890243828,
    b"1234": -1614185708,
    b"234": -406844982,
    b"34": -2026295078,
    b"4": 1514888353,
}

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@pytest.mark.parametrize(("key", "expected"), [*KAFKA_VECTORS.items(), *LIBRDKAFKA_VECTORS.items()])
def test_murmur2_matches_kafka(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


def test_java_partition_is_positive_hash_modulo() -> None:
    for key, hashed in KAFKA_VECTORS.items():
        for partitions in (1, 3, 4, 7, 100):
            assert java_partition(key, partitions) == (hashed & 0x7FFFFFFF) % partitions


def test_java_partition_rejects_no_partitions() -> None:
    with pytest.raises(EngineError, match="partitions must be >= 1"):
        java_partition(b"1", 0)
    with pytest.raises(EngineError, match="partitions must be >= 1"):
        partition_decimal_keys(np.array([1], dtype=np.int64), 0)


def test_decimal_keys_edge_values() -> None:
    values = [
        0,
        1,
        -1,
        9,
        10,
        -10,
        99,
        100,
        999_999_999,
        1_000_000_000,
        -1_000_000_001,
        2**31,
        -(2**31),
        10**18,
        -(10**18),
        2**63 - 1,
        -(2**63),
    ]
    got = partition_decimal_keys(np.array(values, dtype=np.int64), 7)
    assert got.dtype == np.int32
    assert got.tolist() == [java_partition(str(v).encode(), 7) for v in values]


def test_decimal_keys_empty() -> None:
    got = partition_decimal_keys(np.zeros(0, dtype=np.int64), 4)
    assert got.dtype == np.int32
    assert got.size == 0


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(INT64, max_size=60), st.integers(min_value=1, max_value=64))
def test_decimal_keys_match_scalar(values: list[int], partitions: int) -> None:
    got = partition_decimal_keys(np.array(values, dtype=np.int64), partitions)
    assert got.tolist() == [java_partition(str(v).encode(), partitions) for v in values]


@settings(max_examples=examples(100), deadline=None)
@given(st.lists(st.integers(min_value=-100_000, max_value=100_000), min_size=1, max_size=60))
def test_decimal_keys_match_scalar_small_ids(values: list[int]) -> None:
    got = partition_decimal_keys(np.array(values, dtype=np.int64), 4)
    assert got.tolist() == [java_partition(str(v).encode(), 4) for v in values]


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(INT64, max_size=60), st.integers(min_value=1, max_value=64))
def test_the_generators_copy_places_keys_as_this_one(values: list[int], partitions: int) -> None:
    """engine/examples/social/partitioning.py copies the decimal-key partitioner (the engine
    may not import the connector); it must place every key where this one does."""
    keys = np.array(values, dtype=np.int64)
    got = generator_copy.partition_decimal_keys(keys, partitions)
    assert got.dtype == np.int32
    assert got.tolist() == partition_decimal_keys(keys, partitions).tolist()


def test_the_generators_copy_on_a_data_set_sized_key_range() -> None:
    users = np.arange(200_000, dtype=np.int64)
    for partitions in (1, 4, 7):
        want = partition_decimal_keys(users, partitions)
        assert np.array_equal(generator_copy.partition_decimal_keys(users, partitions), want)


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=80), st.integers(min_value=1, max_value=64))
def test_byte_keys_match_the_scalar_reference(keys: list[bytes], partitions: int) -> None:
    got = partition_byte_keys(keys, partitions)
    assert got.dtype == np.int32
    assert got.tolist() == [java_partition(k, partitions) for k in keys]


def test_byte_keys_on_the_reference_vectors_and_utf8_text() -> None:
    keys = [*KAFKA_VECTORS, *LIBRDKAFKA_VECTORS, b"", "clé-é".encode(), b"\x00\x00"]
    assert partition_byte_keys(keys, 7).tolist() == [java_partition(k, 7) for k in keys]
    with pytest.raises(EngineError, match="partitions must be >= 1"):
        partition_byte_keys(keys, 0)
