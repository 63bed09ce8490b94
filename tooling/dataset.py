"""The reference social data set on a broker: what the demo and the benches replay.

Each of them starts a broker (the embedded one unless a cluster is named), writes the
generated data set to two topics of its own (a fresh prefix per run, so that runs never share
topics and never need cleaning up) and replays those topics as a job's inputs. This module is
that common part; generating the data stays with the caller, which may report on it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from connector.errors import BrokerError
from engine.examples.social.data import SocialData
from tooling.broker import LocalBroker
from tooling.generate import WriteReport, write_social

__all__ = ["SocialTopics", "broker_for", "drop_topics", "unique_prefix", "write_social_topics"]


@dataclass(frozen=True, slots=True)
class SocialTopics:
    """The data set as written: its two topics and what writing them took."""

    data: SocialData
    messages_topic: str
    friendships_topic: str
    written: WriteReport

    @property
    def topics(self) -> tuple[str, str]:
        """The messages topic, then the friendships topic."""
        return (self.messages_topic, self.friendships_topic)

    @property
    def inputs(self) -> tuple[tuple[str, str], tuple[str, str]]:
        """The ``inputs`` of a :class:`~connector.config.RunConfig` replaying both topics."""
        return ((self.messages_topic, "message"), (self.friendships_topic, "friendship"))


def broker_for(bootstrap: str | None) -> LocalBroker:
    """The embedded Tansu broker, or the cluster at ``bootstrap`` when one is given."""
    return LocalBroker("tansu" if bootstrap is None else "external", bootstrap=bootstrap)


def drop_topics(bootstrap: str, prefix: str) -> list[str]:
    """Delete every topic named ``PREFIX.*`` (a bench's measured output, so that the next
    measurement sees a broker holding what it held before: the embedded broker keeps every
    record in memory and slows down as it grows); the topics deleted."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [t for t in admin.list_topics(timeout=30).topics if t.startswith(f"{prefix}.")]
    if not topics:
        return topics
    for topic, future in admin.delete_topics(topics, operation_timeout=30).items():
        try:
            future.result(30)
        except Exception as exc:  # confluent_kafka raises KafkaException with the broker's error
            raise BrokerError(f"cannot delete topic {topic}: {exc}") from exc
    return topics


def unique_prefix(kind: str) -> str:
    """``KIND-xxxxxxxx``: a topic prefix (or job id) no earlier run has used."""
    return f"{kind}-{uuid.uuid4().hex[:8]}"


def write_social_topics(data: SocialData, *, bootstrap: str, prefix: str) -> SocialTopics:
    """Write ``data`` to ``PREFIX.messages`` and ``PREFIX.friendships`` (created empty)."""
    messages_topic, friendships_topic = f"{prefix}.messages", f"{prefix}.friendships"
    written = write_social(
        data,
        bootstrap=bootstrap,
        messages_topic=messages_topic,
        friendships_topic=friendships_topic,
        partitions=data.partitions,
    )
    return SocialTopics(data, messages_topic, friendships_topic, written)
