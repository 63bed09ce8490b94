"""The reference backtest: social spam rules, written with the public pipeline API.

For each Message m from sender s to recipient r at time t ("so far" = s's messages before m in
the log, plus m itself; integer arithmetic only):

* friends(a, b): a Friendship {a, b} (either order) comes before that position in the log;
* rule 1 (bit 1): of s's messages so far, to friends and to non-friends (each classified at
  its own position): fires if both together > 5 and to_nonfriends > 2 x to_friends;
* rule 2 (bit 2): of s's messages so far to non-friends with time in (t - 120 min, t]:
  more than 7, with at least 5 distinct recipients;
* rule 3 (bit 4): of s's messages so far with time in (t - 30 days, t]: 2 x (those whose
  content matches ``\\S+@\\S+\\.\\S+``) > (all of them);
* rule 4 (bit 8): if the smallest time among s's messages so far is <= t - 7 days:
  5 x (those in (t - 1 day, t]) > (those in (t - 7 days, t]);
* rule 5 (bit 16): a message a->b at time u is a response if the greatest time among b's
  messages to a before it in the log is > u - 7 days; of s's messages so far:
  10 x (responses) < (all of them);
* ``rules`` = OR of the bits, ``score`` = 10 x (rules fired), ``spam`` = score >= 20,
  ``sender_flagged`` = how many of s's messages so far have spam true.

One ``SpamScore`` is emitted per Message, keyed by the sender.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from engine.examples.social.text import EMAIL_PATTERN, email_flags
from engine.keys import Unordered
from engine.pipeline import Pipeline, Record
from engine.windows import Sliding

__all__ = ["EMAIL", "SCORE_FIELDS", "build_spam_pipeline", "has_email", "has_email_batch"]

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
#: Lookup default for "no message from b to a yet": below any real time minus 7 days.
NEVER = -(2**62)

EMAIL = re.compile(EMAIL_PATTERN)

#: The fields of a SpamScore record (the pipeline's output), in the order of
#: ``schemas/social/SpamScore.avsc``; the references and the benches use the same.
SCORE_FIELDS = (
    "message_id",
    "ts",
    "sender",
    "recipient",
    "rules",
    "score",
    "spam",
    "sender_flagged",
)


def has_email(content: str) -> bool:
    """Whether ``content`` matches the e-mail regex of rule 3."""
    return EMAIL.search(content) is not None


def has_email_batch(contents: np.ndarray) -> np.ndarray:
    """:func:`has_email` over an object array of str, vectorised (no regex per text)."""
    return email_flags(contents)


def _rules(c: Mapping[str, Any]) -> tuple[Any, Any]:
    """Rule bits and score, for scalars (Python ints) and arrays (numpy) alike."""
    t = c["ts"]
    friends, nonfriends = c["to_friends"], c["to_nonfriends"]
    r1 = ((friends + nonfriends) > 5) & (nonfriends > 2 * friends)
    r2 = (c["nonfriend_2h"] > 7) & (c["nonfriend_rcpt_2h"] >= 5)
    r3 = 2 * c["email_30d"] > c["sent_30d"]
    r4 = (c["first_ts"] <= t - 7 * DAY) & (5 * c["sent_1d"] > c["sent_7d"])
    r5 = 10 * c["responses"] < c["sent"]
    return r1, (r2, r3, r4, r5)


def _score_scalar(e: Any, _view: Any) -> tuple[int, int]:
    c = {name: getattr(e, name) for name in _SCORE_INPUTS}
    c["ts"] = e.ts
    r1, (r2, r3, r4, r5) = _rules(c)
    fired = [bool(r1), bool(r2), bool(r3), bool(r4), bool(r5)]
    rules = sum(bit for bit, on in zip((1, 2, 4, 8, 16), fired, strict=True) if on)
    return rules, 10 * sum(fired)


def _score_batch(c: Mapping[str, np.ndarray]) -> np.ndarray:
    r1, (r2, r3, r4, r5) = _rules(c)
    rules = (r1.astype(np.int64) | (r2 << 1) | (r3 << 2) | (r4 << 3) | (r5 << 4)).astype(np.int64)
    fired = (r1.astype(np.int64) + r2 + r3 + r4 + r5).astype(np.int64)
    return np.stack([rules, 10 * fired], axis=1)


_SCORE_INPUTS = (
    "to_friends",
    "to_nonfriends",
    "nonfriend_2h",
    "nonfriend_rcpt_2h",
    "email_30d",
    "sent_30d",
    "first_ts",
    "sent_1d",
    "sent_7d",
    "responses",
    "sent",
)


def build_spam_pipeline(
    *, messages: str = "message", friendships: str = "friendship", output: str = "scores"
) -> Pipeline:
    """The spam backtest over event kinds ``messages`` and ``friendships``."""
    p = Pipeline("social-spam", description="Five spam rules over direct messages")
    m = messages

    links = p.count("friend_links", on=friendships, key=Unordered("user_a", "user_b"))
    link_count = p.lookup("link_count", on=m, table=links, key=Unordered("sender", "recipient"))
    to_friend = p.derive(
        "to_friend",
        on=m,
        inputs=[link_count],
        dtype="bool",
        fn=lambda e, _v: e.link_count > 0,
        batch_fn=lambda c: c["link_count"] > 0,
    )
    # From link_count, not to_friend, so that both land in the same phase.
    to_nonfriend = p.derive(
        "to_nonfriend",
        on=m,
        inputs=[link_count],
        dtype="bool",
        fn=lambda e, _v: e.link_count == 0,
        batch_fn=lambda c: c["link_count"] == 0,
    )
    email = p.derive(
        "has_email",
        on=m,
        dtype="bool",
        fn=lambda e, _v: has_email(e.content),
        batch_fn=lambda c: has_email_batch(c["content"]),
    )

    # Rule 5: was m an answer to a message from its recipient in the last 7 days?
    last_to = p.max("last_sent_to", on=m, key=("sender", "recipient"), value="ts")
    last_reply = p.lookup(
        "last_from_recipient",
        on=m,
        table=last_to,
        key=("recipient", "sender"),
        before=True,
        default=NEVER,
    )
    response = p.derive(
        "is_response",
        on=m,
        inputs=[last_reply],
        dtype="bool",
        fn=lambda e, _v: e.last_from_recipient > e.ts - 7 * DAY,
        batch_fn=lambda c: c["last_from_recipient"] > c["ts"] - 7 * DAY,
    )

    tables = {
        "to_friends": p.count("friend_msgs", on=m, key="sender", where=to_friend),
        "to_nonfriends": p.count("nonfriend_msgs", on=m, key="sender", where=to_nonfriend),
        "nonfriend_2h": p.count(
            "nonfriend_msgs_2h", on=m, key="sender", where=to_nonfriend, window=Sliding(2 * HOUR)
        ),
        "nonfriend_rcpt_2h": p.distinct(
            "nonfriend_rcpts_2h",
            on=m,
            key="sender",
            value="recipient",
            where=to_nonfriend,
            window=Sliding(2 * HOUR),
        ),
        "email_30d": p.count(
            "email_msgs_30d", on=m, key="sender", where=email, window=Sliding(30 * DAY)
        ),
        "sent_30d": p.count("msgs_30d", on=m, key="sender", window=Sliding(30 * DAY)),
        "first_ts": p.min("first_msg_ts", on=m, key="sender", value="ts"),
        "sent_1d": p.count("msgs_1d", on=m, key="sender", window=Sliding(DAY)),
        "sent_7d": p.count("msgs_7d", on=m, key="sender", window=Sliding(7 * DAY)),
        "responses": p.count("response_msgs", on=m, key="sender", where=response),
        "sent": p.count("msgs", on=m, key="sender"),
    }
    looked = [p.lookup(name, on=m, table=table, key="sender") for name, table in tables.items()]

    score = p.derive(
        "rules_score", on=m, inputs=looked, dtype="object", fn=_score_scalar, batch_fn=_score_batch
    )
    spam = p.derive(
        "spam",
        on=m,
        inputs=[score],
        dtype="bool",
        fn=lambda e, _v: e.rules_score[1] >= 20,
        batch_fn=lambda c: c["rules_score"][:, 1] >= 20,
    )
    flagged_table = p.count("flagged_msgs", on=m, key="sender", where=spam)
    flagged = p.lookup("sender_flagged", on=m, table=flagged_table, key="sender")

    out = p.output(
        output,
        key="sender",
        fields=SCORE_FIELDS,
    )
    p.emit(
        "spam_score",
        on=m,
        output=out,
        inputs=[score, spam, flagged],
        fn=lambda e, _v: [
            Record(
                e.sender,
                {
                    "message_id": e.message_id,
                    "ts": e.ts,
                    "sender": e.sender,
                    "recipient": e.recipient,
                    "rules": e.rules_score[0],
                    "score": e.rules_score[1],
                    "spam": e.spam,
                    "sender_flagged": e.sender_flagged,
                },
            )
        ],
        batch_fn=lambda c: {
            "message_id": c["message_id"],
            "ts": c["ts"],
            "sender": c["sender"],
            "recipient": c["recipient"],
            "rules": c["rules_score"][:, 0].astype(np.int32),
            "score": c["rules_score"][:, 1].astype(np.int32),
            "spam": c["spam"],
            "sender_flagged": c["sender_flagged"],
        },
    )
    return p
