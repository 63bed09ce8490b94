"""The two reference spam backtests: hand-checked rule outcomes, and agreement record for record."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import LogError
from engine.examples.social.data import SocialData, generate_social
from engine.examples.social.handwritten import ScoreColumns, spam_scores_handwritten
from engine.examples.social.spam import SCORE_FIELDS
from engine.examples.social.text import EMAIL_PATTERN, email_flags
from engine.examples.social.wholelog import spam_scores_wholelog
from tests.support.budget import examples, size
from tests.support.social import FriendshipRow, MessageRow, build_social

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
T0 = 1_700_000_000_000
SCHEMA = Path(__file__).resolve().parents[4] / "schemas" / "social" / "SpamScore.avsc"


def both(data: SocialData) -> ScoreColumns:
    """Score with both implementations, check they agree record for record, return one."""
    hand = spam_scores_handwritten(data)
    whole = spam_scores_wholelog(data)
    assert whole.records() == hand.records()
    for name in SCORE_FIELDS:
        assert getattr(whole, name).dtype == getattr(hand, name).dtype, name
    return hand


def rules_of(scores: ScoreColumns) -> list[int]:
    return [int(r) for r in scores.rules]


def test_records_carry_the_spam_score_schema_fields() -> None:
    fields = json.loads(SCHEMA.read_text())["fields"]
    data = build_social([(0, T0, 1, 2, "hi")], [])
    (record,) = both(data).records()
    assert list(record) == [f["name"] for f in fields]
    kinds = {"long": int, "int": int, "boolean": bool}
    for f in fields:
        kind = f["type"] if isinstance(f["type"], str) else f["type"]["type"]
        assert type(record[f["name"]]) is kinds[kind], f["name"]
    assert record == {
        "message_id": 1,
        "ts": T0,
        "sender": 1,
        "recipient": 2,
        "rules": 16,
        "score": 10,
        "spam": False,
        "sender_flagged": 0,
    }


def test_spam_burst_fires_rules_in_turn() -> None:
    burst = [(0, T0 + k * MINUTE, 1, 10 + k, f"write to win{k}@prize.biz") for k in range(8)]
    scores = both(build_social(burst, []))
    assert rules_of(scores) == [4 | 16] * 5 + [1 | 4 | 16] * 2 + [1 | 2 | 4 | 16]
    assert scores.score.tolist() == [20] * 5 + [30] * 2 + [40]
    assert scores.spam.all()
    assert scores.sender_flagged.tolist() == list(range(1, 9))


def test_rule2_needs_five_distinct_recipients() -> None:
    repeats = [(0, T0 + k * MINUTE, 1, 10 + k % 4, "hello") for k in range(12)]
    assert not (both(build_social(repeats, [])).rules & 2).any()
    five = [(0, T0 + k * MINUTE, 1, 10 + k % 5, "hello") for k in range(9)]
    assert ((both(build_social(five, [])).rules & 2) > 0).tolist() == [False] * 7 + [True] * 2


def test_rule2_counts_distinct_recipients_over_the_whole_window() -> None:
    # The last eight messages all go to one user; the earlier five in the window make it spam.
    recipients = [1, 2, 3, 4, 5] + [6] * 10
    messages = [(0, T0 + k * MINUTE, 9, r, "hello") for k, r in enumerate(recipients)]
    bits = both(build_social(messages, [])).rules & 2
    assert (bits > 0).tolist() == [False] * 7 + [True] * 8


def test_friendship_counts_from_its_own_position_onwards() -> None:
    before = [(0, T0 + k * MINUTE, 1, 2, "hey") for k in range(5)]
    after = [(0, T0 + (20 + k) * MINUTE, 1, 2, "hey") for k in range(3)]
    scores = both(build_social(before + after, [(1, T0 + 10 * MINUTE, 2, 1)]))
    assert rules_of(scores) == [16] * 5 + [17, 17, 16]
    assert scores.sender_flagged.tolist() == [0] * 5 + [1, 2, 2]


def test_friendship_at_the_same_timestamp_comes_first() -> None:
    # Equal timestamps: the log orders social.friendships before social.messages.
    messages = [(0, T0, 1, 2, "a")] * 2 + [(0, T0, 1, 3, "b")] * 5
    plain = both(build_social(messages, []))
    friendly = both(build_social(messages, [(1, T0, 1, 2)]))
    assert rules_of(plain)[5:] == [17, 17]
    assert rules_of(friendly)[5:] == [16, 17]


def test_responses_and_their_seven_day_bound() -> None:
    messages: list[MessageRow] = [
        (1, T0 + HOUR, 2, 1, "hello"),
        (0, T0 + 2 * HOUR, 1, 2, "hi back"),
        (0, T0 + 3 * HOUR, 1, 3, "hey"),
        (2, T0 + 3 * HOUR + 7 * DAY, 3, 1, "exactly a week later: not a response"),
        (2, T0 + 2 * HOUR + 7 * DAY - 1, 2, 1, "a millisecond inside the week: a response"),
    ]
    scores = both(build_social(messages, [(0, T0, 1, 2)]))
    # The last one also fires rule 4: its sender's first message is a week old.
    assert rules_of(scores) == [16, 0, 0, 16, 8]


def test_self_messages_answer_themselves_later() -> None:
    messages = [(0, T0, 1, 1, "note to self"), (0, T0 + MINUTE, 1, 1, "another")]
    assert rules_of(both(build_social(messages, []))) == [16, 0]


def test_rule4_week_old_sender_with_a_busy_day() -> None:
    messages: list[MessageRow] = [(0, T0, 1, 2, "first")]
    messages += [(0, T0 + 8 * DAY + k * HOUR, 1, 2, "again") for k in range(5)]
    messages += [(1, T0, 5, 6, "x"), (1, T0 + 7 * DAY, 5, 6, "y"), (1, T0 + 7 * DAY - 1, 7, 6, "z")]
    messages += [(2, T0, 7, 6, "early")]
    scores = both(build_social(messages, []))
    by_sender: dict[int, list[int]] = {}
    for s, r in zip(scores.sender.tolist(), scores.rules.tolist(), strict=True):
        by_sender.setdefault(s, []).append(r)
    assert by_sender[1] == [16] + [24] * 4 + [25]
    assert by_sender[5] == [16, 24]
    assert by_sender[7] == [16, 16]  # 7 days minus 1 ms: not yet a week old


def test_backwards_timestamps_use_event_time_windows() -> None:
    times = [100, 101, 102, 103, 104, 105, 106, 30, 107]
    messages = [(0, T0 + m * MINUTE, 1, 10 + k, "buy") for k, m in enumerate(times)]
    scores = both(build_social(messages, []))
    assert ((scores.rules & 2) > 0).tolist() == [False] * 8 + [True]
    # Rule 3 over (t - 30 days, t]: the late message sees only itself, not the later-stamped ones.
    late = [(0, T0 + DAY, 1, 2, "a@b.cd"), (0, T0 + 2 * DAY, 1, 2, "a@b.cd"), (0, T0, 1, 2, "no")]
    assert rules_of(both(build_social(late, [])))[2] & 4 == 0


def test_one_hot_sender_with_jittered_clock() -> None:
    rng = np.random.default_rng(11)
    n = 600
    true = np.sort(rng.integers(0, 20 * DAY, n))
    ts = (T0 + true - rng.integers(0, 3 * HOUR, n)).tolist()
    contents = ["mail x@y.zz", "hi", "@you", "ok"]
    messages = [
        (
            int(rng.integers(0, 3)),
            t,
            42,
            int(rng.integers(0, 30)),
            contents[int(rng.integers(0, 4))],
        )
        for t in ts
    ]
    replies = [(0, t + MINUTE, int(r), 42, "re") for _, t, _, r, _ in messages[::7]]
    friendships = [
        (1, T0 + int(rng.integers(0, 20 * DAY)), 42, int(rng.integers(0, 30))) for _ in range(15)
    ]
    both(build_social(messages + replies, friendships))


def test_huge_time_range_and_odd_user_ids() -> None:
    big = 2**61
    messages = [
        (0, -big, -5, 2**40, "a@b.cc"),
        (0, big, -5, 7, "x"),
        (1, 0, 2**40, -5, "y"),
        (1, big - DAY, -5, 7, "z"),
        (0, big + 1, -5, -5, "w"),
    ] * 3
    both(build_social(messages, [(0, 0, -5, 7)]))
    with pytest.raises(LogError, match="2\\*\\*62"):
        spam_scores_wholelog(build_social([(0, 2**63 - 1, 1, 2, "x")], []))


def test_user_ids_too_wide_to_pack_take_the_general_sort() -> None:
    rng = np.random.default_rng(3)
    ids = [2**31 - 1, 2**31 - 2, 0, 5]

    def pick() -> int:
        return ids[int(rng.integers(0, 4))]

    messages = [
        (
            int(rng.integers(0, 2)),
            T0 + int(rng.integers(0, 3 * DAY)),
            pick(),
            pick(),
            "x@y.zz" if rng.random() < 0.3 else "hi",
        )
        for _ in range(200)
    ]
    friendships = [(0, T0 + int(rng.integers(0, 3 * DAY)), pick(), pick()) for _ in range(6)]
    both(build_social(messages, friendships))


def test_generated_data_agree_exactly() -> None:
    scores = both(generate_social(users=3_000, events=60_000, seed=5))
    assert 0.05 < scores.spam.mean() < 0.5


@pytest.mark.slow
def test_generated_data_with_jitter_agree_exactly() -> None:
    data = generate_social(events=size(200_000, quick=50_000), jitter_ms=2_000)
    scores = both(data)
    is_spammer = np.isin(scores.sender, data.spammers)
    assert scores.spam[is_spammer].mean() > 0.8
    assert scores.spam[~is_spammer].mean() < 0.2


_DELTAS = st.one_of(
    st.sampled_from(
        [
            0,
            0,
            1,
            -1,
            MINUTE,
            -MINUTE,
            2 * HOUR,
            2 * HOUR + 1,
            2 * HOUR - 1,
            -2 * HOUR,
            DAY,
            DAY + 1,
            -DAY,
            7 * DAY,
            7 * DAY + 1,
            -7 * DAY,
            30 * DAY,
            -30 * DAY,
            30 * DAY + 1,
        ]
    ),
    st.integers(min_value=-2 * DAY, max_value=2 * DAY),
)
_USERS = st.sampled_from([0, 1, 2, 3, 4])
_TEXTS = st.sampled_from(
    [
        "hi",
        "a@b.c",
        "mail me x@y.org now",
        "@me.x",
        "x@y",
        "a@b.",
        "ok",
        "z@w.q\u3000",
        "a@b\u2003.c",
    ]
)


@st.composite
def social_logs(draw: st.DrawFn) -> SocialData:
    partitions = draw(st.integers(1, 3))
    clock = [T0] * partitions
    messages: list[MessageRow] = []
    friendships: list[FriendshipRow] = []
    hot = draw(st.booleans())
    for _ in range(draw(st.integers(0, 45))):
        p = draw(st.integers(0, partitions - 1))
        clock[p] += draw(_DELTAS)
        if draw(st.integers(0, 9)) == 0:
            friendships.append((p, clock[p], draw(_USERS), draw(_USERS)))
        else:
            sender = 1 if hot else draw(_USERS)
            messages.append((p, clock[p], sender, draw(_USERS), draw(_TEXTS)))
    return build_social(messages, friendships, partitions)


@settings(max_examples=examples(250), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(social_logs())
def test_handwritten_equals_wholelog_on_random_logs(data: SocialData) -> None:
    both(data)


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.text(alphabet="ab.@ \t\n\x1c\x1e\u3000\u2003\u00e9x", max_size=60), max_size=12))
def test_email_flags_equal_the_regex(texts: list[str]) -> None:
    pattern = re.compile(EMAIL_PATTERN)
    column = np.empty(len(texts), dtype=object)
    column[:] = texts
    assert email_flags(column).tolist() == [pattern.search(t) is not None for t in texts]


def test_email_flags_long_tokens_and_every_separator_taken() -> None:
    pattern = re.compile(EMAIL_PATTERN)
    texts = [
        "a@" + "x" * 300 + ".c",
        "a@" + "x" * 300 + ". c",
        "a@" + "." * 50,
        "\x1e\x1f\x1d\x1c\n then a@b.c",
        "x" * 39 + "@y.z",
        "ab@" + "c" * 38 + ".d",
    ]
    column = np.empty(len(texts), dtype=object)
    column[:] = texts
    assert email_flags(column).tolist() == [pattern.search(t) is not None for t in texts]


def test_whitespace_ends_at_ideographic_space() -> None:
    assert not any(chr(c).isspace() for c in range(0x3001, 0x110000))
