"""Output headers in each mode: the compact header's bytes, and reading any mode back."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.output.headers import COMPACT, compact_values, identity, parse_compact
from tests.support.budget import examples

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
JOB_IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True)


def test_the_compact_value_is_the_seq_in_eight_big_endian_bytes_then_the_job() -> None:
    values = compact_values(np.array([0, 1, 256, -1], dtype=np.int64), b"job-7")
    assert values == [
        b"\x00" * 8 + b"job-7",
        b"\x00" * 7 + b"\x01job-7",
        b"\x00" * 6 + b"\x01\x00job-7",
        b"\xff" * 8 + b"job-7",
    ]
    assert all(type(v) is bytes for v in values)
    assert compact_values(np.array([], dtype=np.int64), b"j") == []


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(INT64, max_size=50), JOB_IDS)
def test_compact_values_round_trip(seqs: list[int], job: str) -> None:
    values = compact_values(np.array(seqs, dtype=np.int64), job.encode())
    assert [parse_compact(v) for v in values] == [(s, job) for s in seqs]
    assert [identity([(COMPACT, v)]) for v in values] == [(job, s, None) for s in seqs]


def test_what_each_mode_says_about_a_record() -> None:
    full = [
        ("restream.seq", b"42"),
        ("restream.source", b"in/1@9"),
        ("restream.job", b"j1"),
    ]
    assert identity(full) == ("j1", 42, "in/1@9")
    assert identity({k: v for k, v in full}) == ("j1", 42, "in/1@9")
    assert identity([(COMPACT, compact_values(np.array([42]), b"j1")[0])]) == ("j1", 42, None)
    assert identity(None) == identity([]) == (None, None, None)
    # Not a compact value (too short to hold a seq and a job): nothing is made of it.
    assert parse_compact(b"\x00" * 8) is None
    assert identity([(COMPACT, b"short")]) == (None, None, None)
