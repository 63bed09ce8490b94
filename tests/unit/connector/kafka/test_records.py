"""Fetched record batches read into columns (connector.kafka.records), against batches built
from the protocol's description (tests/support/record_batches.py): every record from the fetch
offset on with its offset, timestamp, key, value and headers, whatever the compression;
control batches and aborted transactions left out; a batch cut short left for later; old
formats and corrupt records refused."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.errors import BrokerError
from connector.kafka.batches import ByteRows, encode_batches
from connector.kafka.records import FetchedRecords, read_batches
from tests.support.budget import examples
from tests.support.record_batches import SentRecord, build_batch, control_record

CODECS = ["none", "gzip", "snappy", "snappy-java", "lz4", "zstd"]

_maybe_bytes = st.none() | st.binary(max_size=40)
_headers = st.lists(st.tuples(st.binary(min_size=1, max_size=5), _maybe_bytes), max_size=3)
_record = st.tuples(_maybe_bytes, _maybe_bytes, _headers, st.integers(-(10**7), 10**7))


def _expected(
    batches: list[tuple[int, int, list[SentRecord]]], fetch_offset: int
) -> list[tuple[int, int, bytes | None, bytes | None, list[tuple[str, bytes | None]] | None]]:
    out = []
    for base_offset, base_ts, records in batches:
        for r in records:
            offset = base_offset + r.offset_delta
            if offset >= fetch_offset:
                headers = [(k.decode(errors="replace"), v) for k, v in r.headers] or None
                out.append((offset, base_ts + r.timestamp_delta, r.key, r.value, headers))
    return out


def _got(
    records: FetchedRecords,
) -> list[tuple[int, int, bytes | None, bytes | None, list[tuple[str, bytes | None]] | None]]:
    keys, values = records.keys(), records.values()
    out = []
    for i in range(len(records)):
        one = records.record(i)
        assert (one.key(), one.value(), one.offset()) == (keys[i], values[i], records.offsets[i])
        assert one.timestamp() == (1, int(records.timestamps[i]))
        assert (one.topic(), one.partition()) == ("t", 3)
        out.append(
            (
                int(records.offsets[i]),
                int(records.timestamps[i]),
                keys[i],
                values[i],
                one.headers(),
            )
        )
    return out


@settings(max_examples=examples(300), deadline=None)  # the first call compiles
@given(
    st.lists(st.lists(_record, min_size=1, max_size=6), min_size=1, max_size=5),
    st.sampled_from(CODECS),
    st.integers(0, 40),
    st.integers(0, 3),
)
def test_every_record_from_the_fetch_offset_on_in_any_codec(
    batches: list[list[tuple[bytes | None, bytes | None, list[tuple[bytes, bytes | None]], int]]],
    codec: str,
    skip: int,
    gap: int,
) -> None:
    built, data, offset = [], b"", 100
    for i, rows in enumerate(batches):
        base_ts = 1_700_000_000_000 + 1000 * i
        # Offsets within a batch may have gaps (compaction); timestamps go either way.
        records = [SentRecord(j * (gap + 1), ts, k, v, h) for j, (k, v, h, ts) in enumerate(rows)]
        built.append((offset, base_ts, records))
        data += build_batch(offset, records, base_timestamp=base_ts, codec=codec)
        offset += records[-1].offset_delta + 1 + gap
    fetch_offset = 100 + skip
    got = read_batches("t", 3, data, fetch_offset)
    assert _got(got) == _expected(built, fetch_offset)
    assert got.next_offset == max(offset - gap, fetch_offset)
    assert not got.log_append.any()


def test_the_native_producers_batches_read_back() -> None:
    n = 5_000
    keys = ByteRows.of([str(i).encode() for i in range(n)])
    values = ByteRows.of([b"v" * (i % 50) for i in range(n)])
    encoded = encode_batches(
        np.arange(n), np.arange(n) * 3, keys, values, None, max_batch_bytes=10_000
    )
    data = bytearray(encoded.data.tobytes())
    for b in range(len(encoded)):  # the broker assigns base offsets
        struct.pack_into(">q", data, int(encoded.bounds[b]), int(encoded.first[b]))
    got = read_batches("t", 0, bytes(data), 1234)
    assert got.offsets.tolist() == list(range(1234, n))
    assert got.timestamps.tolist() == [3 * i for i in range(1234, n)]
    assert got.keys() == keys.rows()[1234:]
    assert got.values() == values.rows()[1234:]


def test_a_batch_cut_short_is_left_for_the_next_fetch() -> None:
    first = build_batch(0, [SentRecord(0, 0, b"a", b"1"), SentRecord(1, 0, b"b", b"2")])
    second = build_batch(2, [SentRecord(0, 0, b"c", b"3")])
    for cut in range(1, len(second)):
        got = read_batches("t", 0, first + second[:cut], 0)
        assert got.offsets.tolist() == [0, 1] and got.next_offset == 2
    assert read_batches("t", 0, b"", 7).next_offset == 7
    assert read_batches("t", 0, second[:10], 2).next_offset == 2


def test_log_append_time_is_the_batch_time_for_every_record() -> None:
    records = [SentRecord(0, 5, b"a", b"1"), SentRecord(1, 9, b"b", b"2")]
    got = read_batches("t", 0, build_batch(0, records, log_append_time=42), 0)
    assert got.timestamps.tolist() == [42, 42]
    assert got.log_append.all()
    assert got.record(1).timestamp() == (2, 42)


def test_control_batches_only_move_the_position() -> None:
    data = (
        build_batch(0, [SentRecord(0, 0, b"a", b"1")], producer_id=7, transactional=True)
        + build_batch(1, [control_record(abort=False)], producer_id=7, control=True)
        + build_batch(2, [SentRecord(0, 0, b"b", b"2")])
    )
    got = read_batches("t", 0, data, 0)
    assert got.offsets.tolist() == [0, 2]
    only_marker = read_batches("t", 0, data[: len(data) - len(build_batch(2, []))], 1)
    assert len(only_marker) == 0 and only_marker.next_offset == 2


def test_aborted_transactions_are_left_out_up_to_their_abort_marker() -> None:
    def txn(offset: int, pid: int, value: bytes) -> bytes:
        return build_batch(
            offset, [SentRecord(0, 0, b"k", value)], producer_id=pid, transactional=True
        )

    def marker(offset: int, pid: int, abort: bool) -> bytes:
        return build_batch(offset, [control_record(abort)], producer_id=pid, control=True)

    data = (
        txn(0, 1, b"aborted-1")
        + txn(1, 2, b"committed-2")
        + build_batch(2, [SentRecord(0, 0, b"k", b"plain")])
        + txn(3, 1, b"aborted-1b")
        + marker(4, 1, abort=True)
        + marker(5, 2, abort=False)
        + txn(6, 1, b"committed-1")  # the same producer's next transaction
        + marker(7, 1, abort=False)
        + txn(8, 3, b"aborted-3")
        + marker(9, 3, abort=True)
    )
    aborted = [(3, 8), (1, 0)]  # as a broker lists them (any order)
    got = read_batches("t", 0, data, 0, aborted)
    assert got.values() == [b"committed-2", b"plain", b"committed-1"]
    assert got.offsets.tolist() == [1, 2, 6]
    assert got.next_offset == 10
    # read_uncommitted: everything but the markers.
    assert len(read_batches("t", 0, data, 0)) == 6


def test_old_message_formats_are_refused_with_what_to_do() -> None:
    data = build_batch(0, [SentRecord(0, 0, b"a", b"1")], magic=1)
    with pytest.raises(BrokerError, match=r"old message format.*input_reader librdkafka"):
        read_batches("t", 0, data, 0)


def test_a_record_that_runs_past_its_batch_is_refused() -> None:
    data = bytearray(build_batch(5, [SentRecord(0, 0, b"a", b"12345")]))
    data[61] = 0x7E  # the record's length: 63 bytes, more than the batch holds
    with pytest.raises(BrokerError, match="t/0: the record batch at offset 5 is corrupt"):
        read_batches("t", 0, bytes(data), 0)


def test_a_batch_that_does_not_decompress_is_refused() -> None:
    data = bytearray(build_batch(5, [SentRecord(0, 0, b"a", b"1" * 100)], codec="zstd"))
    data[70:80] = b"\x00" * 10
    with pytest.raises(BrokerError, match="t/0: the zstd batch at offset 5 does not decompress"):
        read_batches("t", 0, bytes(data), 0)


def test_consecutive_fetches_concatenate_and_cut() -> None:
    a = read_batches(
        "t", 0, build_batch(0, [SentRecord(i, 0, b"k", b"%d" % i) for i in range(3)]), 0
    )
    b = read_batches("t", 0, build_batch(3, [SentRecord(i, 0, None, b"x") for i in range(2)]), 3)
    both = FetchedRecords.concat([a, b])
    assert both.offsets.tolist() == [0, 1, 2, 3, 4]
    assert both.values() == [b"0", b"1", b"2", b"x", b"x"]
    assert both.keys() == [b"k", b"k", b"k", None, None]
    assert both.next_offset == 5
    head = both.head(4)
    assert head.offsets.tolist() == [0, 1, 2, 3] and head.next_offset == 4
    assert head.record(3).value() == b"x"
    assert both.head(9) is both
