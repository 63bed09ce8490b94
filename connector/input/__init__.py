"""The input side of a job: reading the resolved ranges, and what happens to bad records.

::

    reader.py        KafkaSource, the engine's Source for Kafka topics: assigned partitions
                     read ``read_committed`` from start to end, decoded in bulk into batches
    dead_letters.py  BadRecords: an undecodable or unusable input record is dead-lettered
                     (original bytes plus ``restream.*`` headers) or fails the job, by policy

Dead letters are about input records, so they live here, though they are written to a topic.
"""

from __future__ import annotations

from connector.input.dead_letters import BadRecordError, BadRecords, DeadLetterProducer
from connector.input.reader import KafkaSource, TopicInput, consumer_config

__all__ = [
    "BadRecordError",
    "BadRecords",
    "DeadLetterProducer",
    "KafkaSource",
    "TopicInput",
    "consumer_config",
]
