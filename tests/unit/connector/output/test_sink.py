"""The output sink: keys, partitions, headers, timestamps, serial order, resume skipping."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from connector.config import OutputHeaders
from connector.errors import SerdeError
from connector.kafka.partitioner import java_partition
from connector.output.headers import COMPACT, identity
from connector.output.sink import (
    KafkaSink,
    OutputTarget,
    Resume,
    ResumeCount,
    ResumePoint,
    decimal_bytes,
    key_bytes,
)
from engine.log import Epoch, Events
from engine.output import ABSENT, OutputChunk
from tests.support.sink_fakes import RecordingProducer, recording_sink, repr_target, source_epoch


def _sink(
    resume: Mapping[tuple[str, int], Resume] | None = None, mode: OutputHeaders = "full"
) -> tuple[KafkaSink, RecordingProducer]:
    return recording_sink({"s": repr_target("s", "out", 3)}, resume=resume, headers=mode)


def test_records_carry_key_partition_timestamp_and_headers() -> None:
    sink, producer = _sink()
    chunk = OutputChunk("s", np.array([3, 3, 5]), np.array([7, -2, 7]), {"a": np.array([1, 2, 3])})
    sink.write([chunk], source_epoch(0, 8))
    assert [r[2] for r in producer.rows] == [b"7", b"-2", b"7"]
    assert [r[3] for r in producer.rows] == [java_partition(k, 3) for k in (b"7", b"-2", b"7")]
    assert [r[4] for r in producer.rows] == [1030, 1030, 1050]
    assert producer.rows[0][5] == [
        ("restream.seq", b"3"),
        ("restream.source", b"in/1@9"),
        ("restream.job", b"j1"),
    ]
    assert producer.rows[2][5][1] == ("restream.source", b"in/1@15")
    assert sink.written == {"out": 3}


def test_key_encodings() -> None:
    assert key_bytes(12) == b"12"
    assert key_bytes(np.int64(-5)) == b"-5"
    assert key_bytes("é") == "é".encode()
    assert key_bytes(b"\x00") == b"\x00"
    for bad in (None, True, 1.5, (1, 2)):
        with pytest.raises(SerdeError, match="no Kafka key encoding"):
            key_bytes(bad)  # type: ignore[arg-type]


def test_string_keys_partition_like_the_java_client() -> None:
    sink, producer = _sink()
    keys = np.array(["alice", "bob"], dtype=object)
    sink.write(
        [OutputChunk("s", np.array([0, 1]), keys, {"a": np.array([1, 2])})], source_epoch(0, 2)
    )
    assert [r[3] for r in producer.rows] == [java_partition(b"alice", 3), java_partition(b"bob", 3)]


def test_resume_skips_up_to_and_including_the_last_written_record() -> None:
    p7 = java_partition(b"7", 3)
    sink, producer = _sink({("out", p7): ResumePoint(seq=4, count=2)})
    keys = np.array([7, 7, 7, 7, 7])
    seq = np.array([2, 4, 4, 4, 6])
    sink.write([OutputChunk("s", seq, keys, {"a": np.arange(5)})], source_epoch(0, 8))
    # seq 2 and the first two records of seq 4 were there; the third of seq 4 was not.
    assert [r[5][0][1] for r in producer.rows] == [b"4", b"6"]
    assert sink.skipped == {"out": 3}
    # Past the resume point, nothing more is skipped.
    sink.write(
        [OutputChunk("s", np.array([9]), np.array([7]), {"a": np.array([0])})], source_epoch(8, 2)
    )
    assert len(producer.rows) == 3


def test_missing_schema_fields_and_unknown_streams_are_errors() -> None:
    sink, _ = _sink()
    with pytest.raises(SerdeError, match="lacks fields"):
        sink.write(
            [OutputChunk("s", np.array([0]), np.array([1]), {"b": np.array([1])})],
            source_epoch(0, 1),
        )
    # Per record: one record lacking a field fails however many others have it.
    col = np.array([1, ABSENT, 3], dtype=object)
    with pytest.raises(
        SerdeError, match=r"1 record\(s\) lack schema field 'a', the first at seq 5"
    ):
        sink.write(
            [OutputChunk("s", np.array([4, 5, 6]), np.array([1, 1, 1]), {"a": col})],
            source_epoch(0, 7),
        )
    with pytest.raises(SerdeError, match="no output topic"):
        sink.write(
            [OutputChunk("x", np.array([0]), np.array([1]), {"a": np.array([1])})],
            source_epoch(0, 1),
        )


def test_records_skipped_on_resume_are_not_checked_for_fields() -> None:
    p7 = java_partition(b"7", 3)
    sink, producer = _sink({("out", p7): ResumePoint(seq=4, count=1)})
    # seq 4 was written before the restart (by a version that filled absent fields).
    col = np.array([ABSENT, 5], dtype=object)
    sink.write(
        [OutputChunk("s", np.array([4, 5]), np.array([7, 7]), {"a": col})], source_epoch(0, 6)
    )
    assert [r[5][0][1] for r in producer.rows] == [b"5"]


def test_source_headers_name_each_records_own_topic_partition_and_offset() -> None:
    # Two kinds from two topics, partitions up to 11, interleaved in seq order; outputs for
    # some events only, one event with two records.
    seq = np.arange(100, 112, dtype=np.int64)
    kind_of = np.array([0, 1, 0, 0, 1, 1, 0, 1, 0, 0, 1, 0])
    offsets = np.arange(12, dtype=np.int64) * 1_000_003
    partitions = np.array([0, 11, 3, 0, 2, 11, 7, 0, 3, 10, 1, 0], dtype=np.int32)
    events = {}
    for code, name in enumerate(("m", "f")):
        rows = np.flatnonzero(kind_of == code)
        events[name] = Events(
            kind=name,
            seq=seq[rows],
            ts=1000 + seq[rows],
            topic=np.full(len(rows), code, dtype=np.int16),
            partition=partitions[rows],
            offset=offsets[rows],
            columns={},
        )
    epoch = Epoch(
        index=0,
        seq_start=100,
        seq_end=112,
        ts=1000 + seq,
        kind=kind_of.astype(np.int8),
        kinds=("m", "f"),
        topics=("a.messages", "b.friendships"),
        events=events,
    )
    out_seq = np.array([101, 104, 104, 106, 109, 111])
    chunk = OutputChunk("s", out_seq, np.arange(6), {"a": np.arange(6)})
    sink, producer = _sink()
    sink.write([chunk], epoch)
    topics = ("a.messages", "b.friendships")
    expected = [
        f"{topics[kind_of[s - 100]]}/{partitions[s - 100]}@{offsets[s - 100]}".encode()
        for s in out_seq.tolist()
    ]
    assert [dict(r[5])["restream.source"] for r in producer.rows] == expected


def test_json_without_a_schema_writes_each_records_own_fields() -> None:
    from connector.serde.values import JsonRecordEncoder

    sink, producer = recording_sink({"s": OutputTarget("s", "out", 3, (), JsonRecordEncoder())})
    # One record lacks "b" (records of one stream may carry different fields).
    chunk = OutputChunk.from_records(
        "s", [0, 1], [(7, {"a": 1, "b": 0.1}), (8, {"a": np.int64(2), "c": "x"})]
    )
    sink.write([chunk], source_epoch(0, 2))
    assert [r[1] for r in producer.rows] == [b'{"a":1,"b":0.1}', b'{"a":2,"c":"x"}']


def test_each_header_mode_writes_the_same_records_with_its_own_headers() -> None:
    chunk = OutputChunk("s", np.array([3, 3, 5]), np.array([7, -2, 7]), {"a": np.array([1, 2, 3])})
    rows = {}
    for mode in ("full", "compact", "none"):
        sink, producer = _sink(mode=mode)  # type: ignore[arg-type]
        sink.write([chunk], source_epoch(0, 8))
        rows[mode] = producer.rows
        assert producer.headers_given == (mode != "none")
        assert set(sink.stage_seconds) == {"keys", "skip", "encode", "headers", "produce"}
    strip = [r[:5] for r in rows["full"]]
    assert [r[:5] for r in rows["compact"]] == strip == [r[:5] for r in rows["none"]]
    assert [identity(r[5]) for r in rows["full"]] == [
        ("j1", 3, "in/1@9"),
        ("j1", 3, "in/1@9"),
        ("j1", 5, "in/1@15"),
    ]
    assert [r[5][0][0] for r in rows["compact"]] == [COMPACT] * 3
    assert [identity(r[5]) for r in rows["compact"]] == [("j1", 3, None)] * 2 + [("j1", 5, None)]
    assert [r[5] for r in rows["none"]] == [[], [], []]


def test_a_count_resume_skips_the_first_records_of_its_partition_across_chunks() -> None:
    keys = np.array([7, 7, 7, 7, 7])
    p7 = java_partition(b"7", 3)
    sink, producer = _sink({("out", p7): ResumeCount(3)}, mode="none")
    first = OutputChunk("s", np.array([0, 1]), keys[:2], {"a": np.array([10, 11])})
    second = OutputChunk("s", np.array([2, 3, 4]), keys[2:], {"a": np.array([12, 13, 14])})
    sink.write([first], source_epoch(0, 5))
    sink.write([second], source_epoch(0, 5))
    assert [r[1] for r in producer.rows] == [b"(13,)", b"(14,)"]
    assert sink.skipped == {"out": 3}


def test_decimal_bytes_are_the_integers_text() -> None:
    values = np.array([0, -1, 7, 10**18, -(2**63), 2**63 - 1], dtype=np.int64)
    assert decimal_bytes(values) == [str(v).encode() for v in values.tolist()]
    assert decimal_bytes(np.array([], dtype=np.int64)) == []
