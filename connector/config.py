"""The job's configuration: one table of settings read from flags, environment and a YAML file.

Every setting of ``restream run`` (and ``restream positions``) has three spellings, all derived
from one :class:`Setting` row of :data:`SETTINGS`::

    YAML key         flag                 environment variable
    start            --start              RESTREAM_START
    on_bad_record    --on-bad-record      RESTREAM_ON_BAD_RECORD
    kafka            --kafka KEY=VALUE    RESTREAM_KAFKA_<KEY>  (e.g. RESTREAM_KAFKA_SASL_PASSWORD)

Precedence: flag > environment > file (``--config job.yaml`` / ``RESTREAM_CONFIG``) > default.
List settings (``inputs``) take a YAML list or mapping, repeated flags, or a comma-separated
environment value; mapping settings (``schemas``) take ``NAME=VALUE`` pairs the same ways.

Kafka client settings pass through to librdkafka unchanged (``security.protocol``,
``sasl.*``, ``ssl.*``, ...). An environment variable ``RESTREAM_KAFKA_SASL_PASSWORD`` sets
``sasl.password``: underscores become dots after the prefix. Values of secret settings never
appear in logs, metrics or error messages (:func:`redacted`).

Validation happens here, before anything touches a broker, and every error names the setting
in all three spellings (:attr:`Setting.label`) so the user finds it wherever it was set.

The table is the only place a setting's default, choices (from the ``Literal`` aliases below,
which serde imports too), minimum and help are written: :class:`RunConfig`'s field defaults,
the flags and their ``--help``, the YAML keys and the checks derive from it. ``job_id``,
``bootstrap_servers`` and ``pipeline`` are ``required``: ``restream run`` exits 2 naming the
one missing (:meth:`RunConfig.require`); there is no default pipeline.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

import yaml

from connector.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "KAFKA_ENV_PREFIX",
    "KEY_FORMATS",
    "SETTINGS",
    "VALUE_FORMATS",
    "BadRecordLimit",
    "BadRecordPolicy",
    "ExecutorName",
    "InputReaderChoice",
    "KeyFormat",
    "LogFormat",
    "LogLevel",
    "OutputHeaders",
    "OutputWriter",
    "ProgressMode",
    "RunConfig",
    "Setting",
    "ValueFormat",
    "add_settings_arguments",
    "config_from_args",
    "env_name",
    "is_secret_key",
    "load_config",
    "redacted",
    "setting",
]

ENV_PREFIX = "RESTREAM_"
KAFKA_ENV_PREFIX = "RESTREAM_KAFKA_"


def env_name(flag: str) -> str:
    """The environment variable of a flag or setting, in every command: ``RESTREAM_<FLAG>``
    (``--jitter-ms`` and ``jitter_ms`` -> ``RESTREAM_JITTER_MS``)."""
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


#: Formats of record values (``value_format``, ``output_format``); serde imports them from here.
ValueFormat = Literal["avro", "avro-confluent", "json"]
#: What input keys must be (``key_format``).
KeyFormat = Literal["decimal", "string", "any"]
VALUE_FORMATS: tuple[ValueFormat, ...] = get_args(ValueFormat)
KEY_FORMATS: tuple[KeyFormat, ...] = get_args(KeyFormat)
BadRecordPolicy = Literal["dead-letter", "fail"]
#: What ``restream.*`` headers output records carry (``output_headers``).
OutputHeaders = Literal["full", "compact", "none"]
#: What writes output records (``output_writer``).
OutputWriter = Literal["auto", "native", "librdkafka"]
#: What reads input records (``input_reader``).
InputReaderChoice = Literal["auto", "native", "librdkafka"]
ExecutorName = Literal["parallel", "batch", "serial", "ray"]
ProgressMode = Literal["auto", "bar", "log", "none"]
LogFormat = Literal["auto", "json", "text"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
SettingKind = Literal["str", "int", "float", "choice", "list", "mapping", "bool"]

_SECRET_WORDS = ("password", "secret", "token", "jaas", "user.info", "basic.auth", "key.pem")
_RAY_ADDRESS = re.compile(r"auto|local|(ray://)?[^\s/:]+:\d{1,5}")
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


@dataclass(frozen=True, slots=True)
class Setting:
    """One configuration setting and its three spellings."""

    name: str
    kind: SettingKind
    help: str
    default: Any = None
    choices: tuple[str, ...] = ()
    secret: bool = False
    metavar: str | None = None
    #: Smallest value an ``int`` setting accepts.
    minimum: int | None = None
    #: ``restream run`` refuses to start without it (exit 2 naming the setting).
    required: bool = False

    @property
    def flag(self) -> str:
        """The command-line flag, ``--on-bad-record``."""
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        """The environment variable, ``RESTREAM_ON_BAD_RECORD``."""
        return env_name(self.name)

    @property
    def env_help(self) -> str:
        """The environment variable as ``--help`` shows it (``RESTREAM_KAFKA_<KEY>``)."""
        return KAFKA_ENV_PREFIX + "<KEY>" if self.name == "kafka" else self.env

    @property
    def label(self) -> str:
        """How error messages name the setting: ``start (--start, RESTREAM_START)``."""
        return f"{self.name} ({self.flag}, {self.env_help})"

    def help_text(self) -> str:
        """The ``--help`` line: the help, then env, choices, default, required, secret."""
        notes = [f"env {self.env_help}"]
        if self.choices:
            notes.append("one of " + ", ".join(self.choices))
        if self.default not in (None, "", ()) and self.default is not False:
            notes.append(f"default {self.default}")
        if self.required:
            notes.append("required")
        if self.secret:
            notes.append("secret: never logged")
        return f"{self.help} [{'; '.join(notes)}]"

    def missing(self) -> ConfigError:
        """The error for a required setting that was not given."""
        return ConfigError(self.label, "is required")

    def dataclass_default(self) -> Any:
        """The default of :class:`RunConfig`'s field for this setting (``field(...)``)."""
        if self.kind == "mapping":
            # ``kafka`` holds secrets among other keys: never in a repr (summary() masks them).
            shown = not self.secret and self.name != "kafka"
            return field(default_factory=lambda: MappingProxyType({}), repr=shown)
        if self.kind == "list":
            return field(default=(), repr=not self.secret)
        return field(default=self.default, repr=not self.secret)


def _s(name: str, kind: SettingKind, help_text: str, default: Any = None, **kw: Any) -> Setting:
    return Setting(name, kind, help_text, default, **kw)


#: Every setting, in the order ``--help`` shows them.
SETTINGS: tuple[Setting, ...] = (
    _s(
        "job_id",
        "str",
        "name of this backtest; output topics and checkpoints belong to it",
        required=True,
    ),
    _s(
        "bootstrap_servers",
        "str",
        "Kafka bootstrap servers, host:port[,host:port]",
        required=True,
    ),
    _s(
        "pipeline",
        "str",
        "the logic to replay: a built-in pipeline name (social-spam: the demo's spam rules), "
        "path/to/file.py:ATTRIBUTE or package.module:ATTRIBUTE (from the working directory); "
        "the attribute is a Pipeline or a function returning one",
        required=True,
    ),
    _s(
        "inputs",
        "list",
        "input topic and the event kind its records are, TOPIC=KIND (repeat for several); "
        "default: the pipeline's own inputs",
        metavar="TOPIC=KIND",
    ),
    _s(
        "start",
        "str",
        "where to start: earliest | offsets:TOPIC/P=OFFSET,... | ts:ISO-8601|EPOCH_MS | group:NAME",
        "earliest",
    ),
    _s("end", "str", "where to stop: latest | offsets:TOPIC/P=OFFSET,... | ts:...", "latest"),
    _s(
        "value_format",
        "choice",
        "format of input values",
        "avro",
        choices=VALUE_FORMATS,
    ),
    _s(
        "key_format",
        "choice",
        "what input keys must be (others are bad records); default: the pipeline's",
        choices=KEY_FORMATS,
    ),
    _s(
        "schemas",
        "mapping",
        "Avro schema of each event kind: KIND=NAME (under schemas/) or KIND=path.avsc",
        metavar="KIND=SCHEMA",
    ),
    _s(
        "event_time",
        "mapping",
        "event time of a kind from a value field, KIND=FIELD (epoch ms, or ISO-8601 text; UTC "
        "without an offset), instead of the Kafka record timestamp (the default); it orders "
        "the log, feeds the windows and is the output records' timestamp",
        metavar="KIND=FIELD",
    ),
    _s(
        "input_reader",
        "choice",
        "what reads the input: native (Fetch requests read into columns by compiled loops, "
        "no per-record objects; plaintext), librdkafka (the Kafka client; TLS, SASL), auto "
        "(native unless the kafka settings ask for TLS or SASL)",
        "auto",
        choices=get_args(InputReaderChoice),
    ),
    _s("schema_registry_url", "str", "Schema Registry URL (formats avro-confluent)"),
    _s(
        "schema_registry_basic_auth",
        "str",
        "Schema Registry credentials USER:PASSWORD",
        secret=True,
    ),
    _s("schema_registry_ca_location", "str", "CA bundle that signs the Schema Registry's TLS"),
    _s("schema_registry_cert_location", "str", "client certificate for the Schema Registry"),
    _s("schema_registry_key_location", "str", "client key for the Schema Registry"),
    _s(
        "outputs",
        "mapping",
        "topic of each output stream, STREAM=TOPIC; default: JOB_ID.STREAM",
        metavar="STREAM=TOPIC",
    ),
    _s(
        "output_schemas",
        "mapping",
        "Avro schema of each output stream, STREAM=SCHEMA; default: the pipeline's",
        metavar="STREAM=SCHEMA",
    ),
    _s(
        "output_format",
        "choice",
        "format of output values",
        "avro",
        choices=VALUE_FORMATS,
    ),
    _s(
        "output_headers",
        "choice",
        "headers of output records: full (restream.seq, restream.source, restream.job), "
        "compact (one 'restream' header: seq and job id), none (no headers; a resume then "
        "needs the job's checkpoints)",
        "full",
        choices=get_args(OutputHeaders),
    ),
    _s(
        "output_writer",
        "choice",
        "what writes the output: native (record batches built from columns and sent over "
        "Kafka's protocol, several times faster; plaintext, uncompressed), librdkafka (the "
        "Kafka client; TLS, SASL, compression), auto (native unless the kafka settings ask for "
        "TLS, SASL or compression)",
        "auto",
        choices=get_args(OutputWriter),
    ),
    _s(
        "output_partitions",
        "int",
        "partitions of output topics created by the job; default: the inputs' largest count",
        minimum=1,
    ),
    _s(
        "output_replication_factor",
        "int",
        "replication factor of topics the job creates; -1: the broker's default",
        -1,
        minimum=-1,
    ),
    _s("dead_letter_topic", "str", "topic for bad input records; default: JOB_ID.dead-letter"),
    _s(
        "on_bad_record",
        "choice",
        "what to do with an undecodable record",
        "dead-letter",
        choices=get_args(BadRecordPolicy),
    ),
    _s(
        "max_bad_records",
        "str",
        "fail the job (exit 1) once more input records than this are bad: a count N, or a "
        "share P% of the records read (checked from 10,000 records on and at the end)",
        "50%",
        metavar="N|P%",
    ),
    _s("executor", "choice", "how to run the pipeline", "parallel", choices=get_args(ExecutorName)),
    _s(
        "workers",
        "int",
        "worker processes of the parallel executor (actors of the ray executor); 0: one per CPU "
        "the pod may use (its cgroup CPU quota, rounded up, within its CPU affinity set), or "
        "for ray one per CPU of the Ray cluster",
        0,
        minimum=0,
    ),
    _s(
        "ray_address",
        "str",
        "the Ray cluster of the ray executor: HOST:PORT, ray://HOST:PORT, auto or local; "
        "empty: ray.init's own choice (RAY_ADDRESS, else a cluster started for the run)",
        "",
        metavar="ADDRESS",
    ),
    _s(
        "ray_readers",
        "int",
        "reader actors of the ray executor, each reading and decoding a share of the input "
        "partitions on its node (the driver merges only their sort keys); 0: one per node the "
        "workers run on when they span several nodes, none on one node (the driver reads); "
        "never more than the input partitions",
        0,
        minimum=0,
    ),
    _s(
        "ray_sinks",
        "int",
        "sink actors of the ray executor, each writing a share of the output partitions on "
        "its node from the workers' output, which the driver never fetches; 0: one per node "
        "of the Ray cluster that has CPUs when there are several, none on one node (the "
        "driver's sink processes write); never more than the output partitions",
        0,
        minimum=0,
    ),
    _s(
        "epoch_size",
        "int",
        "events per epoch (the unit of parallel work); 0: 125,000 per worker, within "
        "250,000..2,000,000",
        0,
        minimum=0,
    ),
    _s(
        "sink_processes",
        "int",
        "processes that write the output, each owning a share of the output partitions; 0: "
        "one per 4 CPUs the pod may use (at least 1), at most one per worker and per output "
        "partition",
        0,
        minimum=0,
    ),
    _s(
        "checkpoint_dir",
        "str",
        "directory (a mounted volume) for checkpoints; a restarted job resumes from them",
    ),
    _s("checkpoint_every_epochs", "int", "checkpoint after this many epochs", 10, minimum=1),
    _s(
        "checkpoint_every_seconds",
        "int",
        "or after this many seconds, whichever is first",
        60,
        minimum=1,
    ),
    _s("checkpoint_keep", "int", "checkpoints kept (older ones are deleted)", 2, minimum=1),
    _s(
        "restart_from_scratch",
        "bool",
        "start the job over: delete its checkpoints and its output and dead-letter topics "
        "(only if they hold nothing but this job's records), then run from the first record; "
        "for a one-off run, not a standing setting",
        False,
    ),
    _s(
        "broker_timeout",
        "int",
        "seconds a broker may stay unreachable (retrying) before the job fails with exit 1",
        120,
        minimum=1,
    ),
    _s(
        "stall_timeout",
        "int",
        "seconds a process of the run (a worker, the sink process, the reader) may make no "
        "progress while the run waits for it; then the job fails with exit 1 naming it",
        300,
        minimum=1,
    ),
    _s(
        "lease_timeout",
        "int",
        "seconds without a sign of life after which another run of the same job id takes "
        "over its lease (a run renews it every sixth of this); half of it, at most "
        "broker_timeout, is also the most an output record may wait for the broker",
        60,
        minimum=6,
    ),
    _s(
        "lease_topic", "str", "topic holding the job's lease (one partition); default: JOB_ID.lease"
    ),
    _s(
        "metrics_port",
        "int",
        "serve Prometheus metrics on this TCP port (up to 65535) while running; 0: off",
        0,
        minimum=0,
    ),
    _s("metrics_host", "str", "address the metrics server binds", "0.0.0.0"),
    _s("pushgateway", "str", "push final metrics to this Prometheus Pushgateway URL"),
    _s(
        "progress",
        "choice",
        "progress display: bar on a TTY, log lines otherwise",
        "auto",
        choices=get_args(ProgressMode),
    ),
    _s(
        "log_format",
        "choice",
        "log lines: text on a TTY, JSON otherwise",
        "auto",
        choices=get_args(LogFormat),
    ),
    _s(
        "log_level",
        "choice",
        "log level",
        "INFO",
        choices=get_args(LogLevel),
    ),
    _s(
        "kafka",
        "mapping",
        "librdkafka client setting KEY=VALUE for every client (SASL, TLS, ...); "
        "env RESTREAM_KAFKA_<KEY> with dots as underscores",
        metavar="KEY=VALUE",
    ),
)
_BY_NAME = {s.name: s for s in SETTINGS}


def setting(name: str) -> Setting:
    """The row of :data:`SETTINGS` called ``name`` (``setting("start").label`` in messages)."""
    return _BY_NAME[name]


def _default(name: str) -> Any:
    """:class:`RunConfig`'s default for a setting: the table's, never restated."""
    return _BY_NAME[name].dataclass_default()


@dataclass(frozen=True, slots=True)
class RunConfig:
    """A validated job configuration (see the module docstring for where each value comes from).

    One field per row of :data:`SETTINGS`, in its order, whose default is the row's (the
    annotations are the types; choices come from the same ``Literal`` aliases as the rows').
    ``None`` means "not given": the run fills it from the pipeline's profile or the job id, or
    refuses to start for a ``required`` setting (:meth:`require`).
    """

    job_id: str | None = _default("job_id")
    bootstrap_servers: str | None = _default("bootstrap_servers")
    pipeline: str | None = _default("pipeline")
    inputs: tuple[tuple[str, str], ...] = _default("inputs")
    start: str = _default("start")
    end: str = _default("end")
    value_format: ValueFormat = _default("value_format")
    key_format: KeyFormat | None = _default("key_format")
    schemas: Mapping[str, str] = _default("schemas")
    event_time: Mapping[str, str] = _default("event_time")
    input_reader: InputReaderChoice = _default("input_reader")
    schema_registry_url: str | None = _default("schema_registry_url")
    schema_registry_basic_auth: str | None = _default("schema_registry_basic_auth")
    schema_registry_ca_location: str | None = _default("schema_registry_ca_location")
    schema_registry_cert_location: str | None = _default("schema_registry_cert_location")
    schema_registry_key_location: str | None = _default("schema_registry_key_location")
    outputs: Mapping[str, str] = _default("outputs")
    output_schemas: Mapping[str, str] = _default("output_schemas")
    output_format: ValueFormat = _default("output_format")
    output_headers: OutputHeaders = _default("output_headers")
    output_writer: OutputWriter = _default("output_writer")
    output_partitions: int | None = _default("output_partitions")
    output_replication_factor: int = _default("output_replication_factor")
    dead_letter_topic: str | None = _default("dead_letter_topic")
    on_bad_record: BadRecordPolicy = _default("on_bad_record")
    max_bad_records: str = _default("max_bad_records")
    executor: ExecutorName = _default("executor")
    workers: int = _default("workers")
    ray_address: str = _default("ray_address")
    ray_readers: int = _default("ray_readers")
    ray_sinks: int = _default("ray_sinks")
    epoch_size: int = _default("epoch_size")
    sink_processes: int = _default("sink_processes")
    checkpoint_dir: str | None = _default("checkpoint_dir")
    checkpoint_every_epochs: int = _default("checkpoint_every_epochs")
    checkpoint_every_seconds: int = _default("checkpoint_every_seconds")
    checkpoint_keep: int = _default("checkpoint_keep")
    restart_from_scratch: bool = _default("restart_from_scratch")
    broker_timeout: int = _default("broker_timeout")
    stall_timeout: int = _default("stall_timeout")
    lease_timeout: int = _default("lease_timeout")
    lease_topic: str | None = _default("lease_topic")
    metrics_port: int = _default("metrics_port")
    metrics_host: str = _default("metrics_host")
    pushgateway: str | None = _default("pushgateway")
    progress: ProgressMode = _default("progress")
    log_format: LogFormat = _default("log_format")
    log_level: LogLevel = _default("log_level")
    kafka: Mapping[str, str] = _default("kafka")

    def __post_init__(self) -> None:
        _validate(self)

    def require(self, name: str) -> Any:
        """The value of a setting that must be given; ConfigError naming it otherwise."""
        value = getattr(self, name)
        if value is None or value == "":
            raise _BY_NAME[name].missing()
        return value

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings shared by every client of the job."""
        return {**self.kafka, "bootstrap.servers": self.require("bootstrap_servers")}

    def summary(self) -> dict[str, Any]:
        """The settings as a dict with secrets masked (for logs and ``--dry-run``)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "kafka":
                value = redacted(value)
            elif _BY_NAME[f.name].secret and value is not None:
                value = "***"
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out


_BAD_LIMIT = re.compile(r"^\s*(\d+)\s*$|^\s*(\d+(?:\.\d+)?)\s*%\s*$")


@dataclass(frozen=True, slots=True)
class BadRecordLimit:
    """``max_bad_records``: at most ``count`` bad records, or at most ``percent`` % of the
    records read (``100%`` never fails)."""

    count: int | None = None
    percent: float | None = None

    #: A share is judged only from this many records read on (and always at the end), so
    #: that a burst of bad records at the start of a long job does not stop it.
    MIN_RECORDS_FOR_SHARE = 10_000

    @classmethod
    def parse(cls, text: str) -> BadRecordLimit:
        """``"N"`` or ``"P%"``; ValueError saying what is wrong otherwise."""
        m = _BAD_LIMIT.match(text)
        if m is None:
            raise ValueError(f"{text!r} is not a count N (e.g. 1000) or a share P% (e.g. 5%)")
        if m.group(1) is not None:
            return cls(count=int(m.group(1)))
        percent = float(m.group(2))
        if percent > 100:
            raise ValueError(f"{text!r} is a share above 100%")
        return cls(percent=percent)

    def exceeded(self, bad: int, read: int, *, final: bool) -> bool:
        """Whether ``bad`` of ``read`` records break the limit (``final``: the whole input)."""
        if self.count is not None:
            return bad > self.count
        assert self.percent is not None
        if not final and read < self.MIN_RECORDS_FOR_SHARE:
            return False
        return read > 0 and bad * 100 > self.percent * read

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{self.percent:g}%"


def is_secret_key(key: str) -> bool:
    """Whether a Kafka client setting holds a secret (its value is never shown)."""
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS) or lowered.endswith(".key")


def redacted(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` with the values of secret keys replaced by ``***``."""
    return {k: ("***" if is_secret_key(k) else v) for k, v in settings.items()}


def _validate(c: RunConfig) -> None:
    def bad(name: str, message: str) -> ConfigError:
        return ConfigError(_BY_NAME[name].label, message)

    if c.job_id is not None and not _JOB_ID.fullmatch(c.job_id):
        raise bad(
            "job_id",
            f"{c.job_id!r} must be 1-200 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (it names topics and checkpoint files)",
        )
    for s in SETTINGS:
        value = getattr(c, s.name)
        if s.minimum is not None and value is not None and value < s.minimum:
            raise bad(s.name, f"must be >= {s.minimum}, got {value}")
    if c.metrics_port > 65535:
        raise bad("metrics_port", f"must be a TCP port (0-65535), got {c.metrics_port}")
    if c.checkpoint_dir is not None and c.executor == "serial":
        raise bad(
            "checkpoint_dir", "the serial executor cannot checkpoint; use batch, parallel or ray"
        )
    if c.ray_address and not _RAY_ADDRESS.fullmatch(c.ray_address):
        raise bad(
            "ray_address",
            f"{c.ray_address!r} is not HOST:PORT, ray://HOST:PORT, auto or local",
        )
    if c.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise bad("executor", "the ray executor needs the ray package: pip install 'restream[ray]'")
    try:
        BadRecordLimit.parse(c.max_bad_records)
    except ValueError as exc:
        raise bad("max_bad_records", str(exc)) from None
    if c.output_replication_factor == 0:
        raise bad(
            "output_replication_factor", f"must be -1 or >= 1, got {c.output_replication_factor}"
        )
    topics = [t for t, _ in c.inputs]
    if len(set(topics)) != len(topics):
        raise bad("inputs", f"a topic is listed twice: {topics}")
    for topic, kind in c.inputs:
        if not topic or not kind:
            raise bad("inputs", f"{topic}={kind} needs both a topic and an event kind")
    for kind, name in c.event_time.items():
        if not name:
            raise bad("event_time", f"{kind}= needs a field name: KIND=FIELD")
    fmts = (c.value_format, c.output_format)
    if "avro-confluent" in fmts and not c.schema_registry_url:
        raise bad("schema_registry_url", "is required with the avro-confluent format")
    if c.schema_registry_basic_auth is not None and ":" not in c.schema_registry_basic_auth:
        raise bad("schema_registry_basic_auth", "must be USER:PASSWORD")
    if c.pushgateway is not None and not re.match(
        r"^(https?://)?[^\s/]+(:\d+)?(/.*)?$", c.pushgateway
    ):
        raise bad("pushgateway", "must be a URL such as http://pushgateway:9091")
    if "bootstrap.servers" in c.kafka:
        raise bad("kafka", "set bootstrap.servers with bootstrap_servers, not as a kafka setting")


def _pairs(setting: Setting, items: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(setting.label, f"{item!r} is not {setting.metavar or 'NAME=VALUE'}")
        out.append((key.strip(), value.strip()))
    return out


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})


def _from_text(setting: Setting, text: str) -> Any:
    """Convert a flag's or environment variable's text."""
    if setting.kind == "bool":
        lowered = text.strip().lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
        raise ConfigError(setting.label, f"{text!r} is not true or false")
    if setting.kind == "int":
        try:
            return int(text)
        except ValueError:
            raise ConfigError(setting.label, f"{text!r} is not an integer") from None
    if setting.kind == "choice":
        if text not in setting.choices:
            raise ConfigError(setting.label, f"{text!r} is not one of {', '.join(setting.choices)}")
        return text
    return text


def _from_yaml(setting: Setting, value: Any) -> Any:
    """Convert a YAML value to the setting's type."""
    label = setting.label
    if setting.kind in ("list", "mapping"):
        if isinstance(value, Mapping):
            return [(str(k), "" if v is None else str(v)) for k, v in value.items()]
        if isinstance(value, str):
            return _pairs(setting, [v for v in value.split(",") if v.strip()])
        if isinstance(value, list):
            return _pairs(setting, [str(v) for v in value])
        raise ConfigError(label, f"expected a mapping or a list of {setting.metavar}")
    if setting.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(label, f"{value!r} is not an integer")
        return value
    if setting.kind == "bool":
        if isinstance(value, bool):
            return value
        if not isinstance(value, str):
            raise ConfigError(label, f"{value!r} is not true or false")
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ConfigError(label, f"{value!r} is not a string")
    return _from_text(setting, str(value))


def _read_file(path: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            "config (--config, RESTREAM_CONFIG)", f"cannot read {path}: {exc}"
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(
            "config (--config, RESTREAM_CONFIG)", f"{path} is not YAML: {exc}"
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("config (--config, RESTREAM_CONFIG)", f"{path} must hold a mapping")
    unknown = sorted(set(map(str, data)) - set(_BY_NAME))
    if unknown:
        raise ConfigError(
            "config (--config, RESTREAM_CONFIG)",
            f"{path} has unknown keys {unknown}; known keys: {', '.join(_BY_NAME)}",
        )
    return {str(k): v for k, v in data.items()}


def _env_kafka(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    return [
        (name[len(KAFKA_ENV_PREFIX) :].lower().replace("_", "."), value)
        for name, value in sorted(environ.items())
        if name.startswith(KAFKA_ENV_PREFIX) and value
    ]


def load_config(
    flags: Mapping[str, Any],
    *,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> RunConfig:
    """Merge flags (already-parsed, ``None``/empty when not given), environment and file.

    ``flags`` maps setting names to text values (lists of text for list/mapping settings).
    """
    environ = os.environ if environ is None else environ
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG") or None
    from_file = _read_file(config_file) if config_file else {}
    values: dict[str, Any] = {}
    for s in SETTINGS:
        given = flags.get(s.name)
        if s.kind in ("list", "mapping"):
            layers: list[list[tuple[str, str]]] = []
            if s.name in from_file:
                layers.append(_from_yaml(s, from_file[s.name]))
            env_text = environ.get(s.env, "")
            if s.name == "kafka":
                layers.append(_env_kafka(environ))
            elif env_text:
                layers.append(_pairs(s, [v for v in env_text.split(",") if v.strip()]))
            if given:
                layers.append(_pairs(s, list(given)))
            if s.kind == "list":
                # A list is replaced as a whole by the highest layer that gives one.
                chosen = next((layer for layer in reversed(layers) if layer), [])
                values[s.name] = tuple(chosen)
            else:
                merged: dict[str, str] = {}
                for layer in layers:
                    merged.update(layer)
                values[s.name] = MappingProxyType(merged)
            continue
        if given is not None and given != "":
            values[s.name] = _from_text(s, str(given))
        elif environ.get(s.env, ""):
            values[s.name] = _from_text(s, environ[s.env])
        elif s.name in from_file and from_file[s.name] is not None:
            values[s.name] = _from_yaml(s, from_file[s.name])
    return RunConfig(**values)


def add_settings_arguments(
    parser: argparse.ArgumentParser, *, only: Sequence[str] | None = None
) -> None:
    """Add one flag per setting (or per setting named in ``only``), plus ``--config``."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"YAML file with any of the settings below as keys [env {ENV_PREFIX}CONFIG]",
    )
    for s in SETTINGS:
        if only is not None and s.name not in only:
            continue
        help_text = s.help_text().replace("%", "%%")  # argparse %-formats help
        if s.kind in ("list", "mapping"):
            parser.add_argument(
                s.flag, dest=s.name, action="append", metavar=s.metavar, help=help_text
            )
        elif s.kind == "bool":
            # A switch: given, it is true (its environment variable and YAML key take a value).
            parser.add_argument(
                s.flag, dest=s.name, action="store_const", const="true", help=help_text
            )
        else:
            # A choice shows its values in the usage line too: --executor {parallel,batch,serial}.
            metavar = s.metavar or ("{" + ",".join(s.choices) + "}" if s.choices else None)
            parser.add_argument(s.flag, dest=s.name, metavar=metavar, help=help_text)


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> RunConfig:
    """The :class:`RunConfig` for parsed arguments (see :func:`add_settings_arguments`)."""
    flags = {s.name: getattr(args, s.name, None) for s in SETTINGS}
    return load_config(flags, config_file=getattr(args, "config", None), environ=environ)
