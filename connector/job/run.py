"""``restream run``: one backtest, from stored offsets to serial-equivalent output topics.

The order of work is what makes failures cheap and output clean:

1. settings: pipeline, inputs, schemas, outputs are resolved and checked (exit 2 on error);
2. positions: the offset ranges are resolved, logged and published as metrics (exit 2 for
   ranges that cannot be read) -- nothing has been written yet;
3. output topics: created if missing, refused if they hold another job's records, and
   resume points found if they hold this job's (see :mod:`connector.output.topics`);
4. the replay: :class:`~connector.input.reader.KafkaSource` -> executor ->
   :class:`~connector.output.sink_process.SinkProcess` (a
   :class:`~connector.output.sink.KafkaSink` in a child process, so that writing overlaps
   reading; ``sink_processes`` of them, each owning a share of the output partitions), with
   metrics and progress after every epoch;
   the output is flushed before success is declared;
5. metrics are pushed to the Pushgateway, if one is configured, whatever the outcome (a job
   that fails before replaying, bad settings included, pushes ``restream_job_success 0``).

Never hang: every wait of the run has a deadline (``stall_timeout``: the parallel executor's
waits for its workers, the sink process's reports and heartbeats, the reader's records),
measured from the last sign of progress; a stall fails the job with exit 1 naming the
process, its pid, the epoch and its ``seq`` range, and counts in ``restream_stalls_total``.
At start, shared-memory run directories of dead runs are swept (their size logged), and a
restarted job checks that its pinned input topics still exist before it creates or reads
any output topic.

With ``checkpoint_dir``, a job pins its settings and ranges in a manifest before step 3 and
snapshots its state every few epochs (:mod:`connector.job.checkpoints`), each snapshot written
once the output before it is delivered, while the run goes on; a restarted job with the
same id resumes from the newest snapshot and skips the output records (and dead letters) that
the crashed attempt already wrote, once it has checked that the output the snapshot covers is
still there (:mod:`connector.output.verify`: a deleted or rewritten topic is refused with exit 2
rather than resumed with a gap). ``restart_from_scratch`` deletes the job's checkpoints and
topics first and runs it from the start. A run that finishes writes a done marker beside its
checkpoints; a rerun of the finished job (same settings) only checks that its output is still
there and exits 0, replaying nothing and writing nothing (not even its lease). Guarantees:
every reader of the output topics sees each record exactly once, in serial order per
partition, once the job has finished; while a restarted job catches up, no record is
duplicated either, because the skipping happens before producing. SIGTERM makes the run
snapshot after the next epoch and stop (exit 1, so the Job restarts it); a second SIGTERM
stops at once.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TextIO

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from connector.config import BadRecordLimit, InputReaderChoice, OutputWriter, RunConfig, setting
from connector.errors import (
    BrokerError,
    ConfigError,
    ConnectorError,
    RefusedError,
    WatchdogError,
)
from connector.input.dead_letters import BadRecords, dead_letter_limit
from connector.input.reader import InputReader, KafkaSource, TopicInput, fetch_settings
from connector.input.sample import first_values
from connector.job.checkpoints import (
    DoneMarker,
    FileCheckpoints,
    Manifest,
    fingerprint,
    read_done,
    read_manifest,
    resume_ranges,
)
from connector.job.lease import KeeperSettings, Lease, RunIdentity, Timing, delivery_timeout_s
from connector.kafka.native import native_unsupported
from connector.kafka.offsets import KafkaOffsets
from connector.kafka.producer import BulkProducer
from connector.observability.metrics import STAGE_PREFIX, JobMetrics, MetricsServer
from connector.observability.progress import Progress
from connector.output.ray_sinks import RaySinks, ray_sink_count, sink_nodes
from connector.output.shards import sink_process_count
from connector.output.sink import OutputTarget, output_producer_settings
from connector.output.sink_process import SinkProcess, SinkSettings
from connector.output.topics import (
    Headerless,
    OutputTopic,
    dead_lettered_offsets,
    prepare_outputs,
    refuse_filled_outputs,
)
from connector.output.verify import (
    OutputMarker,
    OutputMarks,
    PartitionMark,
    delete_job_topics,
    verify_outputs,
)
from connector.pipeline_loader import BUILTIN_DEFAULTS, PipelineDefaults, load_pipeline
from connector.positions.ranges import (
    PartitionRange,
    ResolvedRanges,
    parse_end,
    parse_start,
    resolve,
)
from connector.runtime.cpus import usable_cpus_here
from connector.runtime.gcpolicy import replay_collection
from connector.serde.avro import AvroSchema, load_schema, load_schema_file
from connector.serde.avro_decode import field_kind
from connector.serde.event_time import EVENT_TIME_KINDS
from connector.serde.json_schema import SAMPLE_PER_PARTITION, infer_json_schema, inferred_schema
from connector.serde.schema_registry import RegistryLookup, registry_client
from connector.serde.values import (
    JsonRecordEncoder,
    check_schema,
    value_decoder,
    value_encoder,
)
from engine.checkpoint import EngineSnapshot
from engine.errors import StallError
from engine.executors import make_executor
from engine.executors.arena import sweep_stale
from engine.executors.base import AUTO_EPOCHS_AT_LEAST, Executor, RunStats, auto_epoch_size
from engine.executors.ray_executor import connect_ray, import_ray
from engine.planner import Plan, plan

__all__ = ["JobPlan", "RunReport", "build_job", "resolve_ranges", "run_job"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunReport:
    """What a finished run did."""

    job: str
    events: int
    outputs: dict[str, int]
    skipped: dict[str, int]
    bad_records: dict[str, int]
    wall_seconds: float
    event_time_span_s: float
    stats: RunStats
    resumed_from: int | None = None
    checkpoints: int = 0
    checkpoint_seconds: float = 0.0
    checkpoint_bytes: int = 0
    #: Seconds from the call of run_job to the first output record produced (not skipped).
    first_output_s: float | None = None
    #: The job had finished before this run, which replayed nothing: its done marker.
    already_finished: DoneMarker | None = None

    @property
    def events_per_second(self) -> float:
        """Events processed per wall-clock second."""
        return self.events / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def replay_speedup(self) -> float:
        """Event-time span processed divided by wall time."""
        return self.event_time_span_s / self.wall_seconds if self.wall_seconds else 0.0


@dataclass(frozen=True, slots=True)
class JobPlan:
    """Everything resolved from the settings before touching a broker."""

    config: RunConfig
    job: str
    plan: Plan
    inputs: tuple[tuple[str, str], ...]
    schemas: Mapping[str, AvroSchema]
    #: stream, topic, schema; no schema: JSON of the fields the pipeline declares or emits.
    outputs: tuple[tuple[str, str, AvroSchema | None], ...]
    dead_letter_topic: str
    key_format: str
    client: dict[str, Any] = field(repr=False)
    lease_topic: str = ""


def _schema(ref: str, label: str) -> AvroSchema:
    try:
        if ref.endswith(".avsc") or (os.sep in ref and os.path.exists(ref)):
            return load_schema_file(ref)
        return load_schema(ref)
    except (OSError, ConnectorError, ValueError) as exc:
        raise ConfigError(label, f"cannot load schema {ref!r}: {exc}") from exc


def build_job(config: RunConfig, *, schemas: bool = True) -> JobPlan:
    """Resolve the pipeline, inputs, schemas and outputs; every problem is a ConfigError.

    ``schemas=False`` (``restream positions``, which reads nothing) skips the value schemas.
    """
    job_id: str = config.require("job_id")
    client = config.client_config()
    pipeline_name: str = config.require("pipeline")
    pipeline = load_pipeline(pipeline_name, field=setting("pipeline").label)
    job_plan = plan(pipeline)
    defaults = BUILTIN_DEFAULTS.get(pipeline_name, PipelineDefaults())
    inputs = config.inputs or defaults.inputs
    inputs_label = setting("inputs").label
    if not inputs:
        raise ConfigError(inputs_label, "give at least one input topic as TOPIC=KIND")
    kinds = set(job_plan.kinds())
    for topic, kind in inputs:
        if kind not in kinds:
            raise ConfigError(
                inputs_label,
                f"{topic}={kind}: the pipeline has no operator on event kind {kind!r}; its "
                f"kinds are {sorted(kinds)}",
            )
    unfed = sorted(kinds - {kind for _, kind in inputs})
    if unfed:
        # Its operators would see no events: every count of that kind 0, silently.
        raise ConfigError(
            inputs_label,
            f"no input topic is of event kind {', '.join(map(repr, unfed))}, which the "
            f"pipeline's operators read; add {' and '.join(f'TOPIC={k}' for k in unfed)} "
            f"(--inputs TOPIC={unfed[0]})",
        )
    value_schemas: dict[str, AvroSchema] = {}
    for kind in sorted({k for _, k in inputs}) if schemas else ():
        ref = config.schemas.get(kind) or defaults.schemas.get(kind)
        if not ref:
            if config.value_format == "json":
                continue  # inferred from the start of its topics once the ranges are known
            raise ConfigError(
                setting("schemas").label,
                f"no schema for event kind {kind!r}; give {kind}=NAME or {kind}=path.avsc (JSON "
                "values need none: their fields can be inferred)",
            )
        value_schemas[kind] = _schema(ref, setting("schemas").label)
        check_schema(value_schemas[kind], setting("schemas").label)
    _check_event_time(config, {k for _, k in inputs}, value_schemas)
    outputs: list[tuple[str, str, AvroSchema | None]] = []
    for stream, out in pipeline.outputs.items():
        topic = config.outputs.get(stream) or f"{job_id}.{stream}"
        ref = config.output_schemas.get(stream) or defaults.output_schemas.get(stream)
        if not ref:
            if config.output_format == "json" or not schemas:
                outputs.append((stream, topic, None))
                continue
            raise ConfigError(
                setting("output_schemas").label,
                f"no schema for output stream {stream!r}; give {stream}=NAME or "
                f"{stream}=path.avsc, or write JSON without one (--output-format json)",
            )
        schema = _schema(ref, setting("output_schemas").label)
        check_schema(schema, setting("output_schemas").label)
        names = [f["name"] for f in schema.raw["fields"]]
        # Only declared fields can be checked here; otherwise each record is checked as it
        # is written (a record that lacks a schema field fails the job with its seq).
        lacking = [n for n in names if n not in out.fields] if out.fields else []
        if lacking:
            raise ConfigError(
                setting("output_schemas").label,
                f"schema {schema.name} of stream {stream!r} has fields {lacking} that "
                f"p.output({stream!r}, fields=...) does not list (it lists {list(out.fields)})",
            )
        outputs.append((stream, topic, schema))
    unknown = sorted(set(config.outputs) - set(pipeline.outputs))
    if unknown:
        raise ConfigError(
            setting("outputs").label,
            f"the pipeline has no output streams {unknown}; it has {sorted(pipeline.outputs)}",
        )
    dead_letter_topic = config.dead_letter_topic or f"{job_id}.dead-letter"
    lease_topic = config.lease_topic or f"{job_id}.lease"
    if lease_topic in {topic for _, topic, _ in outputs} | {dead_letter_topic}:
        raise ConfigError(
            setting("lease_topic").label,
            f"{lease_topic} is also an output or dead-letter topic of the job; choose another",
        )
    return JobPlan(
        config=config,
        job=job_id,
        plan=job_plan,
        inputs=tuple(inputs),
        schemas=value_schemas,
        outputs=tuple(outputs),
        dead_letter_topic=dead_letter_topic,
        key_format=config.key_format or defaults.key_format,
        client=client,
        lease_topic=lease_topic,
    )


def _check_event_time(
    config: RunConfig, kinds: set[str], schemas: Mapping[str, AvroSchema]
) -> None:
    """Each ``event_time`` kind is an input kind whose schema has the field, of a type that
    holds a time (checked when the schemas are known)."""
    label = setting("event_time").label
    for kind, name in sorted(config.event_time.items()):
        if kind not in kinds:
            raise ConfigError(label, f"{kind}={name}: no input topic is of event kind {kind!r}")
        schema = schemas.get(kind)
        if schema is None:
            continue
        types = {f["name"]: field_kind(f["type"]) for f in schema.raw["fields"]}
        if name not in types:
            raise ConfigError(
                label,
                f"{kind}={name}: schema {schema.name} has no field {name!r}; it has "
                f"{sorted(types)}",
            )
        if types[name] not in EVENT_TIME_KINDS:
            raise ConfigError(
                label,
                f"{kind}={name}: field {name!r} of {schema.name} is {types[name] or 'not flat'}; "
                f"an event time is {' or '.join(EVENT_TIME_KINDS)} (epoch ms or ISO-8601 text)",
            )


def resolve_ranges(config: RunConfig, topics: list[str]) -> ResolvedRanges:
    """The offset ranges that ``start`` and ``end`` select on ``topics``."""
    start = parse_start(config.start, topics=topics, field=setting("start").label)
    end = parse_end(config.end, topics=topics, field=setting("end").label)
    # Every request within broker_timeout: an unreachable broker fails start-up in time.
    with KafkaOffsets(config.client_config(), timeout_s=config.broker_timeout) as client:
        return resolve(topics, start, end, client)


#: Events of an epoch per parallel worker below which per-epoch costs dominate.
_SHARE_FLOOR = 50_000


def _workers(config: RunConfig) -> int:
    """The executor's worker count: ``workers``, or when 0 one per CPU the pod may use (its
    cgroup quota and affinity set, not the node's CPU count) for parallel, one per CPU of
    the Ray cluster for ray."""
    if config.executor == "ray":
        return config.workers or _ray_cluster_cpus(config.ray_address)
    if config.executor != "parallel":
        return 1
    return config.workers or usable_cpus_here().count


def _ray_sink_actors(config: RunConfig, targets: Mapping[str, OutputTarget]) -> int:
    """The ray run's sink actors (0: none, the driver's sink processes write), connecting
    this process to the Ray cluster (where they run, and whose nodes ``ray_sinks`` 0 counts)."""
    connect_ray(config.ray_address)
    partitions = sum({t.topic: t.partitions for t in targets.values()}.values())
    nodes = len(sink_nodes(import_ray().nodes()))
    return ray_sink_count(config.ray_sinks, partitions, nodes)


@functools.cache
def _ray_cluster_cpus(address: str) -> int:
    """The CPUs of the Ray cluster at ``address`` (connecting this process to it; the ray
    executor then finds it connected)."""
    # Imported here: only a run on Ray loads Ray.
    from engine.executors.ray_executor import RayExecutor

    return RayExecutor(address=address).workers


def _epoch_size(config: RunConfig, events: int | None = None) -> int:
    """The run's epoch size: ``epoch_size``, or when 0 the engine's choice for its workers
    and (when known) the ``events`` left to replay."""
    return config.epoch_size or auto_epoch_size(_workers(config), events)


def fingerprint_parts(job: JobPlan) -> dict[str, Any]:
    """The settings that decide a job's output, as hashed into its checkpoint manifest."""
    c = job.config
    return {
        "pipeline": c.pipeline,
        "plan": job.plan.describe(),
        "inputs": [list(i) for i in job.inputs],
        "schemas": {k: s.text for k, s in sorted(job.schemas.items())},
        "value_format": c.value_format,
        # Only when set, so that older manifests (without it) still match.
        **({"event_time": dict(sorted(c.event_time.items()))} if c.event_time else {}),
        "key_format": job.key_format,
        "outputs": [
            [stream, topic, schema.text if schema else _declared_fields(job, stream)]
            for stream, topic, schema in job.outputs
        ],
        "output_format": c.output_format,
        # Only when not the default, so that older manifests (without it) still match: a
        # resume in another mode would find the records' headers, and so its place, wrong.
        **({"output_headers": c.output_headers} if c.output_headers != "full" else {}),
        "dead_letter_topic": job.dead_letter_topic,
        "start": c.start,
        "end": c.end,
        "executor": c.executor,
        "workers": _workers(c),
        "epoch_size": _epoch_size(c),
    }


def _declared_fields(job: JobPlan, stream: str) -> list[str]:
    """The fields ``p.output(stream, fields=...)`` lists ([]: each record's own)."""
    return list(job.plan.pipeline.outputs[stream].fields)


def _output_target(
    job: JobPlan,
    stream: str,
    topic: str,
    schema: AvroSchema | None,
    partitions: int,
    registry: Any,
) -> OutputTarget:
    config = job.config
    if schema is None:
        # JSON without a schema: the declared fields in their order, or each record's own.
        fields = tuple(_declared_fields(job, stream))
        return OutputTarget(stream, topic, partitions, fields, JsonRecordEncoder(fields))
    return OutputTarget(
        stream,
        topic,
        partitions,
        tuple(f["name"] for f in schema.raw["fields"]),
        value_encoder(
            config.output_format,
            schema,
            schema_id=_output_schema_id(registry, topic, schema, config),
        ),
    )


class Terminated(ConnectorError):  # noqa: N818 - a condition
    """SIGTERM arrived and the run stopped without a checkpoint."""


def _executor(config: RunConfig, events: int | None = None) -> Executor:
    """The run's executor; ``events``: how many the job replays (its whole range, so that a
    resume picks the same size), when known: a short run gets smaller automatic epochs, so
    that reading, computing and writing overlap."""
    size = _epoch_size(config, events)
    if size < _epoch_size(config):
        logger.info(
            "epochs of %s events: at least %s epochs for the job's %s events",
            size,
            AUTO_EPOCHS_AT_LEAST,
            events,
        )
    if config.executor not in ("parallel", "ray"):
        return make_executor(config.executor, epoch_size=size)
    workers = _workers(config)
    # The automatic size gives 125,000 a worker up to its cap of 2,000,000 (16 workers), so
    # from 41 workers on it is too small as well. A size cut for a short run is not warned
    # about: there, the overlap of epochs is worth more than large ones.
    if workers > 1 and size < _SHARE_FLOOR * workers and size == _epoch_size(config):
        logger.warning(
            "epoch_size %s%s gives each of %s workers ~%s events an epoch; every epoch costs "
            "each worker a fixed ~25 ms (2 workers on 2M spam events: 4.2 s at 50,000, 3.0 s "
            "at 200,000), so set epoch_size to at least %s if memory allows (two epochs in "
            "flight)",
            size,
            "" if config.epoch_size else " (automatic, capped)",
            workers,
            size // workers,
            _SHARE_FLOOR * workers,
        )
    if config.workers:
        logger.info("%s executor: %s workers, epochs of %s events", config.executor, workers, size)
    else:
        logger.info(
            "%s executor: %s workers (workers 0: %s), epochs of %s events",
            config.executor,
            workers,
            "one per CPU of the Ray cluster"
            if config.executor == "ray"
            else f"one per usable CPU; {usable_cpus_here().source}",
            size,
        )
    return make_executor(
        config.executor,
        workers=workers,
        epoch_size=size,
        stall_timeout=config.stall_timeout,
        ray_address=config.ray_address,
        ray_readers=config.ray_readers,
    )


class _Producers:
    """The run's producers: the sink process's (settings only) and, created on first use,
    one here for dead letters.

    Lazily, because the parallel executor forks its workers when the run starts, and a Kafka
    client must not exist across a fork.
    """

    def __init__(self, config: RunConfig, metrics: JobMetrics) -> None:
        self.bootstrap = config.bootstrap_servers or ""
        #: Output producer settings, without a callback (the sink process adds its own).
        #: A record may wait for the broker at most as long as the lease allows (see
        #: connector.job.lease): what a paused run still holds times out before a takeover.
        self.overrides = {
            **config.kafka,
            **output_producer_settings(),
            "delivery.timeout.ms": 1000
            * delivery_timeout_s(config.lease_timeout, config.broker_timeout),
        }
        self._error_cb = _broker_errors(metrics, "producer")
        self.producer: BulkProducer | None = None
        self.sink: SinkProcess | RaySinks | None = None
        #: The lease gate that every write passes (set once the lease is held).
        self.gate: Callable[[], None] | None = None

    def __call__(self) -> BulkProducer:
        if self.producer is None:
            self.producer = BulkProducer(
                self.bootstrap, {**self.overrides, "error_cb": self._error_cb}, gate=self.gate
            )
        return self.producer

    def drop_queued(self) -> None:
        """A failed run: deliver what the dead-letter producer holds within a few seconds,
        else drop it, so that nothing of this run lands after its lease is released."""
        if self.producer is not None:
            with contextlib.suppress(ConnectorError):
                self.producer.flush(5.0)
            self.producer.purge()

    def flush(self, *, mark: bool = False) -> None:
        """Wait until everything written so far, output and dead letters, is delivered
        (BrokerError if not; what the sink process raised if it failed); with ``mark`` (a
        checkpoint's flush) the sink process's marks then cover it."""
        if self.sink is not None:
            self.sink.flush(mark=mark)
        if self.producer is not None:
            self.producer.flush()

    def flush_then(self, then: Callable[[], None]) -> None:
        """Have everything written so far delivered, then call ``then()``, without waiting
        for the sink process (see :meth:`SinkProcess.flush_then`)."""

        def delivered() -> None:
            if self.producer is not None:
                self.producer.flush()  # dead letters: few, and written here
            then()

        if self.sink is None:
            delivered()
        else:
            self.sink.flush_then(delivered)


class _Marks:
    """A checkpoint's :class:`OutputMarks`, asked for once the output before it is delivered:
    the resumed checkpoint's marks, updated with the sink process's and, where dead letters
    were written since, the dead-letter topic's (read back here, where they are written)."""

    def __init__(self, job: JobPlan, producers: _Producers) -> None:
        self._job = job
        self._producers = producers
        #: The marks of the checkpoint the run resumed from (none for a fresh start).
        self.resumed = OutputMarks()
        self._dead_letters: dict[tuple[str, int], PartitionMark] = {}
        self._marked = 0  # dead letters produced when last marked
        self._marker: OutputMarker | None = None
        #: Partition count of every output and dead-letter topic (set once they are ready).
        self.topics: dict[str, int] = {}

    def __call__(self) -> OutputMarks:
        producer = self._producers.producer
        if producer is not None and producer.produced != self._marked:
            if self._marker is None:
                self._marker = OutputMarker(self._job.client, self._job.job)
            topic = self._job.dead_letter_topic
            tps = [(topic, p) for p in range(self.topics.get(topic, 1))]
            self._dead_letters.update(self._marker.mark(tps, {}))
            self._marked = producer.produced
        sink = self._producers.sink
        return self.resumed.merged(
            {**(sink.marks if sink is not None else {}), **self._dead_letters}, self.topics
        )

    def close(self) -> None:
        """Close the dead-letter marker's clients."""
        if self._marker is not None:
            self._marker.close()


def _start_over(job: JobPlan, store: FileCheckpoints | None, owned: bool) -> None:
    """``restart_from_scratch``: delete the job's topics (only if they hold nothing but its
    records) and checkpoints, so that the run writes everything from the first record.
    ``owned``: the job's manifest says its output topics are its own (what shows it for
    topics written without headers)."""
    outputs = [topic for _, topic, _ in job.outputs]
    headerless = outputs if owned and job.config.output_headers == "none" else []
    deleted = delete_job_topics(
        job.client, [*outputs, job.dead_letter_topic], job=job.job, headerless=headerless
    )
    snapshots = store.discard() if store is not None else 0
    logger.warning(
        "restart_from_scratch: job %s starts over; deleted topics %s and %d checkpoint(s)",
        job.job,
        ", ".join(deleted) or "(none existed)",
        snapshots,
    )


def _resumed_marks(store: FileCheckpoints, snapshot: EngineSnapshot, job: JobPlan) -> OutputMarks:
    """The marks of the snapshot a run resumes from; refused (exit 2) when it has none."""
    marks = store.output_marks(snapshot)
    if marks is None:
        raise ConfigError(
            setting("restart_from_scratch").label,
            f"the checkpoint of job {job.job} at seq {snapshot.position.seq} does not record "
            "what its output topics held (it was taken by an older restream), so the output "
            "cannot be checked before resuming: finish the job with that version, run it "
            "again with --restart-from-scratch, or use a new job id",
        )
    return marks


def output_writer(
    choice: OutputWriter, client: Mapping[str, Any]
) -> Literal["native", "librdkafka"]:
    """What writes the output (``output_writer`` resolved): ``auto`` is the native producer
    unless the Kafka settings need librdkafka; asking for ``native`` then is a ConfigError."""
    unsupported = native_unsupported(client)
    if choice == "native" and unsupported is not None:
        raise ConfigError(
            "output_writer",
            f"native cannot write with {unsupported}; use librdkafka or auto",
        )
    if choice == "librdkafka" or unsupported is not None:
        if choice == "auto":
            logger.info("output written by librdkafka: %s", unsupported)
        return "librdkafka"
    return "native"


def input_reader(choice: InputReaderChoice, client: Mapping[str, Any]) -> InputReader:
    """What reads the input (``input_reader`` resolved): ``auto`` is the native reader
    unless the Kafka settings need librdkafka; asking for ``native`` then is a ConfigError."""
    protocol = str(client.get("security.protocol", "plaintext")).lower()
    unsupported = (
        None
        if protocol == "plaintext"
        else f"security.protocol={protocol} (the native reader speaks plaintext only)"
    )
    if choice == "native" and unsupported is not None:
        raise ConfigError(
            "input_reader", f"native cannot read with {unsupported}; use librdkafka or auto"
        )
    if choice == "librdkafka" or unsupported is not None:
        if choice == "auto":
            logger.info("input read by librdkafka: %s", unsupported)
        return "librdkafka"
    fetch_settings(client)  # its settings' values, checked now
    return "native"


def _broker_errors(metrics: JobMetrics, client: str) -> Any:
    def on_error(error: Any) -> None:
        metrics.broker_error(client)
        logger.warning("%s: %s (retrying)", client, error)

    return on_error


def _now() -> str:
    """The time now, ISO-8601 in UTC to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _already_finished(
    job: JobPlan, done: DoneMarker, metrics: JobMetrics, stats: RunStats, started: float
) -> RunReport | None:
    """A rerun of a finished job: the report of a run that replays nothing, once the output
    topics are checked to hold what the job wrote (OutputLostError, exit 2, as a resume's
    check, if not). None when a topic that held nothing is gone: the caller then resumes
    from the last checkpoint as without the marker, which creates it again."""
    verify_outputs(
        job.client,
        done.marks,
        job=job.job,
        seq=done.events,
        # Written without headers: its records are the job's by its manifest.
        headerless=[t for _, t, _ in job.outputs] if job.config.output_headers == "none" else (),
    )
    admin = AdminClient(dict(job.client))
    present = admin.list_topics(timeout=job.config.broker_timeout).topics
    gone = sorted(t for t in done.marks.topics if t not in present)
    if gone:
        logger.warning(
            "job %s finished at %s, but its output topics %s (which held no records) are "
            "gone: resuming from its last checkpoint to create them again",
            job.job,
            done.finished_at,
            ", ".join(gone),
        )
        return None
    logger.info("%s", done.describe())
    metrics.finish(success=True, seconds=stats.seconds)
    return RunReport(
        job=job.job,
        events=0,
        outputs={},
        skipped={},
        bad_records={},
        wall_seconds=time.monotonic() - started,
        event_time_span_s=0.0,
        stats=stats,
        already_finished=done,
    )


@dataclass(frozen=True, slots=True)
class _Pinned:
    """What a run replays, settled before it holds the job's lease (by reading only): the
    ranges and inferred JSON schemas of its manifest when restarted, else resolved now;
    ``done``: the job had finished (its done marker), nothing was checked or inferred."""

    parts: dict[str, Any]
    ranges: tuple[PartitionRange, ...]
    inferred: dict[str, AvroSchema]
    restarted: bool
    done: DoneMarker | None = None

    def manifest(self, job: str) -> Manifest:
        """The manifest that pins this (written once the lease is held)."""
        texts = {kind: schema.text for kind, schema in self.inferred.items()}
        return Manifest(job, fingerprint(self.parts), self.parts, self.ranges, texts)


def _pinned(job: JobPlan, *, finished: bool = True) -> _Pinned:
    """The job's ranges and inferred schemas: from its manifest when restarted (a changed
    setting is refused), else resolved now. Reads only: a refusal here (changed settings,
    inputs gone, bad positions, a JSON field in doubt) writes nothing, not even the lease.
    With ``finished``, a job that finished (its done marker) is returned as such at once,
    its inputs unchecked: a finished job needs them no more (retention may have taken them)."""
    config = job.config
    parts = fingerprint_parts(job)
    manifest = None
    if config.checkpoint_dir and not config.restart_from_scratch:
        manifest = read_manifest(config.checkpoint_dir, job.job, fingerprint(parts), parts)
    if manifest is not None and finished and config.checkpoint_dir:
        done = read_done(config.checkpoint_dir, job.job, manifest.fingerprint)
        if done is not None:
            return _Pinned(parts, manifest.ranges, {}, True, done)
    # The broker answers and the inputs exist, named before anything else goes wrong.
    _check_inputs(job, None, manifest is not None)
    if manifest is not None:
        logger.info("job %s restarted: using the ranges pinned at its first start", job.job)
        _check_inputs(job, manifest.ranges, True)
        # The schemas inferred at the first start: its sample may be gone (retention).
        inferred = {kind: inferred_schema(text) for kind, text in manifest.inferred.items()}
        if set(job.schemas) | set(inferred) != {k for _, k in job.inputs}:
            inferred.update(inferred_schemas(job, manifest.ranges, skip=set(inferred)))
        return _Pinned(parts, manifest.ranges, inferred, True)
    ranges = tuple(resolve_ranges(config, [t for t, _ in job.inputs]).ranges)
    return _Pinned(parts, ranges, inferred_schemas(job, ranges), False)


def inferred_schemas(
    job: JobPlan, ranges: Sequence[PartitionRange], *, skip: set[str] | None = None
) -> dict[str, AvroSchema]:
    """The schemas of the JSON input kinds given none, inferred from the first records of
    each of their partitions' ranges (the same records on every resume: the ranges are
    pinned); ConfigError naming the field when the sample leaves one in doubt."""
    label = setting("schemas").label
    found: dict[str, AvroSchema] = {}
    for kind in sorted({k for _, k in job.inputs} - set(job.schemas) - (skip or set())):
        topics = {t for t, k in job.inputs if k == kind}
        sample = first_values(
            job.client,
            [r for r in ranges if r.topic in topics],
            job=job.job,
            per_partition=SAMPLE_PER_PARTITION,
            timeout_s=job.config.broker_timeout,
        )
        schema = found[kind] = infer_json_schema(kind, sample, label=label)
        check_schema(schema, label)
        logger.info(
            "event kind %s: fields inferred from %d JSON records: %s (give %s=path.avsc to "
            "fix them)",
            kind,
            len(sample),
            ", ".join(f"{f['name']} {f['type']}" for f in schema.raw["fields"]),
            kind,
        )
    _check_event_time(job.config, {k for _, k in job.inputs}, {**job.schemas, **found})
    return found


def _take_lease(job: JobPlan) -> Lease:
    """Hold the job's lease (exit 2 if another run of the job is live): before anything of
    the job is written, the checkpoint manifest included."""
    c = job.config
    return Lease.take(
        KeeperSettings(
            client=dict(job.client),
            job=job.job,
            topic=job.lease_topic,
            timing=Timing(
                float(c.lease_timeout),
                float(delivery_timeout_s(c.lease_timeout, c.broker_timeout)),
            ),
            broker_timeout_s=float(c.broker_timeout),
            me=RunIdentity.here(),
        )
    )


def run_job(config: RunConfig, *, out: TextIO) -> RunReport:
    """Run one backtest to the end (see the module docstring); raise on any failure."""
    job_started = time.monotonic()
    job_id: str = config.require("job_id")
    metrics = JobMetrics(job=job_id, pipeline=config.pipeline or "", executor=config.executor)
    stats = RunStats(config.executor)
    success = False
    try:
        report = _run_job(config, out, metrics, stats, job_started)
        success = True
        return report
    except StallError as exc:
        metrics.stalled("worker")
        raise WatchdogError(
            f"{exc} (if a phase of an epoch legitimately takes that long, raise "
            f"{setting('stall_timeout').label})",
            process="worker",
        ) from exc
    except WatchdogError as exc:
        metrics.stalled(exc.process)
        raise
    except KafkaException as exc:
        # A client call that gave up (the broker went away between two steps of start-up).
        raise BrokerError(f"the broker did not answer: {exc.args[0] if exc.args else exc}") from exc
    finally:
        if not success:
            metrics.finish(success=False, seconds=stats.seconds)
        if config.pushgateway:
            try:
                metrics.push(config.pushgateway, job=job_id)
            except ConnectorError as exc:
                # The replay's outcome stands; a lost push must not make the Job run again.
                logger.error("%s", exc)


def _check_inputs(job: JobPlan, ranges: Sequence[PartitionRange] | None, restarted: bool) -> None:
    """Every input topic (and partition of ``ranges``, when given) exists (ConfigError naming
    the missing ones otherwise): before anything is created or written, so that a wiped
    cluster or a deleted topic is not mistaken for a slow broker, and an unreachable broker
    fails within ``broker_timeout`` naming what it could not do."""
    topics = sorted({t for t, _ in job.inputs} if ranges is None else {r.topic for r in ranges})
    with KafkaOffsets(job.client, timeout_s=job.config.broker_timeout) as client:
        try:
            found = client.partitions(topics)
        except ConfigError as exc:
            why = (
                f"; job {job.job} restarted from its checkpoints, which pin offset ranges on "
                "them: was the cluster wiped, or were they deleted? Recreate them with the same "
                "records, or start over with a new job id"
                if restarted
                else ""
            )
            raise ConfigError(setting("inputs").label, f"{exc.message}{why}") from exc
    if ranges is None:
        return
    gone = [f"{r.topic}/{r.partition}" for r in ranges if r.partition not in found[r.topic]]
    if gone:
        raise ConfigError(
            setting("inputs").label,
            f"input partitions {gone} do not exist any more"
            + (
                f"; job {job.job}'s checkpoints pin offset ranges on them: recreate the topics "
                "with the same records, or start over with a new job id"
                if restarted
                else ""
            ),
        )


def _run_job(
    config: RunConfig, out: TextIO, metrics: JobMetrics, stats: RunStats, job_started: float
) -> RunReport:
    # A coordinator killed (out of memory) leaves its shared-memory files: reclaim them first.
    sweep_stale()
    job = build_job(config)
    # Resolved (and refused, exit 2) before the job takes its lease or touches a topic.
    config = replace(
        config,
        input_reader=input_reader(config.input_reader, job.client),
        output_writer=output_writer(config.output_writer, job.client),
    )
    registry = registry_client(config)
    pinned = _pinned(job)
    if pinned.done is not None:
        report = _already_finished(job, pinned.done, metrics, stats, job_started)
        if report is not None:
            return report
        pinned = _pinned(job, finished=False)
    if pinned.inferred:
        job = replace(job, schemas={**job.schemas, **pinned.inferred})
    lease = _take_lease(job)
    try:
        report = _run_holding(
            config, job, pinned, registry, lease, metrics, stats, job_started, out=out
        )
    except BaseException as exc:
        _release_after_failure(lease, exc)
        raise
    lease.release()  # RefusedError (exit 2) if another run took the job over meanwhile
    return report


def _release_after_failure(lease: Lease, exc: BaseException) -> None:
    """Release the lease of a failed run (the sink process is stopped, dead letters are
    delivered or dropped), so that a retry starts at once.

    A run that lost its lease meanwhile ends refused (exit 2) whatever else it saw: its other
    errors (typically its output checks finding the records of the run that took over) follow
    from the takeover, and a Job's retry of it would only be refused again."""
    try:
        lease.release()
    except RefusedError as refusal:
        if isinstance(exc, RefusedError) or not isinstance(exc, Exception):
            return
        logger.error(
            "job %s: another run took the job over meanwhile; this run then failed with: %s",
            lease.settings.job,
            exc,
        )
        raise refusal from exc
    except ConnectorError as error:
        logger.warning("%s", error)


def _run_holding(
    config: RunConfig,
    job: JobPlan,
    pinned: _Pinned,
    registry: Any,
    lease: Lease,
    metrics: JobMetrics,
    stats: RunStats,
    job_started: float,
    *,
    out: TextIO,
) -> RunReport:
    producers = _Producers(config, metrics)
    producers.gate = lease.gate
    marks = _Marks(job, producers)
    store = (
        FileCheckpoints(
            config.checkpoint_dir,
            job=job.job,
            every_epochs=config.checkpoint_every_epochs,
            every_seconds=config.checkpoint_every_seconds,
            keep=config.checkpoint_keep,
            before_save=lambda: producers.flush(mark=True),
            # A checkpoint need not stop the run while the sink process drains: its snapshot
            # is written once the output before it is delivered.
            flush_then=producers.flush_then,
            metrics=metrics,
            output_marks=marks,
        )
        if config.checkpoint_dir
        else None
    )
    if config.restart_from_scratch:
        _start_over(job, store, pinned.restarted)
    ranges = pinned.ranges
    if config.output_headers == "none" and not pinned.restarted:
        # Before the manifest makes the topics the job's own (connector.output.topics).
        refuse_filled_outputs(
            job.client,
            [topic for _, topic, _ in job.outputs],
            setting=setting("output_headers").label,
        )
    if store is not None and not pinned.restarted:
        store.write_manifest(pinned.manifest(job.job))
    logger.info(
        "input ranges: %d records in %d partitions",
        sum(r.records for r in ranges),
        len(ranges),
        extra={
            "fields": {"ranges": [f"{r.topic}/{r.partition}:[{r.start},{r.end})" for r in ranges]}
        },
    )
    metrics.set_ranges((r.topic, r.partition, r.start, r.end) for r in ranges)
    snapshot = store.latest() if store is not None else None
    if store is not None and snapshot is not None:
        marks.resumed = _resumed_marks(store, snapshot, job)
    todo = resume_ranges(ranges, snapshot)
    if snapshot is not None:
        metrics.resumed(
            snapshot.position.seq, sum(a.start - b.start for a, b in zip(todo, ranges, strict=True))
        )
    server: MetricsServer | None = None
    if config.metrics_port:
        server = metrics.serve(config.metrics_port, config.metrics_host)
    restore_signal = _on_sigterm(store)
    failed = True
    try:
        by_topic = ResolvedRanges(ranges).by_topic()
        partitions = config.output_partitions or max(
            (len(parts) for parts in by_topic.values()), default=1
        )
        out_topics = [
            OutputTopic(topic, partitions, setting("outputs").label) for _, topic, _ in job.outputs
        ]
        headerless = (
            Headerless(pinned.restarted, marks.resumed, setting("output_headers").label)
            if config.output_headers == "none"
            else None
        )
        if snapshot is not None:
            # Before any topic is created or any record skipped: a lost topic must not come
            # back empty and be resumed into.
            verify_outputs(
                job.client,
                marks.resumed,
                job=job.job,
                seq=snapshot.position.seq,
                headerless=[t.topic for t in out_topics] if headerless is not None else (),
            )
        resume, counts = prepare_outputs(
            job.client,
            out_topics,
            dead_letter=OutputTopic(
                job.dead_letter_topic,
                1,
                setting("dead_letter_topic").label,
            ),
            job=job.job,
            replication_factor=config.output_replication_factor,
            headerless=headerless,
        )
        marks.topics = dict(counts)
        bad = BadRecords(
            config.on_bad_record,
            job=job.job,
            topic=job.dead_letter_topic,
            producer=producers,
            metrics=metrics,
            # Always, not only when outputs or a snapshot show an earlier attempt: one that
            # failed before its sink delivered anything (exit 1) has still flushed its dead
            # letters on the way out, and its rerun wrote them all a second time.
            already=dead_lettered_offsets(job.client, job.dead_letter_topic, job.job),
            limit=BadRecordLimit.parse(config.max_bad_records),
            max_bytes=dead_letter_limit(job.client, job.dead_letter_topic, producers.overrides),
        )
        inputs = {
            topic: TopicInput(
                topic,
                kind,
                value_decoder(
                    config.value_format,
                    job.schemas[kind],
                    key_format=job.key_format,  # type: ignore[arg-type]
                    # The value's "ts" is dropped (the record timestamp is the event time)
                    # unless it is the event time.
                    exclude=() if config.event_time.get(kind) == "ts" else ("ts",),
                    # Picklable, for the ray executor's reader actors (each makes a client).
                    registry=None if registry is None else RegistryLookup(config),
                ),
                config.event_time.get(kind),
            )
            for topic, kind in job.inputs
        }
        targets = {
            stream: _output_target(job, stream, topic, schema, counts[topic], registry)
            for stream, topic, schema in job.outputs
        }
        progress = Progress(metrics, config.progress, out)
        sink_settings = SinkSettings(
            producers.bootstrap,
            producers.overrides,
            targets,
            job.job,
            resume,
            gate=lease.gate,
            client=job.client,
            headers=config.output_headers,
            writer=output_writer(config.output_writer, job.client),
            write_timeout_s=delivery_timeout_s(config.lease_timeout, config.broker_timeout),
        )
        actors = _ray_sink_actors(config, targets) if config.executor == "ray" else 0
        sink: SinkProcess | RaySinks
        if actors:
            sink = producers.sink = RaySinks(
                sink_settings,
                actors=actors,
                metrics=metrics,
                stats=stats,
                on_epoch=lambda _epoch: progress.update(),
                # No heartbeats: a call may take as long as a sink process's step may.
                timeout_s=config.broker_timeout + config.stall_timeout,
                # As long as the gate itself waits for a renewal.
                lease_wait_s=float(config.lease_timeout + config.broker_timeout),
            )
        else:
            # Before any Kafka client of the run exists here, so that the child can be forked.
            sink = producers.sink = SinkProcess(
                sink_settings,
                processes=sink_process_count(
                    config.sink_processes, targets, usable_cpus_here(), _workers(config)
                ),
                metrics=metrics,
                stats=stats,
                on_epoch=lambda _epoch: progress.update(),
                timeout_s=config.stall_timeout,
                # Its producer gives up on a lost broker after broker_timeout: no step of its
                # lasts much longer.
                busy_limit_s=config.broker_timeout + config.stall_timeout,
            )
        source = KafkaSource(
            {**job.client, "error_cb": _broker_errors(metrics, "consumer")},
            todo,
            inputs,
            bad,
            job=job.job,
            metrics=metrics,
            # No records for broker_timeout: the broker is gone; for stall_timeout: stuck.
            stall_timeout_s=min(config.broker_timeout, config.stall_timeout),
            reading=lambda: stats.reading,
            reader=input_reader(config.input_reader, job.client),
        )
        metrics.start_clock()
        started = time.monotonic()
        # The whole range, not what is left: a resume must choose the size it was taken with.
        executor = _executor(config, sum(r.records for r in ranges))
        with replay_collection():
            executor.run(job.plan, source, sink, stats=stats, checkpoints=store, resume=snapshot)
            # With checkpoints, the last flush marks the output too: the done marker's.
            producers.flush(mark=store is not None)
        for what, spent in source.seconds.items():
            stats.add_time(f"{STAGE_PREFIX}{what}", spent)
        if store is not None:
            store.write_done(
                DoneMarker(
                    job.job,
                    fingerprint(pinned.parts),
                    _now(),
                    (0 if snapshot is None else snapshot.position.seq) + stats.events,
                    marks(),
                )
            )
        wall = time.monotonic() - started
        for topic, n in sink.skipped.items():
            metrics.output_skipped(topic, n)
        metrics.finish(success=True, seconds=stats.seconds)
        failed = False
        progress.update(final=True)
        snap = metrics.snapshot()
        return RunReport(
            job=job.job,
            events=stats.events,
            outputs=dict(sink.written),
            skipped=dict(sink.skipped),
            bad_records=dict(bad.counts),
            wall_seconds=wall,
            event_time_span_s=snap.event_time_span_s,
            stats=stats,
            resumed_from=None if snapshot is None else snapshot.position.seq,
            checkpoints=0 if store is None else store.saved,
            checkpoint_seconds=0.0 if store is None else store.seconds,
            checkpoint_bytes=0 if store is None else store.last_bytes,
            first_output_s=None
            if sink.first_write_at is None
            else sink.first_write_at - job_started,
        )
    finally:
        restore_signal()
        marks.close()
        if producers.sink is not None:
            producers.sink.close()
        if failed:
            # Records still queued for a run that failed (or lost its lease) must not go out.
            producers.drop_queued()
        if server is not None:
            server.close()


def _on_sigterm(store: FileCheckpoints | None) -> Any:
    """Handle SIGTERM for the run (main thread only); returns the undo function."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    asked: list[int] = []

    def on_term(signum: int, frame: object) -> None:
        if store is None or asked:
            raise Terminated("stopped by SIGTERM; run the job again to start over or resume")
        asked.append(signum)
        logger.warning("SIGTERM: checkpointing after the next epoch, then stopping")
        store.request_stop()

    previous = signal.signal(signal.SIGTERM, on_term)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _output_schema_id(
    registry: Any, topic: str, schema: AvroSchema, config: RunConfig
) -> int | None:
    if config.output_format != "avro-confluent":
        return None
    from connector.serde.schema_registry import register_value_schema

    return register_value_schema(registry, topic, schema)
