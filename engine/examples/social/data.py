"""The reference social data set and its serial log order.

A deterministic, vectorised generator of a synthetic social network shaped like the data in the
ReStream paper (Schleier-Smith, Krogen, Hellerstein, SoCC 2016): Zipf-skewed activity, 2% spammers
who send bursts of about 20 messages to random non-friends, e-mail addresses in about half of the
spam and a tenth of other messages, normal users who mostly message friends and often reply
within hours, and friendships that form over the whole span (some before the first message).

Each table holds the records exactly as a Kafka producer would append them: rows ordered by
(partition, offset), partition from Kafka's Java partitioner on the UTF-8 decimal key (sender,
user_a), offsets 0, 1, 2 ... in generation order, which is true-time order. ``jitter_ms`` shifts
record timestamps back by up to that much, as producers' clocks do, so ``ts`` may go backwards
inside a partition while offsets keep generation order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.errors import EngineError, LogError
from engine.examples.social.partitioning import partition_decimal_keys
from engine.examples.social.text import TextPools

__all__ = [
    "FRIENDSHIPS_TOPIC",
    "FRIENDSHIP_KIND",
    "FriendshipColumns",
    "MESSAGES_TOPIC",
    "MESSAGE_KIND",
    "MessageColumns",
    "SCENARIOS",
    "SocialData",
    "SocialSummary",
    "Skew",
    "generate_social",
    "merged_order",
    "resolve_scenario",
    "stable_argsort",
]

logger = logging.getLogger(__name__)

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
Objects = npt.NDArray[np.object_]

FRIENDSHIPS_TOPIC = "social.friendships"
MESSAGES_TOPIC = "social.messages"
# The log breaks timestamp ties by topic name; these sort in this order.
FRIENDSHIP_KIND = 0
MESSAGE_KIND = 1

_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000
_FRIENDSHIP_SHARE = 0.08  # of all events
_PREHISTORY_SHARE = 0.3  # of friendships, formed in the `days` before the first message
_SPAMMER_SHARE = 0.02  # of users
_SPAM_SHARE = 0.10  # of messages
_REPLY_SHARE = 0.25  # of normal messages: replies to an earlier message
_REPLY_TO_REPLY_SHARE = 0.08  # of normal messages: replies to a reply
_TO_FRIEND_SHARE = 0.85  # of normal originals, when the sender has a friend at that time
_ZIPF_EXPONENT = 0.8
_BURST_SIZES = (15, 26)  # half-open range of messages per spam burst: about 20
_BURST_GAP_MS = 90_000  # mean gap between messages of one burst
_REPLY_MEDIAN_MS = 20 * 60_000
_EMAIL_SHARE_SPAM = 0.5
_EMAIL_SHARE_NORMAL = 0.1
_POOL_SIZE = 16_384  # distinct texts per content class
# Relative message volume by hour of day: quiet nights, busy evenings.
_HOUR_WEIGHTS = np.array(
    [2, 1, 1, 1, 1, 2, 4, 6, 7, 7, 7, 8, 9, 8, 7, 7, 8, 9, 10, 11, 11, 9, 6, 4], dtype=np.float64
)


@dataclass(frozen=True, slots=True, eq=False)
class MessageColumns:
    """The ``social.messages`` topic, one row per record, ordered by (partition, offset)."""

    message_id: I64
    ts: I64
    sender: I64
    recipient: I64
    content: Objects
    partition: I32
    offset: I64

    def __post_init__(self) -> None:
        _check_lengths(
            "messages",
            [
                self.message_id,
                self.ts,
                self.sender,
                self.recipient,
                self.content,
                self.partition,
                self.offset,
            ],
        )

    def __len__(self) -> int:
        return int(self.ts.shape[0])


@dataclass(frozen=True, slots=True, eq=False)
class FriendshipColumns:
    """The ``social.friendships`` topic, one row per record, ordered by (partition, offset)."""

    ts: I64
    user_a: I64
    user_b: I64
    partition: I32
    offset: I64

    def __post_init__(self) -> None:
        _check_lengths(
            "friendships", [self.ts, self.user_a, self.user_b, self.partition, self.offset]
        )

    def __len__(self) -> int:
        return int(self.ts.shape[0])


@dataclass(frozen=True, slots=True)
class SocialSummary:
    """What the two topics hold, for the demo's printout."""

    messages_per_partition: tuple[int, ...]
    friendships_per_partition: tuple[int, ...]
    min_ts: int | None
    max_ts: int | None
    users: int
    spammers: int


@dataclass(frozen=True, slots=True, eq=False)
class SocialData:
    """Both topics of one generated (or hand-built) social network."""

    messages: MessageColumns
    friendships: FriendshipColumns
    users: int
    days: int
    partitions: int
    spammers: I64

    def summary(self) -> SocialSummary:
        """Records per partition of each topic, time span, distinct users and spammers."""
        m, f = self.messages, self.friendships
        ts = np.concatenate([m.ts, f.ts])
        people = np.concatenate([m.sender, m.recipient, f.user_a, f.user_b])
        return SocialSummary(
            messages_per_partition=_per_partition(m.partition, self.partitions),
            friendships_per_partition=_per_partition(f.partition, self.partitions),
            min_ts=int(ts.min()) if ts.size else None,
            max_ts=int(ts.max()) if ts.size else None,
            users=_distinct(people),
            spammers=int(self.spammers.size),
        )


def _check_lengths(table: str, columns: list[npt.NDArray[Any]]) -> None:
    lengths = {int(c.shape[0]) for c in columns}
    if len(lengths) > 1:
        raise LogError(
            f"{table} columns have different lengths {sorted(lengths)}; "
            "build every column from the same rows"
        )


def _distinct(ids: I64) -> int:
    """How many distinct ids; a presence mask when the ids are small, else a sort."""
    if ids.size and ids.min() >= 0 and ids.max() < 4 * ids.size + 1024:
        seen = np.zeros(int(ids.max()) + 1, dtype=bool)
        seen[ids] = True
        return int(np.count_nonzero(seen))
    return int(np.unique(ids).size)


def _per_partition(partition: I32, partitions: int) -> tuple[int, ...]:
    counts = np.bincount(partition, minlength=partitions)
    return tuple(int(c) for c in counts)


def stable_argsort(keys: I64) -> I64:
    """Stable argsort of int64 keys; packs key and index into one int64 for a fast sort."""
    n = int(keys.shape[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    low = int(keys.min())
    span = int(keys.max()) - low
    index_bits = max(n - 1, 1).bit_length()
    if span.bit_length() + index_bits <= 62:
        packed = ((keys - low) << index_bits) | np.arange(n, dtype=np.int64)
        packed.sort()
        order: I64 = packed & ((1 << index_bits) - 1)
        return order
    return np.argsort(keys, kind="stable").astype(np.int64)


def _stream_running_max(ts: I64, partition: I32, offset: I64, table: str) -> I64:
    """Running max of ts within each partition; checks the (partition, offset) row order."""
    if ts.size == 0:
        return np.zeros(0, dtype=np.int64)
    same = partition[1:] == partition[:-1]
    if np.any(partition[1:] < partition[:-1]) or np.any(same & (offset[1:] <= offset[:-1])):
        raise LogError(
            f"{table} rows are not ordered by (partition, offset) with increasing "
            "offsets; sort them as the partition logs hold them"
        )
    out = np.empty_like(ts)
    bounds = np.flatnonzero(~same) + 1
    for start, stop in zip([0, *bounds.tolist()], [*bounds.tolist(), ts.size], strict=True):
        np.maximum.accumulate(ts[start:stop], out=out[start:stop])
    return out


def merged_order(data: SocialData) -> tuple[npt.NDArray[np.int8], I64]:
    """The serial log: both topics merged by (ts, topic, partition, offset), per DESIGN.md §1.

    Returns ``kinds`` (``FRIENDSHIP_KIND`` or ``MESSAGE_KIND``) and ``idx`` (row in that table)
    for every event in log order. A k-way merge that always takes the head with the smallest
    key equals a stable sort by (running max of ts within the partition, topic, partition,
    offset): a record whose ts is below its partition's running max is never the smallest head
    before its predecessor is taken, and right after that it is the smallest.
    """
    f, m = data.friendships, data.messages
    running = np.concatenate(
        [
            _stream_running_max(f.ts, f.partition, f.offset, FRIENDSHIPS_TOPIC),
            _stream_running_max(m.ts, m.partition, m.offset, MESSAGES_TOPIC),
        ]
    )
    # Rows are concatenated in (topic, partition, offset) order, so a stable sort finishes it.
    order = stable_argsort(running)
    nf = len(f)
    kinds = (order >= nf).astype(np.int8)
    idx = np.where(order >= nf, order - nf, order)
    return kinds, idx


def _sample(rng: np.random.Generator, cdf: npt.NDArray[np.float64], n: int) -> I64:
    """``n`` draws from the distribution with this cdf, returned sorted (fast searchsorted)."""
    drawn: I64 = np.searchsorted(cdf, np.sort(rng.random(n)) * cdf[-1], side="right").astype(
        np.int64
    )
    return drawn


def _other_user(rng: np.random.Generator, users: int, sender: I64) -> I64:
    """A uniformly random user other than ``sender``."""
    other = np.asarray(rng.integers(0, users - 1, sender.shape[0], dtype=np.int64))
    shifted: I64 = other + (other >= sender).astype(np.int64)
    return shifted


def _friendships(
    rng: np.random.Generator, n: int, weight: npt.NDArray[np.float64], users: int, span: int
) -> tuple[I64, I64, I64]:
    """Friendship events (a, b, time relative to the first message), in no particular order."""
    cdf = np.cumsum(weight)
    a = rng.permutation(_sample(rng, cdf, n))
    b = _sample(rng, cdf, n)
    # Rejection keeps the pair distribution; ties to one's self are redrawn uniformly.
    self_pair = a == b
    b[self_pair] = _other_user(rng, users, a[self_pair])
    n_pre = round(n * _PREHISTORY_SHARE)
    t = np.concatenate([rng.integers(-span, 0, n_pre), rng.integers(0, span, n - n_pre)])
    return a, b, t.astype(np.int64)


def _friend_at(
    rng: np.random.Generator, a: I64, b: I64, t: I64, sender: I64, when: I64, users: int, span: int
) -> tuple[I64, npt.NDArray[np.bool_]]:
    """For (sender, when) sorted by sender then time: a random friend made before then."""
    owner = np.concatenate([a, b])
    friend = np.concatenate([b, a])
    base = span  # friendship times start at -span
    width = 3 * span + 1
    key = owner * width + (np.concatenate([t, t]) + base)
    order = np.argsort(key, kind="stable")
    key, friend = key[order], friend[order]
    first = np.searchsorted(key, np.arange(users, dtype=np.int64) * width)
    lo = first[sender]
    hi = np.searchsorted(key, sender * width + (when + base), side="left")
    count = hi - lo
    has = count > 0
    pick = lo + (rng.random(sender.shape[0]) * count).astype(np.int64)
    chosen = np.full(sender.shape[0], -1, dtype=np.int64)
    chosen[has] = friend[pick[has]]
    return chosen, has


def _normal_messages(
    rng: np.random.Generator,
    n: int,
    activity: npt.NDArray[np.float64],
    friendships: tuple[I64, I64, I64],
    users: int,
    days: int,
) -> tuple[I64, I64, I64]:
    """Normal users' messages: originals (mostly to friends) plus replies within hours."""
    span = days * _DAY_MS
    n_reply = round(n * _REPLY_SHARE)
    n_reply2 = round(n * _REPLY_TO_REPLY_SHARE)
    n_orig = n - n_reply - n_reply2
    sender = _sample(rng, np.cumsum(activity), n_orig)
    hour_cdf = np.cumsum(_HOUR_WEIGHTS)
    hour = np.searchsorted(hour_cdf, rng.random(n_orig) * hour_cdf[-1], side="right")
    when = (
        rng.integers(0, days, n_orig) * _DAY_MS
        + hour * _HOUR_MS
        + rng.integers(0, _HOUR_MS, n_orig)
    )
    # Sort originals by (sender, time): the friend lookup then searches sorted queries.
    packed = np.sort(sender * span + when)
    sender, when = packed // span, packed % span
    friend, has = _friend_at(rng, *friendships, sender, when, users, span)
    to_friend = has & (rng.random(n_orig) < _TO_FRIEND_SHARE)
    recipient = friend
    others = np.flatnonzero(~to_friend)
    drawn = rng.permutation(_sample(rng, np.cumsum(activity), others.size))
    clash = drawn == sender[others]
    drawn[clash] = _other_user(rng, users, sender[others][clash])
    recipient[others] = drawn
    senders, recipients, times = [sender], [recipient], [when]
    for count in (n_reply, n_reply2):
        pool_s, pool_r, pool_t = senders[-1], recipients[-1], times[-1]
        chosen = np.sort(rng.choice(pool_s.size, size=count, replace=False))
        delay = np.maximum(rng.lognormal(np.log(_REPLY_MEDIAN_MS), 1.0, count), 1000.0)
        senders.append(pool_r[chosen])
        recipients.append(pool_s[chosen])
        times.append(pool_t[chosen] + delay.astype(np.int64))
    return np.concatenate(senders), np.concatenate(recipients), np.concatenate(times)


def _spam_messages(
    rng: np.random.Generator, n: int, spammers: I64, users: int, span: int
) -> tuple[I64, I64, I64]:
    """Bursts of about 20 messages from one spammer to random users, a minute or two apart."""
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    sizes = rng.integers(*_BURST_SIZES, n // _BURST_SIZES[0] + 1)
    bursts = int(np.searchsorted(np.cumsum(sizes), n)) + 1
    sizes = sizes[:bursts]
    sizes[-1] -= int(sizes.sum()) - n
    burst = np.repeat(np.arange(bursts), sizes)
    sender = spammers[rng.integers(0, spammers.size, bursts)][burst]
    gaps = (rng.exponential(_BURST_GAP_MS, n) + 1000).astype(np.int64)
    firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    gaps[firsts] = 0
    since_start = np.cumsum(gaps)
    since_start -= np.repeat(since_start[firsts], sizes)
    when = rng.integers(0, span, bursts)[burst] + since_start
    return sender, _other_user(rng, users, sender), when


def _table_order(true_time: I64, partition: I32) -> tuple[I64, I32, I64]:
    """Row order (partition, generation order), the partitions and offsets in that order."""
    by_time = stable_argsort(true_time)
    by_partition = by_time[stable_argsort(partition[by_time].astype(np.int64))]
    part = partition[by_partition]
    counts = np.bincount(part, minlength=1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    offset = np.arange(part.size, dtype=np.int64) - starts[part]
    return by_partition, part, offset


def _on_clock(ts: I64, clock_ms: int) -> I64:
    """Timestamps as a clock of resolution ``clock_ms`` reads them."""
    if clock_ms == 1:
        return ts
    return np.asarray(ts - ts % clock_ms, dtype=np.int64)


def _jitter(rng: np.random.Generator, jitter_ms: int, n: int) -> I64:
    if jitter_ms == 0:
        return np.zeros(n, dtype=np.int64)
    return rng.integers(0, jitter_ms + 1, n, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Skew:
    """How far the data set departs from the friendly default, as production logs do.

    ``hot_share`` of the messages are sent by one user (the *hot key*), ``heavy_share`` by
    ``heavy_users`` others (a heavy-hitter group, uniformly among them); the rest keep the
    Zipf-shaped activity. ``clock_ms`` rounds every timestamp down to that resolution (a
    minute clock makes long runs of equal timestamps). Backwards jitter is ``jitter_ms`` of
    :func:`generate_social`.
    """

    hot_share: float = 0.0
    heavy_share: float = 0.0
    heavy_users: int = 0
    clock_ms: int = 1

    def problems(self, users: int) -> list[str]:
        """What is wrong with these settings for ``users`` users (empty when valid)."""
        out = []
        if not 0.0 <= self.hot_share <= 1.0:
            out.append(f"hot_share must be in [0, 1], got {self.hot_share}")
        if not 0.0 <= self.heavy_share <= 1.0:
            out.append(f"heavy_share must be in [0, 1], got {self.heavy_share}")
        if self.hot_share + self.heavy_share > 1.0:
            out.append(
                f"hot_share + heavy_share must be <= 1, got {self.hot_share + self.heavy_share}"
            )
        if self.heavy_users < 0:
            out.append(f"heavy_users must be >= 0, got {self.heavy_users}")
        if self.heavy_share > 0 and self.heavy_users == 0:
            out.append("heavy_share > 0 needs heavy_users >= 1")
        if self.heavy_users + (self.hot_share > 0) > users - 1:
            out.append(
                f"hot and heavy users ({self.heavy_users + 1}) leave no other user "
                f"among {users}; use more users"
            )
        if self.clock_ms < 1:
            out.append(f"clock_ms must be >= 1, got {self.clock_ms}")
        return out


#: Named data-set shapes: ``uniform`` is the friendly default, ``skewed`` is shaped like
#: production traffic (one user sends 40% of the messages, 30 users another 30%, a minute
#: clock, and timestamps that go back up to 3 hours within a partition).
SCENARIOS: dict[str, tuple[Skew, int]] = {
    "uniform": (Skew(), 0),
    "skewed": (Skew(hot_share=0.4, heavy_share=0.3, heavy_users=30, clock_ms=60_000), 3 * _HOUR_MS),
}


def resolve_scenario(
    name: str,
    *,
    jitter_ms: int | None = None,
    hot_share: float | None = None,
    heavy_share: float | None = None,
    heavy_users: int | None = None,
    clock_ms: int | None = None,
) -> tuple[Skew, int]:
    """``(skew, jitter_ms)`` of scenario ``name`` (:data:`SCENARIOS`), with any setting given
    here replacing the scenario's."""
    if name not in SCENARIOS:
        raise EngineError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    skew, jitter = SCENARIOS[name]
    skew = Skew(
        skew.hot_share if hot_share is None else hot_share,
        skew.heavy_share if heavy_share is None else heavy_share,
        skew.heavy_users if heavy_users is None else heavy_users,
        skew.clock_ms if clock_ms is None else clock_ms,
    )
    return skew, jitter if jitter_ms is None else jitter_ms


def _apply_skew(
    rng: np.random.Generator, skew: Skew, users: int, sender: I64, recipient: I64
) -> None:
    """Hand ``hot_share`` and ``heavy_share`` of the messages to the hot user (user 0's
    place in a random permutation) and the heavy group, in place; recipients that became
    their own sender are redrawn."""
    n = sender.shape[0]
    if n == 0 or (skew.hot_share == 0 and skew.heavy_share == 0):
        return
    chosen = rng.permutation(users)[: 1 + skew.heavy_users]
    pick = rng.random(n)
    hot = pick < skew.hot_share
    sender[hot] = chosen[0]
    heavy = ~hot & (pick < skew.hot_share + skew.heavy_share)
    if skew.heavy_users:
        drawn = rng.integers(0, skew.heavy_users, int(np.count_nonzero(heavy)))
        sender[heavy] = chosen[1 + drawn]
    clash = recipient == sender
    recipient[clash] = _other_user(rng, users, sender[clash])


def generate_social(
    *,
    users: int = 100_000,
    events: int = 1_000_000,
    days: int = 30,
    seed: int = 0,
    jitter_ms: int = 0,
    partitions: int = 4,
    start_ms: int = 1_700_000_000_000,
    skew: Skew | None = None,
) -> SocialData:
    """Generate the reference social network: ``events`` messages plus friendships.

    Deterministic: the same arguments give the same arrays, bit for bit. About 8% of the
    events are friendships (30% of them in the ``days`` before ``start_ms``); the messages
    span ``days`` from ``start_ms`` (replies may land a few hours after). ``skew`` makes it
    shaped like production traffic (:class:`Skew`, :data:`SCENARIOS`); without it the
    arrays are those of earlier releases.
    """
    _validate(users, events, days, jitter_ms, partitions)
    skew = skew or Skew()
    bad = skew.problems(users)
    if bad:
        raise EngineError("cannot generate the social data set: " + "; ".join(bad))
    rng = np.random.default_rng(seed)
    span = days * _DAY_MS
    n_friend = round(events * _FRIENDSHIP_SHARE)
    n_msg = events - n_friend
    spammers = np.sort(rng.choice(users, size=round(users * _SPAMMER_SHARE), replace=False))
    is_spammer = np.zeros(users, dtype=bool)
    is_spammer[spammers] = True
    activity = ((rng.permutation(users) + 1.0) ** -_ZIPF_EXPONENT).astype(np.float64)
    friend_weight = np.sqrt(activity)
    friend_weight[is_spammer] *= 0.05
    activity[is_spammer] = 0.0
    fa, fb, ft = _friendships(rng, n_friend, friend_weight, users, span)
    n_spam = round(n_msg * _SPAM_SHARE) if spammers.size else 0
    ns, nr, nt = _normal_messages(rng, n_msg - n_spam, activity, (fa, fb, ft), users, days)
    ss, sr, st = _spam_messages(rng, n_spam, spammers.astype(np.int64), users, span)
    sender, recipient = np.concatenate([ns, ss]), np.concatenate([nr, sr])
    _apply_skew(rng, skew, users, sender, recipient)
    true_time = np.concatenate([nt, st])
    spam = np.concatenate([np.zeros(ns.size, bool), np.ones(ss.size, bool)])
    email = rng.random(n_msg) < np.where(spam, _EMAIL_SHARE_SPAM, _EMAIL_SHARE_NORMAL)

    user_partition = partition_decimal_keys(np.arange(users, dtype=np.int64), partitions)
    rows, part, offset = _table_order(true_time, user_partition[sender])
    # message_id numbers the messages in true-time order.
    message_id = np.empty(n_msg, dtype=np.int64)
    message_id[stable_argsort(true_time)] = np.arange(1, n_msg + 1, dtype=np.int64)
    pools = TextPools.build(rng, min(_POOL_SIZE, max(n_msg, 1)))
    content = pools.pick(rng, spam[rows], email[rows])
    ts = _on_clock(start_ms + true_time[rows] - _jitter(rng, jitter_ms, n_msg), skew.clock_ms)
    messages = MessageColumns(
        message_id[rows], ts, sender[rows], recipient[rows], content, part, offset
    )

    swap = rng.random(n_friend) < 0.5
    user_a, user_b = np.where(swap, fb, fa), np.where(swap, fa, fb)
    frows, fpart, foffset = _table_order(ft, user_partition[user_a])
    fts = _on_clock(start_ms + ft[frows] - _jitter(rng, jitter_ms, n_friend), skew.clock_ms)
    friendships = FriendshipColumns(fts, user_a[frows], user_b[frows], fpart, foffset)
    logger.debug("generated %s messages and %s friendships", n_msg, n_friend)
    return SocialData(messages, friendships, users, days, partitions, spammers.astype(np.int64))


def _validate(users: int, events: int, days: int, jitter_ms: int, partitions: int) -> None:
    problems = []
    if users < 2:
        problems.append(f"users must be >= 2, got {users}")
    if events < 0:
        problems.append(f"events must be >= 0, got {events}")
    if days < 1:
        problems.append(f"days must be >= 1, got {days}")
    if jitter_ms < 0:
        problems.append(f"jitter_ms must be >= 0, got {jitter_ms}")
    if partitions < 1:
        problems.append(f"partitions must be >= 1, got {partitions}")
    if users * (3 * days * _DAY_MS + 1) >= 1 << 62:
        problems.append(f"users x days is too large ({users} x {days}); use fewer of either")
    if problems:
        raise EngineError("cannot generate the social data set: " + "; ".join(problems))
