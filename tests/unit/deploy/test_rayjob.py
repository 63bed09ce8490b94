"""The KubeRay RayJob in deploy/k8s/ray: valid against the vendored RayJob CRD (KubeRay's own
schema, unknown fields refused), and a driver, head and workers that the CLI, the image and
checkpointing agree with."""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from connector.errors import ConfigError
from tests.support.deploy import (
    DEPLOY,
    RAYJOB_CRD,
    check_ray_job,
    load_documents,
    rayjob_crd,
    validate_kubernetes,
    validate_rayjob,
)

RAY = DEPLOY / "k8s" / "ray"
MANIFESTS = sorted(RAY.glob("*.yaml"))


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    docs = [doc for path in MANIFESTS for doc in load_documents(path.read_text())]
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _rayjob() -> dict[str, Any]:
    (rayjob,) = _by_kind("RayJob").values()
    return copy.deepcopy(rayjob)


def _config_maps() -> dict[str, dict[str, Any]]:
    return _by_kind("ConfigMap")


def _head(rayjob: dict[str, Any]) -> dict[str, Any]:
    head: dict[str, Any] = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]
    return head


def _workers(rayjob: dict[str, Any]) -> dict[str, Any]:
    group: dict[str, Any] = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    return group


# -- the vendored CRD -----------------------------------------------------------------------


def test_vendored_crd_is_the_recorded_kuberay_release() -> None:
    """The README next to the CRD records its release and checksum; an edited or replaced
    file no longer matches them."""
    readme = (RAYJOB_CRD.parent / "README.md").read_text()
    (digest,) = re.findall(r"sha256 `([0-9a-f]{64})`", readme)
    assert hashlib.sha256(RAYJOB_CRD.read_bytes()).hexdigest() == digest
    assert re.search(r"KubeRay v\d+\.\d+\.\d+", readme)
    crd = rayjob_crd()
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "rayjobs.ray.io"


@pytest.mark.parametrize(
    ("why", "change"),
    [
        ("an unknown field", lambda j: j["spec"].update(shutdownAfterJobFinish=True)),
        ("a misspelt pod field", lambda j: _head(j)["template"]["spec"].update(volume=[])),
        ("a count as text", lambda j: j["spec"].update(backoffLimit="two")),
        (
            "a start parameter as a number",
            lambda j: _head(j)["rayStartParams"].update({"num-cpus": 0}),
        ),
        ("no head group", lambda j: j["spec"]["rayClusterSpec"].pop("headGroupSpec")),
        ("a worker group without a name", lambda j: _workers(j).pop("groupName")),
        ("misspelt metadata", lambda j: j["metadata"].update(label={"a": "b"})),
    ],
)
def test_the_schema_refuses_a_broken_rayjob(why: str, change: Any) -> None:
    """Strict validation against the CRD is what makes the test below worth having."""
    rayjob = _rayjob()
    change(rayjob)
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        validate_rayjob(rayjob)


# -- the manifests ----------------------------------------------------------------------------


def test_the_manifests_exist() -> None:
    assert {p.name for p in MANIFESTS} == {"configmap.yaml", "rayjob.yaml"}
    assert set(_by_kind("RayJob")) == {"restream-backtest-ray"}
    assert set(_config_maps()) == {"restream-backtest-ray-config"}


def test_rayjob_matches_the_crd() -> None:
    validate_rayjob(_rayjob())


def test_config_map_is_valid_for_the_pinned_kubernetes() -> None:
    for config_map in _config_maps().values():
        validate_kubernetes(config_map)


def test_driver_runs_a_ray_config_that_the_cli_accepts() -> None:
    config = check_ray_job(_rayjob(), _config_maps())
    assert config.executor == "ray"
    assert config.job_id == "backtest-ray"
    assert config.workers == 2
    assert config.metrics_port == 9464
    assert config.progress == "log" and config.log_format == "json"
    assert config.checkpoint_dir == "/var/lib/restream/checkpoints"
    assert config.kafka["ssl.ca.location"] == "/etc/restream/tls/ca.crt"
    assert config.kafka["sasl.password"] == "placeholder-user:placeholder-secret"


def test_entrypoint_is_restream_run_on_the_mounted_config() -> None:
    rayjob = _rayjob()
    assert rayjob["spec"]["entrypoint"] == "restream run --config /etc/restream/job.yaml"
    mounts = _head(rayjob)["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "config", "mountPath": "/etc/restream/job.yaml", "subPath": "job.yaml",
            "readOnly": True} in mounts  # fmt: skip


def test_lifetime_of_the_job_and_its_cluster() -> None:
    spec = _rayjob()["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] == 600
    assert spec["backoffLimit"] == 2
    assert spec["activeDeadlineSeconds"] == 6 * 3600


def test_checkpoints_are_on_the_claim_of_the_job() -> None:
    """The head (the driver) mounts the same claim as deploy/k8s/job.yaml: pvc.yaml."""
    (claim,) = [
        d
        for d in load_documents((DEPLOY / "k8s" / "pvc.yaml").read_text())
        if d["kind"] == "PersistentVolumeClaim"
    ]
    pod = _head(_rayjob())["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["checkpoints"]["persistentVolumeClaim"] == {
        "claimName": claim["metadata"]["name"]
    }
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    for group in _rayjob()["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        assert not any("persistentVolumeClaim" in v for v in group["template"]["spec"]["volumes"])


def test_secrets_are_the_example_secrets() -> None:
    examples = {
        d["metadata"]["name"]: d
        for d in load_documents((DEPLOY / "k8s" / "secret.example.yaml").read_text())
    }
    templates = [_head(_rayjob())["template"], _workers(_rayjob())["template"]]
    for template in templates:
        pod = template["spec"]
        for var in pod["containers"][0]["env"]:
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in examples[ref["name"]]["stringData"], ref
        for volume in pod["volumes"]:
            if "secret" in volume:
                assert volume["secret"]["secretName"] in examples


def test_config_keys_agree_with_the_jobs_config() -> None:
    """The Ray config is the Job's (deploy/k8s/configmap.yaml) but for job_id and executor."""
    (job_map,) = [
        d
        for d in load_documents((DEPLOY / "k8s" / "configmap.yaml").read_text())
        if d["kind"] == "ConfigMap"
    ]
    (ray_map,) = _config_maps().values()
    job_config = load_documents(job_map["data"]["job.yaml"])[0]
    ray_config = load_documents(ray_map["data"]["job.yaml"])[0]
    assert set(job_config) == set(ray_config)
    differ = {k for k in job_config if job_config[k] != ray_config[k]}
    assert differ == {"job_id", "executor"}


def _mutate(change: str, rayjob: dict[str, Any]) -> None:
    spec = rayjob["spec"]
    head = _head(rayjob)
    head_pod = head["template"]["spec"]
    head_container = head_pod["containers"][0]
    workers = _workers(rayjob)
    worker_pod = workers["template"]["spec"]
    worker = worker_pod["containers"][0]
    if change == "not restream":
        spec["entrypoint"] = "python -m connector.cli run --config /etc/restream/job.yaml"
    elif change == "another executor":
        spec["entrypoint"] += " --executor parallel"
    elif change == "unknown flag":
        spec["entrypoint"] += " --frobnicate"
    elif change == "config not mounted":
        spec["entrypoint"] = "restream run --config /etc/other.yaml"
    elif change == "cluster kept":
        spec["shutdownAfterJobFinishes"] = False
    elif change == "checkpoints on the head's disk":
        volume = next(v for v in head_pod["volumes"] if v["name"] == "checkpoints")
        del volume["persistentVolumeClaim"]
        volume["emptyDir"] = {}
    elif change == "checkpoints not on the head":
        head_container["volumeMounts"] = [
            m for m in head_container["volumeMounts"] if m["name"] != "checkpoints"
        ]
        head_pod["volumes"] = [v for v in head_pod["volumes"] if v["name"] != "checkpoints"]
    elif change == "no numba cache on the head":
        head_container["env"] = [e for e in head_container["env"] if e["name"] != "NUMBA_CACHE_DIR"]
    elif change == "numba cache on the read-only root of a worker":
        worker["env"] = copy.deepcopy(worker["env"])
        next(e for e in worker["env"] if e["name"] == "NUMBA_CACHE_DIR")["value"] = "/opt/numba"
    elif change == "metrics port":
        head_container["ports"][0]["containerPort"] = 9000
    elif change == "metrics annotation":
        head["template"]["metadata"]["annotations"]["prometheus.io/port"] = "8080"
    elif change == "actors on the head":
        del head["rayStartParams"]["num-cpus"]
    elif change == "too few worker pods":
        workers["replicas"] = workers["minReplicas"] = workers["maxReplicas"] = 1
    elif change == "autoscaled workers":
        workers["maxReplicas"] = 4
    elif change == "worker cpu differs from num-cpus":
        worker["resources"] = copy.deepcopy(worker["resources"])
        worker["resources"]["requests"]["cpu"] = "2"
    elif change == "workers without the credentials":
        worker["env"] = [e for e in worker["env"] if "valueFrom" not in e]
    elif change == "workers without the CA":
        worker["volumeMounts"] = [m for m in worker["volumeMounts"] if m["name"] != "kafka-tls"]
        worker_pod["volumes"] = [v for v in worker_pod["volumes"] if v["name"] != "kafka-tls"]
    elif change == "root worker":
        worker_pod["securityContext"]["runAsUser"] = 0
    elif change == "writable root on the head":
        head_container["securityContext"] = copy.deepcopy(head_container["securityContext"])
        head_container["securityContext"]["readOnlyRootFilesystem"] = False
    elif change == "command instead of ray start":
        head_container["command"] = ["restream", "run"]
    elif change == "no time to checkpoint":
        del head_pod["terminationGracePeriodSeconds"]
    elif change == "an existing cluster":
        spec["clusterSelector"] = {"ray.io/cluster": "shared"}
    else:
        raise AssertionError(change)


@pytest.mark.parametrize(
    "change",
    [
        "not restream",
        "another executor",
        "unknown flag",
        "config not mounted",
        "cluster kept",
        "checkpoints on the head's disk",
        "checkpoints not on the head",
        "no numba cache on the head",
        "numba cache on the read-only root of a worker",
        "metrics port",
        "metrics annotation",
        "actors on the head",
        "too few worker pods",
        "autoscaled workers",
        "worker cpu differs from num-cpus",
        "workers without the credentials",
        "workers without the CA",
        "root worker",
        "writable root on the head",
        "command instead of ray start",
        "no time to checkpoint",
        "an existing cluster",
    ],
)
def test_the_check_catches_a_broken_rayjob(change: str) -> None:
    rayjob = _rayjob()
    check_ray_job(rayjob, _config_maps())  # intact, it passes
    _mutate(change, rayjob)
    with pytest.raises(AssertionError):
        check_ray_job(rayjob, _config_maps())


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("executor: ray", "executor: parallel"),
        ("workers: 2", "workers: 3"),
        ("checkpoint_dir: /var/lib/restream/checkpoints", "checkpoint_dir: /var/lib/restream"),
        ("metrics_port: 9464", "metrics_port: 9000"),
        ("value_format: avro", "value_format: protobuf"),
    ],
)
def test_the_check_catches_a_broken_config(old: str, new: str) -> None:
    config_maps = copy.deepcopy(_config_maps())
    (config_map,) = config_maps.values()
    assert old in config_map["data"]["job.yaml"]
    config_map["data"]["job.yaml"] = config_map["data"]["job.yaml"].replace(old, new)
    with pytest.raises((AssertionError, ConfigError)):
        check_ray_job(_rayjob(), config_maps)


def test_the_manifest_names_the_image_with_the_ray_extra() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "--build-arg EXTRAS=ray -t restream:0.1.0-ray" in dockerfile
    for template in (_head(_rayjob())["template"], _workers(_rayjob())["template"]):
        assert template["spec"]["containers"][0]["image"] == "restream:0.1.0-ray"


def test_paths_in_the_comments_exist() -> None:
    text = (RAY / "rayjob.yaml").read_text()
    for path in re.findall(r"deploy/k8s/[\w./]+\.yaml", text):
        assert Path(DEPLOY.parent / path).is_file(), path


def test_ray_version_is_the_release_line_of_the_ray_extra() -> None:
    # KubeRay picks its probes by rayVersion: it must name the Ray the image installs.
    pyproject = (DEPLOY.parent / "pyproject.toml").read_text()
    extra = re.search(r'^ray = \["ray\[default\]>=(\d+\.\d+),<(\d+\.\d+)"\]$', pyproject, re.M)
    assert extra is not None, "the ray extra is one release line: ray[default]>=X.Y,<X.Z"
    low, high = extra.groups()
    values = yaml.safe_load((DEPLOY.parent / "helm" / "restream" / "values.yaml").read_text())
    for version in (_rayjob()["spec"]["rayClusterSpec"]["rayVersion"], values["ray"]["version"]):
        assert version.startswith(f"{low}."), (version, extra[0])
        assert tuple(map(int, version.split(".")[:2])) < tuple(map(int, high.split("."))), version
