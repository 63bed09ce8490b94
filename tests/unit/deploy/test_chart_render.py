"""The Helm chart rendered by ``helm template`` (skipped without a helm binary on PATH): the
output is valid for the pinned Kubernetes version, and the Job runs a config that the CLI
accepts, built from the values as documented."""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from connector.config import RunConfig
from tests.support.deploy import (
    CHART,
    CHART_VALUES,
    CI_VALUES,
    KUBERNETES_VERSION,
    check_ray_job,
    check_restream_pod,
    load_documents,
    merge_values,
    parse_quantity,
    validate_kubernetes,
)

HELM = shutil.which("helm")
RELEASE = "bt"
NAMESPACE = "backtests"

pytestmark = pytest.mark.skipif(
    HELM is None, reason="no helm binary on PATH: the chart is checked without rendering"
)


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120, check=False)


def render(values_file: Path | None, *sets: str) -> list[dict[str, Any]]:
    """``helm template`` of the chart; fails the test with helm's message on an error."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    args += ["--kube-version", KUBERNETES_VERSION]
    if values_file is not None:
        args += ["--values", str(values_file)]
    for item in sets:
        args += ["--set", item]
    result = _helm(*args)
    assert result.returncode == 0, result.stderr
    return load_documents(result.stdout)


def check_rendered(docs: Sequence[Mapping[str, Any]], overrides: Mapping[str, Any]) -> RunConfig:
    """Check a rendering of the chart with ``overrides`` over the defaults."""
    values = merge_values(CHART_VALUES, overrides)
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
        assert doc["metadata"]["namespace"] == NAMESPACE
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        if doc["kind"] not in ("PodMonitor", "RayJob"):  # CRDs: not in the Kubernetes schemas
            validate_kubernetes(doc)
    config_maps = {c["metadata"]["name"]: c for c in by_kind["ConfigMap"]}
    if values["executor"] == "ray":
        assert "Job" not in by_kind, "executor ray renders a RayJob instead of the Job"
        (rayjob,) = by_kind["RayJob"]
        config = check_ray_job(rayjob, config_maps)  # validates it against the CRD, too
        template = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
        _check_ray_values(rayjob, values)
    else:
        assert "RayJob" not in by_kind
        (job,) = by_kind["Job"]
        config = check_restream_pod(job, config_maps)
        template = job["spec"]["template"]
        _check_job_values(job, values)

    pod = template["spec"]
    container = pod["containers"][0]
    assert config.job_id == (values["jobId"] or RELEASE)
    assert config.bootstrap_servers == values["kafka"]["bootstrapServers"]
    assert config.executor == values["executor"]
    assert config.workers == values["workers"]
    assert dict(config.inputs) == values["inputs"]
    assert (config.start, config.end) == (values["start"], values["end"])
    assert config.on_bad_record == values["onBadRecord"]
    assert config.pushgateway == (values["pushgateway"] or None)
    expected_image = f"{values['image']['repository']}:{values['image']['tag'] or '0.1.0'}"
    assert container["image"] == expected_image
    assert pod["terminationGracePeriodSeconds"] == values["job"]["terminationGracePeriodSeconds"]
    assert config.broker_timeout == values["brokerTimeout"]
    checkpoints = values["checkpoints"]
    if checkpoints["existingClaim"]:
        assert config.checkpoint_dir == checkpoints["mountPath"]
        assert config.checkpoint_every_epochs == checkpoints["everyEpochs"]
        assert config.checkpoint_every_seconds == checkpoints["everySeconds"]
        assert config.checkpoint_keep == checkpoints["keep"]
        claims = [
            v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v
        ]
        assert claims == [{"claimName": checkpoints["existingClaim"]}]
    else:
        assert config.checkpoint_dir is None
        assert not any("persistentVolumeClaim" in v for v in pod["volumes"])

    secret_name = values["credentials"]["existingSecret"] or None
    created = by_kind.get("Secret", [])
    if created:
        (secret,) = created
        secret_name = secret["metadata"]["name"]
        plain = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        assert plain["kafka-sasl-password"] == values["credentials"]["kafkaSaslPassword"]
    refs = {
        var["valueFrom"]["secretKeyRef"]["name"]
        for var in container.get("env", [])
        if "secretKeyRef" in var.get("valueFrom", {})
    }
    assert refs == ({secret_name} if secret_name else set())

    for file, text in values["schemaFiles"].items():
        (config_map,) = config_maps.values()
        assert config_map["data"][file] == text
        assert f"/etc/restream/schemas/{file}" in config.schemas.values()

    if values["serviceAccount"]["create"]:
        (account,) = by_kind["ServiceAccount"]
        assert account["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == account["metadata"]["name"]
    else:
        assert "ServiceAccount" not in by_kind

    monitors = by_kind.get("PodMonitor", [])
    assert bool(monitors) == values["metrics"]["podMonitor"]["enabled"]
    for monitor in monitors:
        labels = dict(template["metadata"]["labels"])
        if values["executor"] == "ray":
            # KubeRay labels the head pod, whose driver serves the metrics.
            labels["ray.io/node-type"] = "head"
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["port"] in {p["name"] for p in container["ports"]}
        assert endpoint["relabelings"] == [
            {"action": "replace", "targetLabel": "job_id", "replacement": config.job_id}
        ]
    return config


def _check_job_values(job: Mapping[str, Any], values: Mapping[str, Any]) -> None:
    """The Job's spec and resources, from the values."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    cpu = values["resources"]["requests"].get("cpu", values["workers"])
    assert parse_quantity(container["resources"]["requests"]["cpu"]) == parse_quantity(cpu)
    assert job["spec"]["backoffLimit"] == values["job"]["backoffLimit"]
    assert job["spec"]["podReplacementPolicy"] == "Failed"
    assert job["spec"].get("ttlSecondsAfterFinished") == values["job"].get(
        "ttlSecondsAfterFinished"
    )


def _check_ray_values(rayjob: Mapping[str, Any], values: Mapping[str, Any]) -> None:
    """The RayJob's spec, head and worker group, from the values."""
    spec = rayjob["spec"]
    ray = values["ray"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] == ray["ttlSecondsAfterFinished"]
    assert spec["backoffLimit"] == values["job"]["backoffLimit"]
    assert spec["activeDeadlineSeconds"] == values["job"]["activeDeadlineSeconds"]
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray["version"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    cpu = values["resources"]["requests"].get("cpu", 2)
    assert parse_quantity(head["resources"]["requests"]["cpu"]) == parse_quantity(cpu)
    (group,) = cluster["workerGroupSpecs"]
    assert group["replicas"] == ray["workerReplicas"]
    assert group["rayStartParams"] == {"num-cpus": str(ray["workerCpus"])}
    worker = group["template"]["spec"]["containers"][0]
    assert worker["image"] == head["image"]
    requests = worker["resources"]["requests"]
    assert parse_quantity(requests["cpu"]) == ray["workerCpus"]
    for name, quantity in ray["workerResources"]["requests"].items():
        assert parse_quantity(requests[name]) == parse_quantity(quantity)
    worker_volumes = {v["name"] for v in group["template"]["spec"]["volumes"]}
    assert ("tls" in worker_volumes) == bool(values["tlsSecret"])
    assert ("schema-files" in worker_volumes) == bool(values["schemaFiles"])


@pytest.mark.parametrize("path", CI_VALUES, ids=lambda p: Path(p).name)
def test_example_values_render_to_a_valid_job(path: Path) -> None:
    overrides = load_documents(path.read_text())[0]
    check_rendered(render(path), overrides)


def test_helm_lint_passes_on_the_examples() -> None:
    for path in CI_VALUES:
        result = _helm("lint", "--strict", str(CHART), "--values", str(path))
        assert result.returncode == 0, result.stdout + result.stderr


def test_install_needs_the_bootstrap_servers() -> None:
    result = _helm("template", RELEASE, str(CHART))
    assert result.returncode != 0
    assert "kafka.bootstrapServers is required" in result.stderr


def test_install_needs_a_pipeline() -> None:
    """restream has no default pipeline (the demo's is not a product default), nor the chart."""
    bootstrap = "kafka.bootstrapServers=kafka:9092"
    result = _helm("template", RELEASE, str(CHART), "--set", bootstrap)
    assert result.returncode != 0
    assert "pipeline is required" in result.stderr


@pytest.mark.parametrize(
    "bad",
    [
        "workers=0",
        "valueFormat=protobuf",
        "start=latest",
        "podSecurityContext.runAsUser=0",
        "checkpoints.keep=0",
        "brokerTimeout=0",
        "executor=serial,checkpoints.existingClaim=restream-checkpoints",
    ],
)
def test_helm_refuses_bad_values(bad: str) -> None:
    minimal = CHART / "ci" / "minimal-values.yaml"
    result = _helm("template", RELEASE, str(CHART), "--values", str(minimal), "--set", bad)
    assert result.returncode != 0, f"helm accepted {bad}"


def test_tls_files_need_the_tls_secret() -> None:
    minimal = CHART / "ci" / "minimal-values.yaml"
    result = _helm(
        "template", RELEASE, str(CHART), "--values", str(minimal), "--set", "kafka.caFile=ca.crt"
    )
    assert result.returncode != 0
    assert "tlsSecret is required" in result.stderr


def test_a_claim_turns_checkpoints_on() -> None:
    minimal = CHART / "ci" / "minimal-values.yaml"
    sets = ("checkpoints.existingClaim=ckpt", "checkpoints.mountPath=/ckpt", "executor=batch")
    docs = render(minimal, *sets)
    overrides = merge_values(
        load_documents(minimal.read_text())[0],
        {"checkpoints": {"existingClaim": "ckpt", "mountPath": "/ckpt"}, "executor": "batch"},
    )
    config = check_rendered(docs, overrides)
    assert config.checkpoint_dir == "/ckpt"
    assert (config.checkpoint_every_epochs, config.checkpoint_every_seconds) == (10, 60)


def test_replacement_policy_only_where_kubernetes_has_it() -> None:
    """podReplacementPolicy came with Kubernetes 1.28; older API servers refuse it."""
    minimal = CHART / "ci" / "minimal-values.yaml"
    args = ["template", RELEASE, str(CHART), "--values", str(minimal), "--kube-version", "1.27.0"]
    result = _helm(*args)
    assert result.returncode == 0, result.stderr
    (job,) = [d for d in load_documents(result.stdout) if d["kind"] == "Job"]
    assert "podReplacementPolicy" not in job["spec"]
    assert job["spec"]["podFailurePolicy"]["rules"]


def test_executor_ray_renders_a_rayjob_instead_of_the_job() -> None:
    minimal = CHART / "ci" / "minimal-values.yaml"
    docs = render(minimal, "executor=ray")
    overrides = merge_values(load_documents(minimal.read_text())[0], {"executor": "ray"})
    config = check_rendered(docs, overrides)
    assert config.executor == "ray"
    assert config.checkpoint_dir is None  # no claim: a retry starts over


def test_executor_ray_needs_a_worker_pod_cpu_per_worker_actor() -> None:
    minimal = CHART / "ci" / "minimal-values.yaml"
    sets = ["--set", "executor=ray", "--set", "workers=3"]  # 2 worker pods x 1 CPU
    result = _helm("template", RELEASE, str(CHART), "--values", str(minimal), *sets)
    assert result.returncode != 0
    assert "workers (3) is more than ray.workerReplicas x ray.workerCpus (2)" in result.stderr
    more = [*sets, "--set", "ray.workerCpus=2"]
    result = _helm("template", RELEASE, str(CHART), "--values", str(minimal), *more)
    assert result.returncode == 0, result.stderr
