"""The Kafka clients: asking about offsets, producing in bulk, placing keys like Java does.

Everything here talks to a broker (or computes what a broker would), and nothing here knows
about jobs, serde or the engine's log::

    offsets.py      OffsetsClient, the read-only seam for watermarks, offsets for a time and
                    groups' committed offsets; KafkaOffsets implements it (admin API only)
    producer.py     BulkProducer (no retries: a write is exact or an error), topic creation,
                    a topic's record bounds
    partitioner.py  Kafka's murmur2 partitioner, scalar and vectorised over integer keys
    native.py       NativeProducer: columns of records to Produce requests, no client library
    batches.py      record batches (message format v2) built by compiled loops; ByteRows
    fetcher.py      NativeFetcher: offset ranges read with Fetch requests, no client library
    records.py      fetched record batches read into columns by compiled loops (compressed,
                    transactional); RecordCopy, a picklable copy of one record
    wire.py         the few protocol messages the native clients speak (ApiVersions,
                    InitProducerId, Produce, Fetch)

Reading the log as a job does lives in :mod:`connector.input` (it needs positions, serde and
dead letters); it reads through NativeFetcher or librdkafka's consumer.
"""

from __future__ import annotations

from connector.kafka.batches import ByteRows
from connector.kafka.fetcher import NativeFetcher
from connector.kafka.native import NativeProducer
from connector.kafka.offsets import KafkaOffsets, OffsetsClient, PartitionKey
from connector.kafka.partitioner import java_partition, murmur2, partition_decimal_keys
from connector.kafka.producer import BulkProducer, Header, TopicSpec, create_topics

__all__ = [
    "BulkProducer",
    "ByteRows",
    "Header",
    "KafkaOffsets",
    "NativeFetcher",
    "NativeProducer",
    "OffsetsClient",
    "PartitionKey",
    "TopicSpec",
    "create_topics",
    "java_partition",
    "murmur2",
    "partition_decimal_keys",
]
