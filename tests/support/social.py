"""Hand-built social data sets (rows to a SocialData) for the social example's tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.examples.social.data import (
    FriendshipColumns,
    MessageColumns,
    SocialData,
)

MessageRow = tuple[int, int, int, int, str]  # partition, ts, sender, recipient, content
FriendshipRow = tuple[int, int, int, int]  # partition, ts, user_a, user_b


def build_social(
    messages: Sequence[MessageRow], friendships: Sequence[FriendshipRow], partitions: int = 0
) -> SocialData:
    """A data set from rows listed in each partition's offset order (list order)."""
    parts = [r[0] for r in messages] + [r[0] for r in friendships]
    partitions = max(partitions, 1 + max(parts, default=0))

    def layout(rows: Sequence[tuple[int | str, ...]]) -> tuple[list[int], list[int]]:
        order = sorted(range(len(rows)), key=lambda i: int(rows[i][0]))
        seen: dict[int, int] = {}
        offsets = []
        for i in order:
            part = int(rows[i][0])
            offsets.append(seen.get(part, 0))
            seen[part] = offsets[-1] + 1
        return order, offsets

    morder, moff = layout(messages)
    forder, foff = layout(friendships)
    content = np.empty(len(messages), dtype=object)
    content[:] = [messages[i][4] for i in morder]

    def col(rows: Sequence[tuple[int | str, ...]], order: list[int], k: int) -> np.ndarray:
        return np.array([rows[i][k] for i in order], dtype=np.int64)

    m = MessageColumns(
        message_id=np.array([i + 1 for i in morder], dtype=np.int64),
        ts=col(messages, morder, 1),
        sender=col(messages, morder, 2),
        recipient=col(messages, morder, 3),
        content=content,
        partition=col(messages, morder, 0).astype(np.int32),
        offset=np.array(moff, np.int64),
    )
    f = FriendshipColumns(
        ts=col(friendships, forder, 1),
        user_a=col(friendships, forder, 2),
        user_b=col(friendships, forder, 3),
        partition=col(friendships, forder, 0).astype(np.int32),
        offset=np.array(foff, np.int64),
    )
    users = {r[2] for r in messages} | {r[3] for r in messages} | {r[2] for r in friendships}
    users |= {r[3] for r in friendships}
    return SocialData(
        m, f, users=len(users), days=1, partitions=partitions, spammers=np.zeros(0, dtype=np.int64)
    )
