"""Record batches built by compiled loops equal what the protocol says, record by record."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.kafka.batches import ByteRows, crc32c, decimal_rows, encode_batches
from tests.support.budget import examples
from tests.support.record_batches import crc32c_reference, read_batches, zigzag


def _header_section(headers: list[tuple[bytes, bytes]]) -> bytes:
    parts = [zigzag(len(headers))]
    for name, value in headers:
        parts += [zigzag(len(name)), name, zigzag(len(value)), value]
    return b"".join(parts)


def test_crc32c_of_the_standard_check_string() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


@given(st.binary(max_size=300))
@settings(max_examples=examples(200), deadline=None)
def test_crc32c_equals_the_bitwise_definition(data: bytes) -> None:
    assert crc32c(data) == crc32c_reference(data)


@given(st.lists(st.integers(-(2**63) + 1, 2**63 - 1), max_size=50))
@settings(max_examples=examples(200), deadline=None)
def test_decimal_rows_are_each_integers_text(values: list[int]) -> None:
    assert decimal_rows(np.array(values, dtype=np.int64)).rows() == [
        str(v).encode() for v in values
    ]


_records = st.lists(
    st.tuples(
        st.binary(max_size=40),
        st.binary(max_size=400),
        st.integers(0, 2**41),
        st.lists(st.tuples(st.binary(min_size=1, max_size=12), st.binary(max_size=30)), max_size=3),
    ),
    min_size=1,
    max_size=60,
)


@given(
    _records,
    st.booleans(),
    st.integers(61, 4000),
)
@settings(max_examples=examples(300), deadline=None)
def test_batches_hold_the_rows_in_order_within_the_size_limit(
    records: list[tuple[bytes, bytes, int, list[tuple[bytes, bytes]]]],
    with_headers: bool,
    max_bytes: int,
) -> None:
    keys = ByteRows.of([r[0] for r in records])
    values = ByteRows.of([r[1] for r in records])
    timestamps = np.array([r[2] for r in records], dtype=np.int64)
    headers = ByteRows.of([_header_section(r[3]) for r in records]) if with_headers else None
    # Some rows in some order: a partition's rows are a subset of a chunk.
    rows = [i for i in range(len(records)) if i % 3 != 1] or [0]
    encoded = encode_batches(
        np.array(rows), timestamps, keys, values, headers, max_batch_bytes=max_bytes
    )
    data = encoded.data.tobytes()
    batches = read_batches(data)
    assert len(batches) == len(encoded)
    got = [record for batch in batches for record in batch]
    assert [(r.key, r.value, r.timestamp) for r in got] == [
        (records[i][0], records[i][1], records[i][2]) for i in rows
    ]
    assert [r.headers for r in got] == [records[i][3] if with_headers else [] for i in rows]
    for i, batch in enumerate(batches):
        size = int(encoded.bounds[i + 1] - encoded.bounds[i])
        assert size <= max_bytes or len(batch) == 1
        assert encoded.first[i + 1] - encoded.first[i] == len(batch)


def test_a_record_larger_than_the_limit_gets_a_batch_of_its_own() -> None:
    keys = ByteRows.of([b"a", b"b", b"c"])
    values = ByteRows.of([b"x" * 10, b"y" * 500, b"z"])
    encoded = encode_batches(
        np.arange(3), np.array([5, 3, 9]), keys, values, None, max_batch_bytes=200
    )
    batches = read_batches(encoded.data.tobytes())
    assert [[r.key for r in b] for b in batches] == [[b"a"], [b"b"], [b"c"]]
    # Timestamps may go backwards within a batch: deltas are signed.
    both = encode_batches(np.arange(2), np.array([5, 3]), keys, values, None)
    assert [r.timestamp for r in read_batches(both.data.tobytes())[0]] == [5, 3]
