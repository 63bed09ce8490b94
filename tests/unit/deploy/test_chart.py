"""The Helm chart without a helm binary: values against values.schema.json (good ones pass, bad
ones are refused), templates that reference only existing values and pass only what the CLI
accepts, and values documented line by line in values.yaml and the chart README."""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import fastavro
import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.config import SETTINGS, ExecutorName, RunConfig
from connector.errors import ConfigError
from connector.positions.syntax import parse_end, parse_start
from tests.support.deploy import (
    CHART,
    CHART_VALUES,
    CI_VALUES,
    cli_problems,
    env_problems,
    load_documents,
    merge_values,
)

VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES = CHART_VALUES
SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
TEMPLATES = {p.name: p.read_text() for p in (CHART / "templates").iterdir()}
_BY_NAME = {s.name: s for s in SETTINGS}

#: Chart values that are restream settings (rendered into job.yaml), and their setting.
SETTING_OF_VALUE = {
    "jobId": "job_id",
    "kafka.bootstrapServers": "bootstrap_servers",
    "pipeline": "pipeline",
    "inputs": "inputs",
    "start": "start",
    "end": "end",
    "valueFormat": "value_format",
    "keyFormat": "key_format",
    "schemas": "schemas",
    "eventTime": "event_time",
    "inputReader": "input_reader",
    "schemaRegistry.url": "schema_registry_url",
    "schemaRegistry.caFile": "schema_registry_ca_location",
    "schemaRegistry.certFile": "schema_registry_cert_location",
    "schemaRegistry.keyFile": "schema_registry_key_location",
    "outputs": "outputs",
    "outputSchemas": "output_schemas",
    "outputFormat": "output_format",
    "outputHeaders": "output_headers",
    "outputWriter": "output_writer",
    "outputPartitions": "output_partitions",
    "outputReplicationFactor": "output_replication_factor",
    "deadLetterTopic": "dead_letter_topic",
    "onBadRecord": "on_bad_record",
    "maxBadRecords": "max_bad_records",
    "executor": "executor",
    "workers": "workers",
    "epochSize": "epoch_size",
    "ray.readers": "ray_readers",
    "ray.sinks": "ray_sinks",
    "sinkProcesses": "sink_processes",
    "checkpoints.mountPath": "checkpoint_dir",
    "checkpoints.everyEpochs": "checkpoint_every_epochs",
    "checkpoints.everySeconds": "checkpoint_every_seconds",
    "checkpoints.keep": "checkpoint_keep",
    "brokerTimeout": "broker_timeout",
    "stallTimeout": "stall_timeout",
    "leaseTimeout": "lease_timeout",
    "leaseTopic": "lease_topic",
    "metrics.port": "metrics_port",
    "pushgateway": "pushgateway",
    "logLevel": "log_level",
    "kafka.config": "kafka",
}
#: Settings that the chart does not render into job.yaml, and why.
NOT_IN_CONFIG = {
    "schema_registry_basic_auth": "a secret: RESTREAM_SCHEMA_REGISTRY_BASIC_AUTH from the Secret",
    "metrics_host": "restream's default, every address, is what a pod needs",
    "restart_from_scratch": "a one-off action: in a Job every retried pod would start over",
    "ray_address": "a RayJob's driver runs on its cluster's head, where ray.init() finds it",
}
#: Settings the chart fixes for a Job: no TTY, logs collected as JSON lines.
FIXED_IN_CONFIG = {"progress": "log", "log_format": "json"}


def _validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(SCHEMA)


def _errors(overrides: Mapping[str, Any]) -> list[str]:
    return [e.message for e in _validator().iter_errors(merge_values(VALUES, overrides))]


def _lookup(values: Mapping[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        node = node[part]
    return node


def _schema_at(path: str) -> dict[str, Any]:
    node = SCHEMA
    for part in path.split("."):
        node = node["properties"][part]
    return node


# -- values and the schema ------------------------------------------------------------------


def test_schema_is_a_valid_draft7_schema() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert SCHEMA["additionalProperties"] is False


def test_default_values_match_the_schema() -> None:
    _validator().validate(VALUES)


@pytest.mark.parametrize("path", CI_VALUES, ids=lambda p: Path(p).name)
def test_example_values_match_the_schema(path: Path) -> None:
    overrides = load_documents(path.read_text())[0]
    _validator().validate(merge_values(VALUES, overrides))
    merged = merge_values(VALUES, overrides)
    topics = list(merged["inputs"]) or ["social.messages", "social.friendships"]
    parse_start(merged["start"], topics=topics)
    parse_end(merged["end"], topics=topics)
    for name, text in merged["schemaFiles"].items():
        assert fastavro.parse_schema(json.loads(text)), name
    for var in merged["extraEnv"]:
        assert not env_problems([var["name"]]), var


def test_example_values_cover_the_chart() -> None:
    """Between them, the examples turn on every optional part of the chart."""
    examples = [load_documents(p.read_text())[0] for p in CI_VALUES]
    used = {key for example in examples for key in _leaf_paths(example)}
    for key in (
        "credentials.existingSecret",
        "credentials.kafkaSaslPassword",
        "tlsSecret",
        "kafka.caFile",
        "schemaRegistry.url",
        "schemaFiles",
        "metrics.podMonitor.enabled",
        "pushgateway",
        "checkpoints.existingClaim",
        "checkpoints.everyEpochs",
        "checkpoints.everySeconds",
        "checkpoints.keep",
        "brokerTimeout",
        "job.terminationGracePeriodSeconds",
        "nodeSelector",
        "tolerations",
        "affinity",
        "extraEnv",
        "resources.requests.cpu",
        "job.ttlSecondsAfterFinished",
        "ray.workerReplicas",
        "ray.workerCpus",
        "ray.workerResources.requests.memory",
    ):
        assert any(u == key or u.startswith(key + ".") for u in used), key


BAD_VALUES: list[tuple[str, dict[str, Any]]] = [
    ("unknown key", {"worker": 4}),
    ("zero workers", {"workers": 0}),
    ("workers as text", {"workers": "4"}),
    ("fractional workers", {"workers": 2.5}),
    ("unknown value format", {"valueFormat": "protobuf"}),
    ("unknown output format", {"outputFormat": "csv"}),
    ("unknown output headers", {"outputHeaders": "some"}),
    ("unknown output writer", {"outputWriter": "kafka-python"}),
    ("unknown input reader", {"inputReader": "kafka-python"}),
    ("unknown bad-record policy", {"onBadRecord": "skip"}),
    ("bad-record limit in words", {"maxBadRecords": "lots"}),
    ("bad-record limit as a number", {"maxBadRecords": 1000}),
    ("unknown executor", {"executor": "spark"}),
    ("unknown log level", {"logLevel": "TRACE"}),
    ("unknown key format", {"keyFormat": "uuid"}),
    ("latest as a start", {"start": "latest"}),
    ("earliest as an end", {"end": "earliest"}),
    ("a group as an end", {"end": "group:fraud"}),
    ("a start that is no position", {"start": "yesterday"}),
    ("bootstrap without a port", {"kafka": {"bootstrapServers": "kafka"}}),
    ("a password in kafka.config", {"kafka": {"config": {"sasl.password": "hunter2"}}}),
    ("a secret in kafka.config", {"kafka": {"config": {"sasl.oauthbearer.client.secret": "x"}}}),
    ("bootstrap in kafka.config", {"kafka": {"config": {"bootstrap.servers": "k:9092"}}}),
    ("a job id with a space", {"jobId": "my backtest"}),
    ("a job id starting with a dash", {"jobId": "-x"}),
    ("a schema file that is not .avsc", {"schemaFiles": {"Message.json": "{}"}}),
    ("replication factor 0", {"outputReplicationFactor": 0}),
    ("negative partitions", {"outputPartitions": -1}),
    ("metrics port 0", {"metrics": {"port": 0}}),
    ("metrics port too big", {"metrics": {"port": 70000}}),
    ("a pushgateway that is no URL", {"pushgateway": "pushgateway 9091"}),
    ("a digest that is no digest", {"image": {"digest": "latest"}}),
    ("an unknown pull policy", {"image": {"pullPolicy": "Sometimes"}}),
    ("memory that is no quantity", {"resources": {"requests": {"memory": "lots"}}}),
    ("an unknown resource", {"resources": {"limits": {"gpu": "1"}}}),
    ("a zero deadline", {"job": {"activeDeadlineSeconds": 0}}),
    ("running as root", {"podSecurityContext": {"runAsNonRoot": False}}),
    ("root user", {"podSecurityContext": {"runAsUser": 0}}),
    ("privilege escalation", {"securityContext": {"allowPrivilegeEscalation": True}}),
    ("an env var without a name", {"extraEnv": [{"value": "x"}]}),
    ("a scrape interval that is no duration", {"metrics": {"podMonitor": {"interval": "often"}}}),
    ("registry credentials without a colon", {"credentials": {"schemaRegistryBasicAuth": "x"}}),
    ("a relative checkpoint path", {"checkpoints": {"mountPath": "checkpoints"}}),
    ("checkpoints every 0 epochs", {"checkpoints": {"everyEpochs": 0}}),
    ("checkpoints every 0 seconds", {"checkpoints": {"everySeconds": 0}}),
    ("no checkpoint kept", {"checkpoints": {"keep": 0}}),
    ("checkpoint cadence as text", {"checkpoints": {"everySeconds": "60s"}}),
    ("a broker timeout of 0", {"brokerTimeout": 0}),
    ("a stall timeout of 0", {"stallTimeout": 0}),
    ("a negative grace period", {"job": {"terminationGracePeriodSeconds": -1}}),
    ("no Ray worker pods", {"ray": {"workerReplicas": 0}}),
    ("a Ray version that is no version", {"ray": {"version": "latest"}}),
    (
        "a worker CPU request beside workerCpus",
        {"ray": {"workerResources": {"requests": {"cpu": "2"}}}},
    ),
    ("a negative Ray cluster TTL", {"ray": {"ttlSecondsAfterFinished": -1}}),
    (
        "checkpoints with the serial executor",
        {"executor": "serial", "checkpoints": {"existingClaim": "restream-checkpoints"}},
    ),
]


@pytest.mark.parametrize(("why", "overrides"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_values_are_refused(why: str, overrides: dict[str, Any]) -> None:
    assert _errors(overrides), f"the schema accepts {why}: {overrides}"


def test_choices_agree_with_the_cli() -> None:
    for value, setting in SETTING_OF_VALUE.items():
        choices = _BY_NAME[setting].choices
        if choices:
            allowed = set(_schema_at(value)["enum"]) - {""}
            assert allowed == set(choices), (value, allowed, choices)


#: Values whose chart default differs from restream's default for the setting, and why.
OWN_DEFAULTS = {
    "workers": "the pod requests a CPU per worker, and a fixed count resumes anywhere (it is in "
    "the checkpoint's fingerprint; restream's 0 follows the CPU limit, absent when none is set)",
    "metrics.port": "restream's 0 (off) would leave Prometheus nothing to scrape",
}


#: Required settings that the chart fills when the value is empty, and how.
FILLED_BY_THE_CHART = {"job_id": "the release name"}


def test_required_settings_are_required_at_install() -> None:
    """A setting restream requires has an empty chart default, and the chart either fails
    the install without it (``required``) or fills it."""
    helpers = TEMPLATES["_helpers.tpl"]
    for value, name in SETTING_OF_VALUE.items():
        if not _BY_NAME[name].required:
            continue
        assert _lookup(VALUES, value) == "", value
        if name in FILLED_BY_THE_CHART:
            continue
        assert re.search(
            rf'set \$config "{name}" \(required "{re.escape(value)} is required', helpers
        ), value
        assert (
            "(required)" in VALUES_TEXT.split(f"{value.split('.')[-1]}:")[0].rsplit("# --", 1)[-1]
        )


def test_defaults_agree_with_the_cli() -> None:
    for value, setting in SETTING_OF_VALUE.items():
        default = _BY_NAME[setting].default
        if default is None:
            continue
        if value in OWN_DEFAULTS:
            assert _lookup(VALUES, value) != default, f"{value} needs no entry in OWN_DEFAULTS"
        else:
            assert _lookup(VALUES, value) == default, (value, setting, default)


@pytest.mark.parametrize(
    "value",
    [
        "epochSize",
        "sinkProcesses",
        "checkpoints.everyEpochs",
        "checkpoints.everySeconds",
        "checkpoints.keep",
        "brokerTimeout",
        "stallTimeout",
    ],
)
def test_minimums_agree_with_the_cli(value: str) -> None:
    """The schema's minimum is the least value restream accepts for the setting."""
    setting = SETTING_OF_VALUE[value]
    least = _schema_at(value)["minimum"]
    RunConfig(**{setting: least})
    with pytest.raises(ConfigError):
        RunConfig(**{setting: least - 1})
    path = value.split(".")
    below: dict[str, Any] = {path[-1]: least - 1}
    for part in reversed(path[:-1]):
        below = {part: below}
    assert _errors(below)


@pytest.mark.parametrize("executor", ["parallel", "batch", "serial", "ray"])
def test_checkpoint_executors_agree_with_the_cli(executor: ExecutorName) -> None:
    """restream refuses checkpoint_dir with the serial executor; so does the schema."""
    try:
        RunConfig(executor=executor, checkpoint_dir=VALUES["checkpoints"]["mountPath"])
        cli_ok = True
    except ConfigError:
        cli_ok = False
    assert cli_ok is (executor != "serial")
    claim = {"executor": executor, "checkpoints": {"existingClaim": "restream-checkpoints"}}
    assert cli_ok is not bool(_errors(claim))
    assert not _errors({"executor": executor})


def test_checkpoint_dir_is_rendered_only_with_a_claim() -> None:
    """Checkpoints on the pod's own disk would die with it: no claim, no checkpoint_dir."""
    helpers = TEMPLATES["_helpers.tpl"]
    block = re.search(
        r"\{\{- with \$v\.checkpoints\.existingClaim \}\}(.*?)\{\{- end \}\}", helpers, re.S
    )
    assert block, "the checkpoint settings belong in a block on checkpoints.existingClaim"
    inside = set(re.findall(r'set \$config "([^"]+)"', block.group(1)))
    assert inside == {s for s in _BY_NAME if s.startswith("checkpoint_")}
    assert 'set $config "checkpoint_dir" $v.checkpoints.mountPath' in block.group(1)
    job = TEMPLATES["job.yaml"]
    mount = re.search(
        r"\{\{- if \.Values\.checkpoints\.existingClaim \}\}\s*- name: checkpoints\s*"
        r"mountPath: \{\{ \.Values\.checkpoints\.mountPath \}\}",
        job,
    )
    assert mount, "the claim must be mounted at checkpoints.mountPath"
    assert "claimName: {{ .Values.checkpoints.existingClaim }}" in job


@pytest.mark.parametrize(
    ("start", "ok"),
    [
        ("earliest", True),
        ("ts:2026-10-01T00:00:00Z", True),
        ("ts:1759276800000", True),
        ("group:fraud-model", True),
        ("offsets:social.messages/0=100", True),
        ("latest", False),
        ("ts:2026-10-01T00:00:00", False),  # no time zone: the CLI refuses it
    ],
)
def test_start_positions_agree_with_the_cli(start: str, ok: bool) -> None:
    try:
        parse_start(start, topics=["social.messages"])
        cli_ok = True
    except ConfigError:
        cli_ok = False
    assert cli_ok is ok
    if ok:
        assert not _errors({"start": start})
    elif not start.startswith("ts:"):
        # The schema checks the form; whether a time has a zone is restream's to say.
        assert _errors({"start": start})


@given(st.text(alphabet=string.ascii_letters + string.digits + "._- /:", max_size=40))
def test_job_ids_agree_with_the_cli(job_id: str) -> None:
    """The schema accepts a non-empty jobId exactly when restream accepts it as job_id."""
    if not job_id:
        return
    try:
        RunConfig(job_id=job_id)
        cli_ok = True
    except ConfigError:
        cli_ok = False
    assert cli_ok is not bool(_errors({"jobId": job_id}))


# -- templates --------------------------------------------------------------------------------


def _value_references() -> Iterator[tuple[str, str]]:
    """(template, dotted path) for every reference to .Values, also through a variable that
    holds .Values or a part of it (``$v := .Values``)."""
    for name, text in TEMPLATES.items():
        aliases = {
            m.group(1): m.group(2).lstrip(".")
            for m in re.finditer(r"\$(\w+) := \.Values((?:\.\w+)*)\s*}}", text)
        }
        for m in re.finditer(r"\.Values((?:\.\w+)+)", text):
            yield name, m.group(1).lstrip(".")
        for alias, prefix in aliases.items():
            for m in re.finditer(rf"\${alias}((?:\.\w+)+)", text):
                yield name, ".".join(p for p in (prefix, m.group(1).lstrip(".")) if p)


def test_templates_reference_only_existing_values() -> None:
    references = list(_value_references())
    assert len(references) > 50
    schema_only = {"resources.requests.cpu"}  # optional: defaults to workers when unset
    for template, path in references:
        if path in schema_only:
            _schema_at(path)
            continue
        try:
            _lookup(VALUES, path)
        except (KeyError, TypeError):
            pytest.fail(f"{template} uses .Values.{path}, which values.yaml does not define")


def test_every_value_is_used_by_a_template() -> None:
    used = {path for _, path in _value_references()}
    for path in _leaf_paths(VALUES, into_objects=False):
        assert any(u == path or path.startswith(u + ".") for u in used), f"{path} is unused"


def test_config_keys_are_restream_settings() -> None:
    keys = re.findall(r'set \$config "([^"]+)"', TEMPLATES["_helpers.tpl"])
    assert len(keys) == len(set(keys)), "a setting is set twice"
    assert set(keys) <= set(_BY_NAME), set(keys) - set(_BY_NAME)
    # Every setting is either rendered or deliberately left out; a new setting fails here
    # until the chart gets a value for it (or a reason in NOT_IN_CONFIG).
    assert set(keys) | set(NOT_IN_CONFIG) == set(_BY_NAME), set(_BY_NAME) - set(keys)
    assert set(SETTING_OF_VALUE.values()) | set(FIXED_IN_CONFIG) == set(keys)
    for setting, value in FIXED_IN_CONFIG.items():
        assert f'set $config "{setting}" "{value}"' in TEMPLATES["_helpers.tpl"]
        assert value in _BY_NAME[setting].choices


@pytest.mark.parametrize("template", ["job.yaml", "_ray.tpl"])
def test_compiled_kernels_cache_on_the_tmp_empty_dir(template: str) -> None:
    """NUMBA_CACHE_DIR lies on the /tmp emptyDir (the root filesystem is read-only), in the
    Job's pod and in every pod of the RayJob."""
    text = TEMPLATES[template]
    assert re.search(r"name: NUMBA_CACHE_DIR\n\s+value: /tmp/\S+", text)
    assert re.search(r"- name: tmp\n\s+mountPath: /tmp\n", text)
    assert re.search(r"- name: tmp\n\s+emptyDir:", text)
    if template == "_ray.tpl":
        rayjob = TEMPLATES["rayjob.yaml"]
        # The head and the worker group each take the env, the mounts and the volumes.
        for part in ("env", "volumeMounts", "volumes"):
            assert len(re.findall(rf'include "restream\.ray\.{part}"', rayjob)) == 2, part


def test_rayjob_replaces_the_job_with_executor_ray() -> None:
    assert TEMPLATES["job.yaml"].startswith('{{- if ne .Values.executor "ray" }}\n')
    assert TEMPLATES["rayjob.yaml"].startswith('{{- if eq .Values.executor "ray" }}\n')
    for name in ("job.yaml", "rayjob.yaml"):
        assert TEMPLATES[name].rstrip().endswith("{{- end }}")


def test_rayjob_driver_and_its_checkpoints() -> None:
    """The entrypoint runs the Job's command; the claim is mounted on the head pod (before
    the worker groups) at checkpoints.mountPath; the cluster goes when the job ends."""
    rayjob = TEMPLATES["rayjob.yaml"]
    (entrypoint,) = re.findall(r"entrypoint: (.*)", rayjob)
    (args_text,) = re.findall(r"args: (\[.*\])", TEMPLATES["job.yaml"])
    assert entrypoint.split() == ["restream", *json.loads(args_text)]
    assert not cli_problems(entrypoint.split()[1:])
    assert "shutdownAfterJobFinishes: true" in rayjob
    head, _, workers = rayjob.partition("workerGroupSpecs:")
    mount = re.search(
        r"\{\{- if \.Values\.checkpoints\.existingClaim \}\}\s*(#.*\n\s*)?- name: checkpoints\s*"
        r"mountPath: \{\{ \.Values\.checkpoints\.mountPath \}\}",
        head,
    )
    assert mount, "the claim must be mounted on the head at checkpoints.mountPath"
    assert "claimName: {{ .Values.checkpoints.existingClaim }}" in head
    assert "checkpoints" not in workers and "checkpoints" not in TEMPLATES["_ray.tpl"]
    assert "containerPort: {{ .Values.metrics.port }}" in head
    assert "metrics.port" not in workers


@pytest.mark.parametrize("template", ["job.yaml", "_ray.tpl"])
def test_template_environment_is_what_the_cli_reads(template: str) -> None:
    names = re.findall(r"name: (RESTREAM_\w+)", TEMPLATES[template])
    assert set(names) == {
        "RESTREAM_KAFKA_SASL_USERNAME",
        "RESTREAM_KAFKA_SASL_PASSWORD",
        "RESTREAM_KAFKA_SSL_KEY_PASSWORD",
        "RESTREAM_SCHEMA_REGISTRY_BASIC_AUTH",
    }
    assert not env_problems(names)
    assert _BY_NAME["schema_registry_basic_auth"].secret


def test_template_arguments_are_what_the_cli_accepts() -> None:
    (args_text,) = re.findall(r"args: (\[.*\])", TEMPLATES["job.yaml"])
    args = json.loads(args_text)
    assert args == ["run", "--config", "/etc/restream/job.yaml"]
    assert not cli_problems(args)
    assert "mountPath: /etc/restream/job.yaml" in TEMPLATES["job.yaml"]
    assert "command:" not in TEMPLATES["job.yaml"]


def test_secret_keys_agree_between_templates() -> None:
    created = set(re.findall(r"^  ([a-z-]+): \{\{ \. \| b64enc", TEMPLATES["secret.yaml"], re.M))
    referenced = set(re.findall(r"key: ([a-z-]+)\n\s+optional: true", TEMPLATES["job.yaml"]))
    in_ray = set(re.findall(r"key: ([a-z-]+)\n\s+optional: true", TEMPLATES["_ray.tpl"]))
    assert (
        created
        == referenced
        == in_ray
        == {
            "kafka-sasl-username",
            "kafka-sasl-password",
            "kafka-ssl-key-password",
            "schema-registry-basic-auth",
        }
    )


def test_notes_tell_how_to_follow_and_read_the_job() -> None:
    notes = TEMPLATES["NOTES.txt"]
    assert "logs -f job/" in notes
    assert "wait --for=condition=complete" in notes
    assert "port-forward" in notes and "/metrics" in notes
    assert "Output topics" in notes and "uninstall" in notes
    # How restarts behave, with and without a checkpoint claim.
    assert "{{- if .Values.checkpoints.existingClaim }}" in notes
    assert "{{ .Values.job.backoffLimit }}" in notes
    assert "Exit code 0: done; 2: bad configuration, not retried; 1: failure" in notes


def test_chart_metadata() -> None:
    chart = load_documents((CHART / "Chart.yaml").read_text())[0]
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "restream" and chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    from connector import __version__

    assert chart["appVersion"] == __version__


# -- documentation ----------------------------------------------------------------------------


def _leaf_paths(values: Mapping[str, Any], *, into_objects: bool = True) -> Iterator[str]:
    """Dotted paths of the values; non-empty maps are descended into (``into_objects``: also
    the Kubernetes objects such as podSecurityContext)."""
    for key, value in values.items():
        opaque = key in ("podSecurityContext", "securityContext") and not into_objects
        if isinstance(value, Mapping) and value and not opaque:
            for sub in _leaf_paths(value, into_objects=into_objects):
                yield f"{key}.{sub}"
        else:
            yield key


def test_every_value_is_documented_in_values_yaml() -> None:
    lines = VALUES_TEXT.splitlines()
    keys = 0
    for number, line in enumerate(lines):
        if re.match(r"^\s*[A-Za-z][\w.-]*:", line):
            keys += 1
            above = lines[number - 1].strip()
            assert above.startswith("#"), f"values.yaml line {number + 1}: {line.strip()!r}"
    assert keys >= len(list(_leaf_paths(VALUES)))


def test_chart_readme_has_every_value_in_its_table() -> None:
    readme = (CHART / "README.md").read_text()
    rows = re.findall(r"^\| `([\w.-]+)` \|", readme, re.M)
    table = {r for r in rows if not r.startswith(("kafka-", "schema-registry-", "RESTREAM_"))}
    for path in _leaf_paths(VALUES):
        assert path in table, f"{path} is missing from the values table of README.md"
    for path in table:  # no row for a value that does not exist
        try:
            _lookup(VALUES, path)
        except KeyError:
            _schema_at(path)
    for name in re.findall(r"`(RESTREAM_\w+)`", readme):
        assert not env_problems([name])
