"""The spam backtest as a batch job over the whole log at once, numpy only.

No Python loop runs per event: every rule is a handful of sorts, scans and searches over whole
columns (loops run over a few passes, or over how far timestamps went backwards). Each piece is
exact, with no approximation anywhere:

* Friends and responses: one sort of friendship and message rows by (unordered pair, log
  position). A message is to a friend iff a friendship row of its pair sorts before it, and a
  response iff the running max of the other direction's times there is > u - 7 days.
* Per-sender state: a stable sort by (sender, log position) groups each sender's messages in
  log order; "so far" counts are segmented prefix sums.
* Windows (t - W, t] among the sender's messages so far: with M the running max of the sender's
  times, the messages with M <= x form a prefix of the group, found by ``searchsorted``; the few
  later messages stamped below x (timestamps that went backwards) are added by a short walk from
  there, vectorised across all messages.
* Distinct recipients in the 2-hour window: checked only where the window holds more than 7
  non-friend messages, on the last few of them first, widening only where that is not enough.
* E-mail addresses: :func:`engine.examples.social.text.email_flags`, the regex without a regex.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engine.errors import LogError
from engine.examples.social.data import MESSAGE_KIND, SocialData, merged_order
from engine.examples.social.handwritten import ScoreColumns
from engine.examples.social.text import email_flags

__all__ = ["spam_scores_wholelog"]

I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

_MINUTE = 60_000
_DAY = 24 * 60 * _MINUTE
_WIDTHS = (120 * _MINUTE, _DAY, 7 * _DAY, 30 * _DAY)
_LIMIT = 1 << 62
_FIRST_DISTINCT_LOOK = 8


def _bits(values: I64) -> int:
    return max(int(values.max(initial=0)).bit_length(), 1)


def _sort_rows(columns: list[I64]) -> list[I64]:
    """Rows sorted lexicographically by non-negative int64 columns; returns the sorted columns."""
    widths = [_bits(c) for c in columns]
    if sum(widths) > 62:
        order = np.lexsort(columns[::-1])
        return [c[order] for c in columns]
    key = np.zeros(columns[0].shape[0], dtype=np.int64)
    for column, width in zip(columns, widths, strict=True):
        key = (key << width) | column
    key.sort()
    out = []
    for width in reversed(widths):
        out.append(key & ((1 << width) - 1))
        key = key >> width
    return out[::-1]


def _group_starts(first: Bools) -> I64:
    """For rows where ``first`` marks each group's first row: each row's group start."""
    return np.maximum.accumulate(np.where(first, np.arange(first.size, dtype=np.int64), 0))


def _user_codes(*columns: I64) -> list[I64]:
    """Non-negative small codes for user ids (the ids themselves when they already are)."""
    joined = np.concatenate(columns)
    if joined.size == 0 or (joined.min() >= 0 and joined.max() < 1 << 31):
        return list(columns)
    _, inverse = np.unique(joined, return_inverse=True)
    return np.split(inverse.astype(np.int64), np.cumsum([c.size for c in columns])[:-1])


@dataclass(frozen=True, slots=True)
class _TimeCodes:
    """Order-preserving codes for message times, small enough to pack with a group number.

    Normally a code is the time minus a base, so the code of t - W is the code of t minus W.
    For time ranges too wide to pack, codes are ranks among all times and window starts, and
    ``ranked`` holds the code of t - W for each message (log order) and width W.
    """

    t: I64
    span: int  # every code, and every code + 1, is in [0, span)
    ranked: dict[int, I64] | None

    def start(self, width: int, code: I64, message: I64) -> I64:
        """Code of t - width for messages (log-order indices) whose time codes are ``code``."""
        return code - width if self.ranked is None else self.ranked[width][message]


def _time_codes(t: I64, groups: int) -> _TimeCodes:
    if t.size and (int(t.min()) < -_LIMIT or int(t.max()) > _LIMIT):
        raise LogError("message timestamps must lie within +-2**62 ms; drop corrupt records")
    if t.size == 0:
        return _TimeCodes(t, 2, None)
    base = int(t.min()) - max(_WIDTHS)
    span = int(t.max()) - base + 2
    if span * max(groups, 1) < _LIMIT:
        return _TimeCodes(t - base, span, None)
    # Huge time ranges: rank times and window starts together instead (same order, same ties).
    points = np.unique(np.concatenate([t, *(t - w for w in _WIDTHS)]))
    ranked = {w: np.searchsorted(points, t - w) for w in _WIDTHS}
    return _TimeCodes(np.searchsorted(points, t), points.size + 2, ranked)


def _sorted_pairs(
    sender: I64, recipient: I64, msg_seq: I64, user_a: I64, user_b: I64, fr_seq: I64
) -> tuple[Bools, Bools, I64, Bools]:
    """Friendship and message rows sorted by (unordered pair, log position).

    Returns, in that order: where each pair's rows start, whether the pair is a user with
    themself, the log position, and whether the row is a message from the pair's larger id.
    """
    user_bits = max(_bits(sender), _bits(recipient), _bits(user_a), _bits(user_b))
    seq_bits = _bits(np.array([fr_seq.size + msg_seq.size], dtype=np.int64))
    if 2 * user_bits + seq_bits + 1 <= 62:
        # One int64 per row: lo | hi | seq | direction, so one plain sort does it all.
        def pack(a: I64, b: I64, seq: I64, backward: I64 | int) -> I64:
            pair = (np.minimum(a, b) << user_bits) | np.maximum(a, b)
            return (((pair << seq_bits) | seq) << 1) | backward

        key = np.concatenate(
            [
                pack(user_a, user_b, fr_seq, 0),
                pack(sender, recipient, msg_seq, (sender > recipient).astype(np.int64)),
            ]
        )
        key.sort()
        pair = key >> (seq_bits + 1)
        seq = (key >> 1) & ((1 << seq_bits) - 1)
        backward = (key & 1).astype(bool)
        is_self = (pair >> user_bits) == (pair & ((1 << user_bits) - 1))
        first = np.ones(key.size, dtype=bool)
        first[1:] = pair[1:] != pair[:-1]
        return first, is_self, seq, backward
    lo, hi, seq, back = _sort_rows(
        [
            np.concatenate([np.minimum(user_a, user_b), np.minimum(sender, recipient)]),
            np.concatenate([np.maximum(user_a, user_b), np.maximum(sender, recipient)]),
            np.concatenate([fr_seq, msg_seq]),
            np.concatenate(
                [np.zeros(fr_seq.size, np.int64), (sender > recipient).astype(np.int64)]
            ),
        ]
    )
    first = np.ones(seq.size, dtype=bool)
    first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    return first, lo == hi, seq, back.astype(bool)


def _pair_facts(
    sender: I64,
    recipient: I64,
    msg_seq: I64,
    user_a: I64,
    user_b: I64,
    fr_seq: I64,
    codes: _TimeCodes,
) -> tuple[Bools, Bools]:
    """Per message a->b at u (log order): is it to a friend, and is it a response?

    One sort of friendship and message rows by (unordered pair, log position). A message is to
    a friend iff a friendship row of its pair sorts before it; it is a response iff the running
    max of the other direction's times there is > u - 7 days (for a->a, of earlier a->a times).
    """
    n = sender.size
    first, is_self, seq, backward = _sorted_pairs(
        sender, recipient, msg_seq, user_a, user_b, fr_seq
    )
    # Friendship rows get message index n: a slot past the end that absorbs their results.
    message_index = np.full(fr_seq.size + n, n, dtype=np.int64)
    message_index[msg_seq] = np.arange(n, dtype=np.int64)
    mi = message_index[seq]
    friendship = mi == n
    group = np.cumsum(first) - 1
    # Segmented "any friendship so far": a running max that cannot leak across groups.
    friend = np.maximum.accumulate(2 * group + friendship) - 2 * group > 0

    forward = ~friendship & ~backward  # lo -> hi, and a -> a
    base = group * codes.span
    time = np.append(codes.t, 0)[mi]
    run_forward = np.maximum.accumulate(base + np.where(forward, time + 1, 0)) - base
    run_backward = np.maximum.accumulate(base + np.where(backward, time + 1, 0)) - base
    earlier_forward = np.concatenate([[0], run_forward[:-1]])
    earlier_forward[first] = 0
    latest = np.where(is_self, earlier_forward, np.where(backward, run_forward, run_backward))
    week = 7 * _DAY
    start = time - week if codes.ranked is None else np.append(codes.ranked[week], 0)[mi]
    response = latest - 1 > start  # latest 0: no message yet

    friend_out = np.empty(n + 1, dtype=bool)
    response_out = np.empty(n + 1, dtype=bool)
    friend_out[mi] = friend
    response_out[mi] = response
    return friend_out[:n], response_out[:n]


@dataclass(frozen=True, slots=True)
class _Groups:
    """Messages grouped by sender, in log order within each group ("grouped rows")."""

    order: I64  # message index (log order) of each grouped row
    start: I64  # grouped row where the row's group starts
    key: I64  # group number * span, added to codes to sort groups apart
    code: I64  # time code
    running_max: I64  # key + running max of code within the group: nondecreasing overall
    suffix_min: I64  # min code over this and all later rows of the group
    late: I64  # rows stamped below their group's running max
    late_before: I64  # late_before[k]: late rows among [0, k)


def _group_by_sender(sender: I64, codes: _TimeCodes) -> _Groups:
    n = sender.size
    sender_sorted, order = _sort_rows([sender, np.arange(n, dtype=np.int64)])
    first = np.ones(n, dtype=bool)
    first[1:] = sender_sorted[1:] != sender_sorted[:-1]
    key = (np.cumsum(first) - 1) * codes.span
    code = codes.t[order]
    keyed = key + code
    # A later group's keys exceed all of an earlier group's, so plain scans stay within groups.
    running_max = np.maximum.accumulate(keyed)
    is_late = keyed < running_max
    late = np.flatnonzero(is_late)
    suffix_min = (np.minimum.accumulate(keyed[::-1])[::-1] - key) if late.size else code
    late_before = np.concatenate([[0], np.cumsum(is_late, dtype=np.int64)])
    return _Groups(
        order, _group_starts(first), key, code, running_max, suffix_min, late, late_before
    )


@dataclass(frozen=True, slots=True)
class _Subset:
    """A subset of grouped rows (None: all rows) with its running count."""

    mask: Bools | None
    before: I64 | None  # before[k]: rows of the subset among grouped rows [0, k)

    @classmethod
    def of(cls, mask: Bools | None) -> _Subset:
        if mask is None:
            return cls(None, None)
        return cls(mask, np.concatenate([[0], np.cumsum(mask, dtype=np.int64)]))


def _count_upto(g: _Groups, rows: I64 | None, x: I64, subsets: list[_Subset]) -> list[I64]:
    """For grouped rows (None: all) and codes x: #{j <= row in its group: j in subset, code_j <= x}.

    Rows before p (the first row whose running max exceeds x) all qualify by time: a prefix
    count. Rows in [p, row] qualify only if stamped below their running max and <= x: where
    there are such late rows, walk from p while the group still holds a code <= x further on
    (the suffix min says so), all rows at once.
    """
    if rows is None:
        row, key, start = np.arange(g.order.size, dtype=np.int64), g.key, g.start
    else:
        row, key, start = rows, g.key[rows], g.start[rows]
    p = np.searchsorted(g.running_max, key + x, side="right")
    end = np.minimum(p, row + 1)
    counts = [
        end - start if sub.before is None else sub.before[end] - sub.before[start]
        for sub in subsets
    ]
    if g.late.size == 0:
        return counts
    k = np.flatnonzero((p <= row) & (g.late_before[row + 1] > g.late_before[p]))
    j = p[k]
    while k.size:
        alive = g.suffix_min[j] <= x[k]
        k, j = k[alive], j[alive]
        hit = g.code[j] <= x[k]
        for count, sub in zip(counts, subsets, strict=True):
            count[k] += hit if sub.mask is None else hit & sub.mask[j]
        j = j + 1
        more = j <= row[k]
        k, j = k[more], j[more]
    return counts


def _distinct_at_least(
    g: _Groups, rows: I64, recipient: I64, nonfriend: Bools, x: I64, need: int
) -> Bools:
    """For grouped rows: do the non-friend messages so far with code in (x, code] reach ``need``
    distinct recipients? Looks at the last few candidates first and widens only if undecided."""
    nf_rows = np.flatnonzero(nonfriend)
    nf_running_max = np.maximum.accumulate(g.key[nf_rows] + g.code[nf_rows])
    last = np.cumsum(nonfriend)[rows] - 1  # index into nf_rows of the last one <= row
    first = np.searchsorted(nf_running_max, g.key[rows] + x, side="right")
    lower, upper = x, g.code[rows]
    out = np.zeros(rows.size, dtype=bool)
    todo = np.arange(rows.size)
    look = _FIRST_DISTINCT_LOOK
    while todo.size:
        back = last[todo, None] - np.arange(look)[None, :]
        inside = back >= first[todo, None]
        j = nf_rows[np.where(inside, back, 0)]
        code = g.code[j]
        valid = inside & (code > lower[todo, None]) & (code <= upper[todo, None])
        values = np.sort(np.where(valid, recipient[j], -1), axis=1)
        new = values >= 0
        new[:, 1:] &= values[:, 1:] != values[:, :-1]
        enough = new.sum(axis=1) >= need
        out[todo[enough]] = True
        settled = enough | (last[todo] - first[todo] + 1 <= look)
        todo = todo[~settled]
        look *= 4
    return out


def _segmented_cumsum(values: Bools, start: I64) -> I64:
    total = np.cumsum(values, dtype=np.int64)
    return total - total[start] + values[start]


def spam_scores_wholelog(data: SocialData) -> ScoreColumns:
    """Score every message with the five spam rules of issue 3, all messages at once."""
    m, f = data.messages, data.friendships
    kinds, idx = merged_order(data)
    is_msg = kinds == MESSAGE_KIND
    msg_seq, fr_seq = np.flatnonzero(is_msg), np.flatnonzero(~is_msg)
    rows, fr_rows = idx[msg_seq], idx[fr_seq]
    n = rows.size
    t = m.ts[rows]
    if n == 0:
        none = np.zeros(0, dtype=np.int64)
        small = none.astype(np.int32)
        return ScoreColumns(none, none, none, none, small, small, none.astype(bool), none)
    sender, recipient, user_a, user_b = _user_codes(
        m.sender[rows], m.recipient[rows], f.user_a[fr_rows], f.user_b[fr_rows]
    )
    codes = _time_codes(t, kinds.size + 1)
    friend, response = _pair_facts(sender, recipient, msg_seq, user_a, user_b, fr_seq, codes)
    email = email_flags(m.content)[rows]

    g = _group_by_sender(sender, codes)
    every_row = np.arange(n, dtype=np.int64)
    nf, em = ~friend[g.order], email[g.order]
    every, nf_rows, em_rows = _Subset.of(None), _Subset.of(nf), _Subset.of(em)
    sent = every_row - g.start + 1
    nf_sofar = _segmented_cumsum(nf, g.start)
    rule1 = (sent > 5) & (nf_sofar > 2 * (sent - nf_sofar))

    # Counts up to t itself: everything so far unless the row is stamped below the running max.
    upto = [sent.copy(), nf_sofar.copy(), _segmented_cumsum(em, g.start)]
    for column, fixed in zip(
        upto, _count_upto(g, g.late, g.code[g.late], [every, nf_rows, em_rows]), strict=True
    ):
        column[g.late] = fixed
    prefix_min = codes.span - 1 - (np.maximum.accumulate(g.key + (codes.span - 1 - g.code)) - g.key)

    def in_window(width: int, subsets: list[_Subset], upper: list[I64], among: Bools) -> list[I64]:
        """Counts in (t - width, t] at rows where ``among`` holds and anything so far is that
        old (elsewhere: ``upper``, the counts up to t). Sparse selections use a row subset."""
        start = codes.start(width, g.code, g.order)
        among = among & (prefix_min <= start)
        out = [u.copy() for u in upper]
        if 2 * np.count_nonzero(among) < n:
            chosen = np.flatnonzero(among)
            for column, early in zip(
                out, _count_upto(g, chosen, start[chosen], subsets), strict=True
            ):
                column[chosen] -= early
        else:
            for column, early in zip(out, _count_upto(g, None, start, subsets), strict=True):
                np.subtract(column, early, out=column)
        return out

    anywhere = np.ones(n, dtype=bool)
    (nf_2h,) = in_window(120 * _MINUTE, [nf_rows], [upto[1]], anywhere)
    heavy = np.flatnonzero(nf_2h > 7)
    rule2 = np.zeros(n, dtype=bool)
    rule2[heavy] = _distinct_at_least(
        g,
        heavy,
        recipient[g.order],
        nf,
        codes.start(120 * _MINUTE, g.code[heavy], g.order[heavy]),
        5,
    )
    all_30d, email_30d = in_window(30 * _DAY, [every, em_rows], [upto[0], upto[2]], anywhere)
    rule3 = 2 * email_30d > all_30d
    week_old = prefix_min <= codes.start(7 * _DAY, g.code, g.order)
    (all_7d,) = in_window(7 * _DAY, [every], [upto[0]], week_old)
    (all_1d,) = in_window(_DAY, [every], [upto[0]], week_old)
    rule4 = week_old & (5 * all_1d > all_7d)
    rule5 = 10 * _segmented_cumsum(response[g.order], g.start) < sent

    rules = rule1 | rule2 << 1 | rule3 << 2 | rule4 << 3 | rule5 << 4
    spam = (rule1.astype(np.int64) + rule2 + rule3 + rule4 + rule5) >= 2
    # One scatter back to log order: flagged count and rule bits packed together.
    packed = np.empty(n, dtype=np.int64)
    packed[g.order] = (_segmented_cumsum(spam, g.start) << 5) | rules
    rules_out = (packed & 31).astype(np.int32)
    fired = np.zeros(n, dtype=np.int32)
    for bit in range(5):
        fired += (rules_out >> bit) & 1
    return ScoreColumns(
        message_id=m.message_id[rows],
        ts=t,
        sender=m.sender[rows],
        recipient=m.recipient[rows],
        rules=rules_out,
        score=10 * fired,
        spam=fired >= 2,
        sender_flagged=packed >> 5,
    )
