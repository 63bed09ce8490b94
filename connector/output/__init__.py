"""The output side of a job: output topics, the sink that writes them, the sink process.

::

    topics.py        before a run: create missing output topics, refuse another job's,
                     find this job's resume points (its last seq per partition, or without
                     headers a count past the checkpoint's marks)
    headers.py       the output headers of each ``output_headers`` mode: full, compact, none
    sink.py          KafkaSink: an epoch's output chunks encoded, keyed (murmur2, like the
                     Java client) and produced with their headers, in serial order
    writer.py        PartitionWriter: a KafkaSink with its producer and mark reader, what a
                     sink process's child and a sink actor each run
    sink_process.py  SinkProcess: a KafkaSink in a child process fed through ``/dev/shm``,
                     at most one epoch behind the coordinator; or several, each owning a
                     share of the output partitions (``sink_processes``)
    ray_sinks.py     RaySinks: sink actors on the nodes of a Ray cluster, each owning a share
                     of the output partitions and merging the workers' shares itself
                     (``ray_sinks``); the driver never fetches the output
    shards.py        which sink process (or actor) owns which output partition, how many
                     there are, and each epoch's output split between them

The engine's side of output (chunks, the serial ``seq``) is :mod:`engine.output`.
"""

from __future__ import annotations

from connector.output.ray_sinks import RaySinks
from connector.output.sink import KafkaSink, OutputTarget, ResumePoint, output_producer_settings
from connector.output.sink_process import SinkProcess
from connector.output.topics import OutputTopic, dead_lettered_offsets, prepare_outputs
from connector.output.writer import SinkSettings

__all__ = [
    "KafkaSink",
    "OutputTarget",
    "OutputTopic",
    "RaySinks",
    "ResumePoint",
    "SinkProcess",
    "SinkSettings",
    "dead_lettered_offsets",
    "output_producer_settings",
    "prepare_outputs",
]
