"""The reference social data set: layout as a producer writes it, determinism, shape, log order."""

from __future__ import annotations

import heapq
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.kafka.partitioner import java_partition
from engine.errors import EngineError, LogError
from engine.examples.social.data import (
    FRIENDSHIP_KIND,
    FRIENDSHIPS_TOPIC,
    MESSAGE_KIND,
    MESSAGES_TOPIC,
    FriendshipColumns,
    MessageColumns,
    SocialData,
    generate_social,
    merged_order,
    stable_argsort,
)
from engine.examples.social.text import EMAIL_PATTERN, TextPools
from tests.support.budget import examples
from tests.support.social import build_social

EMAIL = re.compile(EMAIL_PATTERN)
DAY = 86_400_000
START = 1_700_000_000_000


@pytest.fixture(scope="module")
def social() -> SocialData:
    return generate_social(users=5_000, events=200_000, seed=7, jitter_ms=3_000)


def _columns(data: SocialData) -> dict[str, np.ndarray]:
    m, f = data.messages, data.friendships
    return {
        **{
            f"m.{k}": getattr(m, k)
            for k in ("message_id", "ts", "sender", "recipient", "partition", "offset")
        },
        **{f"f.{k}": getattr(f, k) for k in ("ts", "user_a", "user_b", "partition", "offset")},
        "spammers": data.spammers,
    }


def test_same_seed_same_bits_other_seed_other_data() -> None:
    a = generate_social(users=1_000, events=20_000, seed=3, jitter_ms=500)
    b = generate_social(users=1_000, events=20_000, seed=3, jitter_ms=500)
    c = generate_social(users=1_000, events=20_000, seed=4, jitter_ms=500)
    for name, column in _columns(a).items():
        other = _columns(b)[name]
        assert column.dtype == other.dtype, name
        assert np.array_equal(column, other), name
    assert a.messages.content.tolist() == b.messages.content.tolist()
    assert not np.array_equal(a.messages.sender, c.messages.sender)


def test_counts_and_dtypes(social: SocialData) -> None:
    m, f = social.messages, social.friendships
    assert len(m) + len(f) == 200_000
    assert 0.05 <= len(f) / 200_000 <= 0.10
    for column in (
        m.message_id,
        m.ts,
        m.sender,
        m.recipient,
        m.offset,
        f.ts,
        f.user_a,
        f.user_b,
        f.offset,
    ):
        assert column.dtype == np.int64
    assert m.partition.dtype == np.int32 and f.partition.dtype == np.int32
    assert m.content.dtype == object and all(isinstance(c, str) for c in m.content[:1000])
    assert np.unique(m.message_id).size == len(m)


@pytest.mark.parametrize(("table", "key"), [("messages", "sender"), ("friendships", "user_a")])
def test_layout_is_what_a_java_producer_appends(social: SocialData, table: str, key: str) -> None:
    columns = getattr(social, table)
    part, offset, keys = columns.partition, columns.offset, getattr(columns, key)
    assert np.all(np.diff(part) >= 0)
    for p in range(social.partitions):
        assert np.array_equal(offset[part == p], np.arange(np.count_nonzero(part == p)))
    users, first = np.unique(keys, return_index=True)
    expected = [java_partition(str(int(u)).encode(), social.partitions) for u in users]
    assert part[first].tolist() == expected


def test_jitter_bends_timestamps_back_but_not_offsets(social: SocialData) -> None:
    m = social.messages
    backwards = 0
    for p in range(social.partitions):
        rows = m.partition == p
        ts = m.ts[rows]
        # Offsets follow true time, so message ids (numbered in true-time order) increase.
        assert np.all(np.diff(m.message_id[rows]) > 0)
        running = np.maximum.accumulate(ts)
        assert np.all(running - ts <= 3_000)
        backwards += int(np.count_nonzero(np.diff(ts) < 0))
    assert backwards > 100
    plain = generate_social(users=5_000, events=20_000, seed=7)
    for p in range(plain.partitions):
        assert np.all(np.diff(plain.messages.ts[plain.messages.partition == p]) >= 0)


def test_spammers_send_bursts_with_emails(social: SocialData) -> None:
    m = social.messages
    assert social.spammers.size == 100  # 2% of 5,000 users
    is_spam = np.isin(m.sender, social.spammers)
    assert 0.08 <= is_spam.mean() <= 0.12
    email = np.array([EMAIL.search(c) is not None for c in m.content])
    assert abs(email[is_spam].mean() - 0.5) < 0.03
    assert abs(email[~is_spam].mean() - 0.1) < 0.02
    # Bursts: most gaps between a spammer's consecutive messages are a few minutes.
    order = np.lexsort((m.ts, m.sender))
    same = np.diff(m.sender[order]) == 0
    gaps = np.diff(m.ts[order])[same & is_spam[order][1:]]
    assert np.median(gaps) < 5 * 60_000
    assert np.all(m.sender != m.recipient)


def test_activity_is_skewed_and_friends_get_most_normal_messages(social: SocialData) -> None:
    m, f = social.messages, social.friendships
    normal = ~np.isin(m.sender, social.spammers)
    counts = np.sort(np.bincount(m.sender[normal]))[::-1]
    assert counts[: len(counts) // 100].sum() > 0.15 * counts.sum()  # top 1% of senders
    # Share of normal messages sent to someone who was already a friend (true time order).
    became: dict[tuple[int, int], int] = {}
    for t, a, b in zip(f.ts.tolist(), f.user_a.tolist(), f.user_b.tolist(), strict=True):
        pair = (min(a, b), max(a, b))
        became[pair] = min(became.get(pair, t), t)
    friendly = [
        became.get((min(s, r), max(s, r)), START * 2) < t
        for t, s, r in zip(
            m.ts[normal].tolist(),
            m.sender[normal].tolist(),
            m.recipient[normal].tolist(),
            strict=True,
        )
    ]
    assert np.mean(friendly) > 0.6
    assert (f.ts < START).mean() > 0.2 and (f.ts >= START + 15 * DAY).mean() > 0.2


def test_normal_users_reply_within_hours(social: SocialData) -> None:
    m = social.messages
    order = np.argsort(m.ts, kind="stable")
    latest: dict[tuple[int, int], int] = {}
    replies = 0
    for t, s, r in zip(
        m.ts[order].tolist(), m.sender[order].tolist(), m.recipient[order].tolist(), strict=True
    ):
        if latest.get((r, s), -(10**15)) > t - 6 * 3_600_000:
            replies += 1
        latest[(s, r)] = t
    assert replies > 0.25 * len(m)


def test_summary(social: SocialData) -> None:
    summary = social.summary()
    assert sum(summary.messages_per_partition) == len(social.messages)
    assert sum(summary.friendships_per_partition) == len(social.friendships)
    assert len(summary.messages_per_partition) == social.partitions
    assert summary.spammers == 100
    assert 4_000 <= summary.users <= 5_000
    assert summary.min_ts is not None and summary.max_ts is not None
    assert START - 30 * DAY - 3_000 <= summary.min_ts < START
    assert START + 29 * DAY < summary.max_ts < START + 31 * DAY


def test_summary_of_hand_built_data_with_odd_ids() -> None:
    data = build_social(
        [(0, 5, -5, 2**40, "a"), (1, 3, 7, -5, "b"), (1, 9, 7, 7, "c")], [(2, 1, 2**40, 8)]
    )
    summary = data.summary()
    assert summary.users == 4
    assert summary.messages_per_partition == (1, 2, 0)
    assert summary.friendships_per_partition == (0, 0, 1)
    assert (summary.min_ts, summary.max_ts) == (1, 9)


def test_tiny_and_empty_data_sets() -> None:
    empty = generate_social(users=10, events=0)
    assert len(empty.messages) == 0 and len(empty.friendships) == 0
    assert empty.summary().min_ts is None
    kinds, idx = merged_order(empty)
    assert kinds.size == 0 and idx.size == 0
    tiny = generate_social(users=2, events=30, partitions=1)
    assert len(tiny.messages) + len(tiny.friendships) == 30
    assert np.all(tiny.messages.sender != tiny.messages.recipient)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"users": 1}, "users must be >= 2"),
        ({"events": -1}, "events must be >= 0"),
        ({"days": 0}, "days must be >= 1"),
        ({"jitter_ms": -5}, "jitter_ms must be >= 0"),
        ({"partitions": 0}, "partitions must be >= 1"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(EngineError, match=message):
        generate_social(**kwargs)


def test_text_pools_match_the_regex_exactly_when_meant_to() -> None:
    pools = TextPools.build(np.random.default_rng(5), 2_000)
    texts = pools.texts.tolist()
    for cls in range(4):
        chunk = texts[cls * 2_000 : (cls + 1) * 2_000]
        matches = [EMAIL.search(t) is not None for t in chunk]
        assert all(matches) if cls % 2 else not any(matches)
        assert len(set(chunk)) > 1_000
    assert any("@" in t for t in texts[:2_000])  # decoys: "@" without an address


@settings(max_examples=examples(100), deadline=None)
@given(st.lists(st.integers(min_value=-(2**40), max_value=2**40), max_size=50))
def test_stable_argsort(keys: list[int]) -> None:
    got = stable_argsort(np.array(keys, dtype=np.int64))
    assert got.tolist() == sorted(range(len(keys)), key=lambda i: keys[i])


def test_stable_argsort_wide_keys() -> None:
    keys = [2**62, -(2**62), 5, 5, -(2**62)]
    assert stable_argsort(np.array(keys, dtype=np.int64)).tolist() == [1, 4, 2, 3, 0]


def _heap_merge(data: SocialData) -> list[tuple[int, int]]:
    streams = []
    for topic, kind, table in (
        (FRIENDSHIPS_TOPIC, FRIENDSHIP_KIND, data.friendships),
        (MESSAGES_TOPIC, MESSAGE_KIND, data.messages),
    ):
        for p in range(data.partitions):
            rows = np.flatnonzero(table.partition == p).tolist()
            streams.append(
                [(int(table.ts[i]), topic, p, int(table.offset[i]), kind, i) for i in rows]
            )
    return [(kind, i) for *_, kind, i in heapq.merge(*streams)]


_TS = st.integers(min_value=0, max_value=12)


@settings(max_examples=examples(300), deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), _TS), max_size=25),
    st.lists(st.tuples(st.integers(0, 2), _TS), max_size=25),
)
def test_merged_order_is_the_k_way_merge(
    messages: list[tuple[int, int]], friendships: list[tuple[int, int]]
) -> None:
    data = build_social(
        [(p, t, 1, 2, "x") for p, t in messages],
        [(p, t, 1, 2) for p, t in friendships],
        partitions=3,
    )
    kinds, idx = merged_order(data)
    assert kinds.dtype == np.int8 and idx.dtype == np.int64
    assert list(zip(kinds.tolist(), idx.tolist(), strict=True)) == _heap_merge(data)


def test_merged_order_on_generated_data_with_jitter() -> None:
    data = generate_social(users=300, events=3_000, seed=1, jitter_ms=60_000)
    kinds, idx = merged_order(data)
    assert list(zip(kinds.tolist(), idx.tolist(), strict=True)) == _heap_merge(data)


def test_merged_order_rejects_rows_out_of_offset_order() -> None:
    data = build_social([(0, 5, 1, 2, "a"), (0, 6, 1, 2, "b")], [])
    m = data.messages
    swapped = MessageColumns(
        m.message_id, m.ts, m.sender, m.recipient, m.content, m.partition, m.offset[::-1].copy()
    )
    bad = SocialData(swapped, data.friendships, 2, 1, 1, data.spammers)
    with pytest.raises(LogError, match="ordered by \\(partition, offset\\)"):
        merged_order(bad)


def test_columns_of_different_lengths_are_rejected() -> None:
    one = np.zeros(1, dtype=np.int64)
    with pytest.raises(LogError, match="different lengths"):
        FriendshipColumns(one, one, np.zeros(2, np.int64), one.astype(np.int32), one)
