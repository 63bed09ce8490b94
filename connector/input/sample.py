"""The first values of each partition range, read before a run (to infer a JSON schema)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from connector.errors import BrokerError
from connector.input.reader import consumer_config
from connector.positions.ranges import PartitionRange

__all__ = ["first_values"]


def first_values(
    client: Mapping[str, Any],
    ranges: Sequence[PartitionRange],
    *,
    job: str,
    per_partition: int,
    timeout_s: float,
) -> list[bytes | None]:
    """Values of the first ``per_partition`` offsets of each range (fewer where a range is
    shorter or compaction left gaps), in range order, then offset order; the same records on
    every call while the ranges' records are retained."""
    wanted = {
        (r.topic, r.partition): (r.start, min(r.end, r.start + per_partition))
        for r in ranges
        if r.end > r.start
    }
    if not wanted:
        return []
    got: dict[tuple[str, int], list[tuple[int, bytes | None]]] = {key: [] for key in wanted}
    live = set(wanted)
    consumer = Consumer(consumer_config(client, job))
    try:
        consumer.assign([TopicPartition(t, p, wanted[(t, p)][0]) for t, p in sorted(live)])
        deadline = time.monotonic() + timeout_s
        while live:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"could not read the start of partitions {sorted(live)} within "
                    f"{timeout_s:.0f} s (to infer their JSON fields); is the broker reachable?"
                )
            for message in consumer.consume(1000, timeout=0.1):
                key = (message.topic() or "", message.partition() or 0)
                if key not in live:
                    continue
                error = message.error()
                end = wanted[key][1]
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise BrokerError(f"reading {key[0]}/{key[1]}: {error.str()}")
                    live.discard(key)  # compaction gaps: the partition ends before `end`
                    continue
                offset = message.offset() or 0
                if offset < end:
                    got[key].append((offset, message.value()))
                if offset + 1 >= end:
                    live.discard(key)
    finally:
        consumer.close()
    return [value for key in wanted for _, value in sorted(got[key], key=lambda m: m[0])]
