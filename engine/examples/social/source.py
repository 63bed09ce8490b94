"""The social data set as an in-memory log source, as the topics would hold it."""

from __future__ import annotations

from engine.examples.social.data import FRIENDSHIPS_TOPIC, MESSAGES_TOPIC, SocialData
from engine.log import InMemorySource, TopicTable

__all__ = ["social_source"]


def social_source(
    data: SocialData,
    *,
    messages_topic: str = MESSAGES_TOPIC,
    friendships_topic: str = FRIENDSHIPS_TOPIC,
    batch_size: int = 65536,
) -> InMemorySource:
    """A source over ``data`` with kinds ``message`` and ``friendship``."""
    m, f = data.messages, data.friendships
    return InMemorySource.from_tables(
        TopicTable(
            messages_topic,
            "message",
            {
                "partition": m.partition,
                "offset": m.offset,
                "ts": m.ts,
                "message_id": m.message_id,
                "sender": m.sender,
                "recipient": m.recipient,
                "content": m.content,
            },
            data.partitions,
        ),
        TopicTable(
            friendships_topic,
            "friendship",
            {
                "partition": f.partition,
                "offset": f.offset,
                "ts": f.ts,
                "user_a": f.user_a,
                "user_b": f.user_b,
            },
            data.partitions,
        ),
        batch_size=batch_size,
    )
