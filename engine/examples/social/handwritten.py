"""The spam backtest as a user would write it by hand: one event at a time, dicts and lists.

This is the plain single-threaded baseline that faster implementations are measured against
(ReStream's "single-threaded implementation"), and an independent oracle for the spam rules of
issue 3. It merges the partitions with :func:`heapq.merge`, which is literally DESIGN.md §1's
definition of the log (always take the head with the smallest (ts, topic, partition, offset)),
and keeps each sender's message times in sorted lists so that windows by event time stay exact
when timestamps go backwards: a deque pruned by time would drop messages that a later, earlier-
stamped message still needs, and would count messages stamped after it.
"""

from __future__ import annotations

import heapq
import re
from bisect import bisect_right, insort
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import numpy.typing as npt

from engine.examples.social.data import FRIENDSHIPS_TOPIC, MESSAGES_TOPIC, SocialData
from engine.examples.social.spam import SCORE_FIELDS
from engine.examples.social.text import EMAIL_PATTERN

__all__ = ["ScoreColumns", "spam_scores_handwritten"]

_MINUTE = 60_000
_DAY = 24 * 60 * _MINUTE
_EMAIL = re.compile(EMAIL_PATTERN)

Record = dict[str, int | bool]
_Event = tuple[int, str, int, int, int]


@dataclass(frozen=True, slots=True, eq=False)
class ScoreColumns:
    """One SpamScore per message, in log order; fields as in ``schemas/social/SpamScore.avsc``."""

    message_id: npt.NDArray[np.int64]
    ts: npt.NDArray[np.int64]
    sender: npt.NDArray[np.int64]
    recipient: npt.NDArray[np.int64]
    rules: npt.NDArray[np.int32]
    score: npt.NDArray[np.int32]
    spam: npt.NDArray[np.bool_]
    sender_flagged: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.message_id.shape[0])

    def records(self) -> list[Record]:
        """The SpamScore records as dicts of Python ints and bools, in log order."""
        columns = [getattr(self, name).tolist() for name in SCORE_FIELDS]
        return [dict(zip(SCORE_FIELDS, row, strict=True)) for row in zip(*columns, strict=True)]


class _Sender:
    """What the rules remember about one sender's messages so far."""

    __slots__ = (
        "email_times",
        "flagged",
        "min_time",
        "nonfriend_recipients",
        "nonfriend_times",
        "responses",
        "sent",
        "times",
        "to_nonfriends",
    )

    def __init__(self, t: int) -> None:
        self.sent = 0
        self.to_nonfriends = 0
        self.responses = 0
        self.flagged = 0
        self.min_time = t
        self.times: list[int] = []  # sorted
        self.email_times: list[int] = []  # sorted
        self.nonfriend_times: list[int] = []  # sorted; recipients kept in the same order
        self.nonfriend_recipients: list[int] = []


def _streams(
    topic: str, ts: list[int], partition: list[int], offset: list[int]
) -> list[Iterator[_Event]]:
    """One iterator of (ts, topic, partition, offset, row) per partition, in offset order."""
    starts = [i for i in range(len(ts)) if i == 0 or partition[i] != partition[i - 1]]
    bounds = [*starts, len(ts)]
    return [
        ((ts[row], topic, partition[row], offset[row], row) for row in range(lo, hi))
        for lo, hi in pairwise(bounds)
    ]


def spam_scores_handwritten(data: SocialData) -> ScoreColumns:
    """Score every message with the five spam rules of issue 3, one event at a time."""
    m, f = data.messages, data.friendships
    msg_id, msg_ts = m.message_id.tolist(), m.ts.tolist()
    msg_sender, msg_recipient, content = m.sender.tolist(), m.recipient.tolist(), m.content.tolist()
    user_a, user_b = f.user_a.tolist(), f.user_b.tolist()
    log = heapq.merge(
        *_streams(FRIENDSHIPS_TOPIC, f.ts.tolist(), f.partition.tolist(), f.offset.tolist()),
        *_streams(MESSAGES_TOPIC, msg_ts, m.partition.tolist(), m.offset.tolist()),
    )

    friends: set[tuple[int, int]] = set()
    senders: dict[int, _Sender] = {}
    latest_to: dict[tuple[int, int], int] = {}  # (a, b) -> greatest time of a's messages to b
    out_id: list[int] = []
    out_ts: list[int] = []
    out_sender: list[int] = []
    out_recipient: list[int] = []
    out_rules: list[int] = []
    out_score: list[int] = []
    out_spam: list[bool] = []
    out_flagged: list[int] = []

    for _, topic, _, _, row in log:
        if topic == FRIENDSHIPS_TOPIC:
            a, b = user_a[row], user_b[row]
            friends.add((a, b) if a <= b else (b, a))
            continue
        s, r, t = msg_sender[row], msg_recipient[row], msg_ts[row]
        me = senders.get(s)
        if me is None:
            me = senders[s] = _Sender(t)
        me.sent += 1
        me.min_time = min(me.min_time, t)
        times = me.times
        insort(times, t)
        if ((s, r) if s <= r else (r, s)) not in friends:
            me.to_nonfriends += 1
            at = bisect_right(me.nonfriend_times, t)
            me.nonfriend_times.insert(at, t)
            me.nonfriend_recipients.insert(at, r)
        text = content[row]
        # Every match holds an "@": the cheap test first spares most texts the regex.
        if "@" in text and _EMAIL.search(text) is not None:
            insort(me.email_times, t)
        replied_to = latest_to.get((r, s))
        if replied_to is not None and replied_to > t - 7 * _DAY:
            me.responses += 1
        if latest_to.get((s, r), t) <= t:
            latest_to[(s, r)] = t

        rules = 0
        if me.sent > 5 and me.to_nonfriends > 2 * (me.sent - me.to_nonfriends):
            rules |= 1
        nonfriend_times = me.nonfriend_times
        lo = bisect_right(nonfriend_times, t - 120 * _MINUTE)
        hi = bisect_right(nonfriend_times, t)
        if hi - lo > 7 and len(set(me.nonfriend_recipients[lo:hi])) >= 5:
            rules |= 2
        # Windows (t - W, t] over sorted times: [bisect_right(t - W), bisect_right(t)).
        upto = bisect_right(times, t)
        month = upto - bisect_right(times, t - 30 * _DAY)
        email_times = me.email_times
        emails = bisect_right(email_times, t) - bisect_right(email_times, t - 30 * _DAY)
        if 2 * emails > month:
            rules |= 4
        if me.min_time <= t - 7 * _DAY:
            day = upto - bisect_right(times, t - _DAY)
            week = upto - bisect_right(times, t - 7 * _DAY)
            if 5 * day > week:
                rules |= 8
        if 10 * me.responses < me.sent:
            rules |= 16
        score = 10 * bin(rules).count("1")
        spam = score >= 20
        me.flagged += spam

        out_id.append(msg_id[row])
        out_ts.append(t)
        out_sender.append(s)
        out_recipient.append(r)
        out_rules.append(rules)
        out_score.append(score)
        out_spam.append(spam)
        out_flagged.append(me.flagged)

    return ScoreColumns(
        message_id=np.array(out_id, dtype=np.int64),
        ts=np.array(out_ts, dtype=np.int64),
        sender=np.array(out_sender, dtype=np.int64),
        recipient=np.array(out_recipient, dtype=np.int64),
        rules=np.array(out_rules, dtype=np.int32),
        score=np.array(out_score, dtype=np.int32),
        spam=np.array(out_spam, dtype=bool),
        sender_flagged=np.array(out_flagged, dtype=np.int64),
    )
