"""The plain Kubernetes manifests in deploy/k8s: valid for the pinned Kubernetes version, and a
Job whose arguments, environment and config file the CLI accepts."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from connector.errors import ConfigError
from tests.support.deploy import (
    DEPLOY,
    KUBERNETES_VERSION,
    check_restream_pod,
    load_documents,
    validate_kubernetes,
)

MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))


def _documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in load_documents(path.read_text())]


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _documents() if d["kind"] == kind}


def _job() -> dict[str, Any]:
    (job,) = _by_kind("Job").values()
    return job


def test_the_manifests_exist() -> None:
    names = {p.name for p in MANIFESTS}
    assert {"job.yaml", "configmap.yaml", "secret.example.yaml", "pvc.yaml"} <= names
    kinds = sorted(d["kind"] for d in _documents())
    assert kinds == ["ConfigMap", "Job", "PersistentVolumeClaim", "Secret", "Secret"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: Path(p).name)
def test_manifest_is_valid_for_the_pinned_kubernetes(path: Path) -> None:
    for doc in load_documents(path.read_text()):
        validate_kubernetes(doc)


def test_the_validator_rejects_an_unknown_field() -> None:
    """Strict validation is what makes the test above worth having."""
    job = copy.deepcopy(_job())
    job["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_kubernetes(job)
    job = copy.deepcopy(_job())
    job["spec"]["backoffLimit"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_kubernetes(job)
    assert KUBERNETES_VERSION.startswith("1.30")


def test_job_runs_a_config_that_the_cli_accepts() -> None:
    config = check_restream_pod(_job(), _by_kind("ConfigMap"))
    assert config.job_id == "backtest"
    assert config.metrics_port == 9464
    assert config.progress == "log" and config.log_format == "json"
    assert config.kafka["sasl.password"] == "placeholder-user:placeholder-secret"
    assert config.kafka["ssl.ca.location"] == "/etc/restream/tls/ca.crt"
    assert config.checkpoint_dir == "/var/lib/restream/checkpoints"
    assert (config.checkpoint_every_epochs, config.checkpoint_every_seconds) == (10, 60)
    assert config.checkpoint_keep == 2 and config.broker_timeout == 120


def test_job_lifetime_limits() -> None:
    spec = _job()["spec"]
    assert spec["backoffLimit"] == 2
    assert spec["activeDeadlineSeconds"] == 6 * 3600
    assert spec["ttlSecondsAfterFinished"] == 24 * 3600
    resources = spec["template"]["spec"]["containers"][0]["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert "memory" in resources["limits"]


def test_every_secret_reference_matches_the_example_secrets() -> None:
    secrets = _by_kind("Secret")
    pod = _job()["spec"]["template"]["spec"]
    refs = [
        var["valueFrom"]["secretKeyRef"]
        for var in pod["containers"][0]["env"]
        if "secretKeyRef" in var.get("valueFrom", {})
    ]
    assert refs
    for ref in refs:
        assert ref["key"] in secrets[ref["name"]]["stringData"], ref
    for volume in pod["volumes"]:
        if "secret" in volume:
            assert volume["secret"]["secretName"] in secrets


def test_example_secrets_hold_placeholders_only() -> None:
    for secret in _by_kind("Secret").values():
        assert "data" not in secret, "examples use readable stringData placeholders"
        for key, value in secret["stringData"].items():
            assert "REPLACE" in value, f"{secret['metadata']['name']}/{key} looks like a secret"


def test_checkpoints_are_on_the_claim() -> None:
    """A retried pod resumes only if checkpoint_dir is on the PersistentVolumeClaim."""
    (claim,) = _by_kind("PersistentVolumeClaim").values()
    job = _job()
    pod = job["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config = check_restream_pod(job, _by_kind("ConfigMap"))
    assert mounts["checkpoints"] == config.checkpoint_dir
    assert volumes["checkpoints"]["persistentVolumeClaim"] == {
        "claimName": claim["metadata"]["name"]
    }
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    # The volume is group-writable for the image's user through fsGroup.
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]


def test_sigterm_leaves_time_for_a_checkpoint() -> None:
    spec = _job()["spec"]
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] == 60
    assert spec["podReplacementPolicy"] == "Failed"


def test_config_map_is_referenced_by_the_job() -> None:
    (config_map,) = _by_kind("ConfigMap").values()
    volumes = _job()["spec"]["template"]["spec"]["volumes"]
    assert {"configMap": {"name": config_map["metadata"]["name"]}, "name": "config"} in volumes


def _container_of(job: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = job["spec"]["template"]["spec"]["containers"][0]
    return container


def _mutate_job(change: str, job: dict[str, Any]) -> None:
    container = _container_of(job)
    pod = job["spec"]["template"]["spec"]
    if change == "unknown flag":
        container["args"].append("--frobnicate")
    elif change == "config path not mounted":
        container["args"][2] = "/etc/other.yaml"
    elif change == "unknown variable":
        container["env"].append({"name": "RESTREAM_WORKER", "value": "3"})
    elif change == "bootstrap as a kafka variable":
        container["env"].append({"name": "RESTREAM_KAFKA_BOOTSTRAP_SERVERS", "value": "k:9092"})
    elif change == "workers without cpu":
        container["env"].append({"name": "RESTREAM_WORKERS", "value": "3"})
    elif change == "metrics port":
        container["ports"][0]["containerPort"] = 9000
    elif change == "root":
        pod["securityContext"]["runAsUser"] = 0
    elif change == "writable root":
        container["securityContext"]["readOnlyRootFilesystem"] = False
    elif change == "shm over the memory limit":
        next(v for v in pod["volumes"] if v["name"] == "shm")["emptyDir"]["sizeLimit"] = "8Gi"
    elif change == "retries on bad config":
        job["spec"]["podFailurePolicy"]["rules"] = job["spec"]["podFailurePolicy"]["rules"][1:]
    elif change == "no retry after a failure":
        job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] = [1, 2]
    elif change == "evictions use up retries":
        job["spec"]["podFailurePolicy"]["rules"] = job["spec"]["podFailurePolicy"]["rules"][:1]
    elif change == "two pods at once":
        job["spec"]["podReplacementPolicy"] = "TerminatingOrFailed"
    elif change == "checkpoints on the pod's disk":
        volume = next(v for v in pod["volumes"] if v["name"] == "checkpoints")
        del volume["persistentVolumeClaim"]
        volume["emptyDir"] = {}
    elif change == "checkpoints read-only":
        next(m for m in container["volumeMounts"] if m["name"] == "checkpoints")["readOnly"] = True
    elif change == "no time to checkpoint":
        del pod["terminationGracePeriodSeconds"]
    else:
        raise AssertionError(change)


@pytest.mark.parametrize(
    "change",
    [
        "unknown flag",
        "config path not mounted",
        "unknown variable",
        "bootstrap as a kafka variable",
        "workers without cpu",
        "metrics port",
        "root",
        "writable root",
        "shm over the memory limit",
        "retries on bad config",
        "no retry after a failure",
        "evictions use up retries",
        "two pods at once",
        "checkpoints on the pod's disk",
        "checkpoints read-only",
        "no time to checkpoint",
    ],
)
def test_the_pod_check_catches_a_broken_job(change: str) -> None:
    job = copy.deepcopy(_job())
    _mutate_job(change, job)
    with pytest.raises(AssertionError):
        check_restream_pod(job, _by_kind("ConfigMap"))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("workers: 2", "workerz: 2"),
        ("start: earliest", "start: latest"),
        ("value_format: avro", "value_format: protobuf"),
        ("/etc/restream/tls/ca.crt", "/etc/ssl/ca.crt"),
        # On the read-only root filesystem, not on the claim: lost with the pod.
        ("checkpoint_dir: /var/lib/restream/checkpoints", "checkpoint_dir: /var/lib/restream"),
        ("checkpoint_keep: 2", "checkpoint_keep: 0"),
        ("broker_timeout: 120", "broker_timeout: 2m"),
    ],
)
def test_the_pod_check_catches_a_broken_config(old: str, new: str) -> None:
    config_maps = copy.deepcopy(_by_kind("ConfigMap"))
    (config_map,) = config_maps.values()
    assert old in config_map["data"]["job.yaml"]
    config_map["data"]["job.yaml"] = config_map["data"]["job.yaml"].replace(old, new)
    with pytest.raises((AssertionError, ConfigError)):
        check_restream_pod(_job(), config_maps)


def test_compiled_kernels_cache_on_a_writable_empty_dir() -> None:
    """The root filesystem is read-only: NUMBA_CACHE_DIR must lie on an emptyDir mount."""
    pod = _job()["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e.get("value") for e in container["env"]}
    cache = env["NUMBA_CACHE_DIR"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    under = [
        m["name"]
        for m in container["volumeMounts"]
        if cache.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert under and all("emptyDir" in volumes[name] for name in under)
