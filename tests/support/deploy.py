"""Tests of the deployment files: the image, the plain manifests, the Helm chart, the dashboard.

The helpers below are shared by the test modules. The central one is :func:`check_restream_pod`:
it takes a Job as Kubernetes would run it plus the restream config file it mounts, and checks
the contract between them and the code: the container's arguments and environment go through
the real CLI parser and config loader (:func:`connector.cli.app.build_parser`,
:func:`connector.config.config_from_args`), and the pod's resources, ports, volumes and
security context agree with the resulting settings and the image.
"""

from __future__ import annotations

import copy
import functools
import re
import shlex
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import yaml

from connector.cli.app import build_parser
from connector.config import ENV_PREFIX, KAFKA_ENV_PREFIX, SETTINGS, RunConfig, config_from_args
from connector.pipeline_loader import BUILTIN_DEFAULTS
from connector.positions.syntax import parse_end, parse_start

__all__ = [
    "CHART",
    "CHART_VALUES",
    "CI_VALUES",
    "DEPLOY",
    "IMAGE_UID",
    "KUBERNETES_VERSION",
    "RAYJOB_CRD",
    "REPO",
    "check_ray_job",
    "check_restream_pod",
    "cli_problems",
    "env_problems",
    "load_documents",
    "merge_values",
    "parse_quantity",
    "rayjob_crd",
    "validate_kubernetes",
    "validate_rayjob",
]

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART = REPO / "helm" / "restream"
#: The Kubernetes version whose OpenAPI schemas the manifests are validated against.
KUBERNETES_VERSION = "1.30.0"
#: The numeric user of the image (deploy/Dockerfile's USER), which pods must run as.
IMAGE_UID = 10001

_SECRET_PLACEHOLDER = "placeholder-user:placeholder-secret"
_UNITS = {
    "": 1,
    "m": 10**-3,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


#: libyaml's parser when PyYAML has it (the same safe schema, 10x faster: the deploy tests
#: parse the manifests a few hundred times, 5 s of the quick unit run in pure Python).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_documents(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a multi-document stream."""
    return [doc for doc in yaml.load_all(text, Loader=_SAFE_LOADER) if doc]


#: The chart's default values (values.yaml).
CHART_VALUES: dict[str, Any] = load_documents((CHART / "values.yaml").read_text())[0]
#: The chart's example values files.
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))


def merge_values(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of user values over the chart's: maps merge, null deletes a key."""
    out = copy.deepcopy(dict(defaults))
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def validate_kubernetes(doc: Mapping[str, Any]) -> None:
    """Validate against the pinned Kubernetes OpenAPI schema; strict: unknown fields fail."""
    kubernetes_validate.validate(dict(doc), KUBERNETES_VERSION, strict=True)


def parse_quantity(text: str | int | float) -> float:
    """A Kubernetes quantity (``500m``, ``2``, ``1Gi``) as a number."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text))
    assert match and match.group(2) in _UNITS, f"not a quantity: {text!r}"
    return float(match.group(1)) * _UNITS[match.group(2)]


def cli_problems(args: list[str]) -> list[str]:
    """Why ``restream ARGS`` would not parse (empty when it parses)."""
    try:
        build_parser().parse_args(args)
    except SystemExit as exc:
        return [f"restream {' '.join(args)}: the CLI refuses it (exit {exc.code})"]
    return []


def env_problems(names: Iterable[str]) -> list[str]:
    """Environment variables named like restream's that restream does not read."""
    known = {s.env for s in SETTINGS} | {ENV_PREFIX + "CONFIG"}
    problems = []
    for name in names:
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        if name.startswith(KAFKA_ENV_PREFIX) and len(name) > len(KAFKA_ENV_PREFIX):
            key = name[len(KAFKA_ENV_PREFIX) :].lower().replace("_", ".")
            if key != "bootstrap.servers":
                continue
        problems.append(f"{name} is neither a setting's variable nor RESTREAM_KAFKA_<KEY>")
    return problems


def _container(job: Mapping[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    names = [c["name"] for c in containers]
    assert names == ["restream"], f"expected one container named restream, got {names}"
    container: dict[str, Any] = containers[0]
    return container


def _environ(container: Mapping[str, Any]) -> dict[str, str]:
    """The container's environment, with a placeholder for each value from a Secret."""
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        else:
            assert "secretKeyRef" in var.get("valueFrom", {}), f"{var['name']}: unexpected source"
            env[var["name"]] = _SECRET_PLACEHOLDER
    return env


def _mounted_paths(container: Mapping[str, Any]) -> list[str]:
    return [m["mountPath"] for m in container.get("volumeMounts", [])]


def _under_a_mount(path: str, mounts: Iterable[str]) -> bool:
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


def _check_security(pod: Mapping[str, Any], container: Mapping[str, Any]) -> None:
    pod_sc = pod["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == IMAGE_UID
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert pod["automountServiceAccountToken"] is False
    # A Service named restream-kafka would otherwise inject RESTREAM_KAFKA_PORT=tcp://...
    assert pod["enableServiceLinks"] is False


def _check_job_policy(job: Mapping[str, Any]) -> None:
    spec = job["spec"]
    assert spec["backoffLimit"] >= 0
    assert spec["activeDeadlineSeconds"] > 0
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    rules = spec["podFailurePolicy"]["rules"]
    bad_config = [r for r in rules if r["action"] == "FailJob"]
    assert bad_config and bad_config[0]["onExitCodes"] == {
        "containerName": "restream",
        "operator": "In",
        "values": [2],
    }, "exit code 2 (bad configuration) must fail the Job without retries"
    # Exit code 1 (failure, or stopped by SIGTERM after a checkpoint) must stay retryable.
    assert not any(1 in r.get("onExitCodes", {}).get("values", []) for r in rules)
    assert {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    } in rules, "an eviction or drain (restream checkpoints, exits 1) must not use up retries"
    # Absent on clusters before 1.28; where present, a replacement pod must wait for the old
    # one to stop, or both would write the same checkpoints and output topics at once.
    assert spec.get("podReplacementPolicy", "Failed") == "Failed"


def _check_checkpoints(
    config: RunConfig, pod: Mapping[str, Any], container: Mapping[str, Any]
) -> None:
    """Checkpoints must outlive the pod (a PersistentVolumeClaim) for a retry to resume."""
    if config.checkpoint_dir is None:
        return
    volumes = {v["name"]: v for v in pod["volumes"]}
    holders = [
        m
        for m in container["volumeMounts"]
        if _under_a_mount(config.checkpoint_dir, [m["mountPath"]])
    ]
    assert holders, f"checkpoint_dir {config.checkpoint_dir} is on no mounted volume"
    # The deepest mount is the one that holds the directory.
    mount = max(holders, key=lambda m: len(m["mountPath"]))
    assert "persistentVolumeClaim" in volumes[mount["name"]], (
        f"checkpoint_dir {config.checkpoint_dir} is on volume {mount['name']}, which dies with "
        "the pod: a retried pod could not resume; use a PersistentVolumeClaim"
    )
    assert not mount.get("readOnly", False), "the checkpoint volume must be writable"
    # After SIGTERM restream finishes an epoch and writes a checkpoint: the grace period is
    # to be chosen for that (set explicitly, at least Kubernetes' default of 30 s).
    assert pod.get("terminationGracePeriodSeconds", 0) >= 30, (
        "give restream time to checkpoint after SIGTERM: terminationGracePeriodSeconds"
    )


def _check_volumes(pod: Mapping[str, Any], container: Mapping[str, Any]) -> None:
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert set(mounts) <= set(volumes), f"mounts without volumes: {set(mounts) - set(volumes)}"
    assert set(volumes) <= set(mounts), f"volumes never mounted: {set(volumes) - set(mounts)}"
    by_path = {m["mountPath"]: volumes[m["name"]] for m in mounts.values()}
    shm = by_path["/dev/shm"]["emptyDir"]
    assert shm["medium"] == "Memory" and parse_quantity(shm["sizeLimit"]) > 0
    assert parse_quantity(by_path["/tmp"]["emptyDir"]["sizeLimit"]) > 0
    for mount in mounts.values():
        if "secret" in volumes[mount["name"]] or "configMap" in volumes[mount["name"]]:
            assert mount.get("readOnly") is True, f"{mount['name']} must be mounted read-only"
    limits = container["resources"].get("limits", {})
    if "memory" in limits:
        assert parse_quantity(shm["sizeLimit"]) < parse_quantity(limits["memory"]), (
            "the memory-backed /dev/shm counts toward the memory limit: keep it below"
        )


def _config_source(
    container: Mapping[str, Any], pod: Mapping[str, Any], args: list[str]
) -> tuple[str, str]:
    """The ConfigMap and key that ``--config PATH`` reads, from the volume mounted at PATH."""
    path = args[args.index("--config") + 1]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        source = volumes[mount["name"]].get("configMap")
        if source is None:
            continue
        base = mount["mountPath"].rstrip("/")
        if "subPath" in mount:
            if mount["mountPath"] != path:
                continue
            file = mount["subPath"]
        elif path.startswith(base + "/"):
            file = path[len(base) + 1 :]
        else:
            continue
        items = {i["path"]: i["key"] for i in source.get("items", [])}
        assert not items or file in items, f"{file} is not projected from {source['name']}"
        return source["name"], items.get(file, file)
    raise AssertionError(f"--config {path} is not a file of a mounted ConfigMap")


def _run_config(
    args: list[str],
    container: Mapping[str, Any],
    pod: Mapping[str, Any],
    config_maps: Mapping[str, Mapping[str, Any]],
) -> RunConfig:
    """The settings ``restream ARGS`` runs with in ``container``: the arguments and the
    environment through the real CLI parser, the config file from the mounted ConfigMap."""
    assert not cli_problems(args), cli_problems(args)
    assert args[0] == "run" and "--config" in args
    environ = _environ(container)
    assert not env_problems(environ), env_problems(environ)

    config_map, key = _config_source(container, pod, args)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "job.yaml"
        path.write_text(config_maps[config_map]["data"][key], encoding="utf-8")
        local = list(args)
        local[args.index("--config") + 1] = str(path)
        parsed = build_parser().parse_args(local)
        config = config_from_args(parsed, environ=environ)

    topics = [t for t, _ in (config.inputs or BUILTIN_DEFAULTS[config.pipeline].inputs)]
    parse_start(config.start, topics=topics)
    parse_end(config.end, topics=topics)
    return config


def _check_metrics(
    config: RunConfig, template: Mapping[str, Any], container: Mapping[str, Any]
) -> None:
    """The pod serves restream's metrics on the container port named metrics."""
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == config.metrics_port != 0
    annotations = template["metadata"].get("annotations", {})
    if "prometheus.io/port" in annotations:
        assert annotations["prometheus.io/port"] == str(config.metrics_port)


def _check_mounted_files(config: RunConfig, container: Mapping[str, Any]) -> None:
    """Every file the settings name lies on a volume of the container."""
    mounts = _mounted_paths(container)
    files = [
        config.kafka.get("ssl.ca.location"),
        config.kafka.get("ssl.certificate.location"),
        config.kafka.get("ssl.key.location"),
        config.schema_registry_ca_location,
        config.schema_registry_cert_location,
        config.schema_registry_key_location,
        *[ref for ref in config.schemas.values() if ref.startswith("/")],
    ]
    for file in files:
        if file:
            assert _under_a_mount(file, mounts), f"{file} is on no mounted volume"


def _check_kernel_cache(pod: Mapping[str, Any], container: Mapping[str, Any]) -> None:
    """The root filesystem is read-only: NUMBA_CACHE_DIR must lie on an emptyDir mount."""
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    cache = env.get("NUMBA_CACHE_DIR")
    assert cache, "NUMBA_CACHE_DIR must be set: the image's default is not on this pod's volumes"
    volumes = {v["name"]: v for v in pod["volumes"]}
    under = [
        m["name"] for m in container["volumeMounts"] if _under_a_mount(cache, [m["mountPath"]])
    ]
    assert under and all("emptyDir" in volumes[name] for name in under), (
        f"NUMBA_CACHE_DIR {cache} is not on a writable emptyDir"
    )


def check_restream_pod(
    job: Mapping[str, Any], config_maps: Mapping[str, Mapping[str, Any]]
) -> RunConfig:
    """Check a restream Job against the CLI and the image; return the config it runs with.

    ``config_maps`` maps ConfigMap names to their manifests; the one the Job mounts at the
    ``--config`` path provides the config file.
    """
    pod = job["spec"]["template"]["spec"]
    container = _container(job)
    args = list(container["args"])
    assert "command" not in container, "the image's ENTRYPOINT (restream) must run"
    config = _run_config(args, container, pod, config_maps)

    requests = container["resources"]["requests"]
    if config.executor == "parallel":
        assert config.workers >= 1, "set workers: restream's default counts the node's CPUs"
        assert parse_quantity(requests["cpu"]) == config.workers, (
            f"CPU request {requests['cpu']} does not match workers {config.workers}"
        )
    assert "memory" in requests

    _check_metrics(config, job["spec"]["template"], container)
    _check_mounted_files(config, container)
    _check_security(pod, container)
    _check_job_policy(job)
    _check_volumes(pod, container)
    _check_checkpoints(config, pod, container)
    return config


#: The vendored RayJob CRD (tests/data/kuberay/README.md says where it comes from).
RAYJOB_CRD = REPO / "tests" / "data" / "kuberay" / "ray.io_rayjobs.yaml"


def _strict(schema: Any) -> Any:
    """A CRD schema that refuses unknown fields, as the API server's strict field validation
    (``kubectl apply --validate=strict``) does; the CRD itself only says which to prune."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def rayjob_crd() -> Any:
    """The vendored RayJob CRD, parsed once (1.4 MB of YAML: seconds without libyaml)."""
    return yaml.load(RAYJOB_CRD.read_text(), Loader=_SAFE_LOADER)


@functools.cache
def _rayjob_validator() -> jsonschema.Draft7Validator:
    crd = rayjob_crd()
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    assert version["served"] and version["storage"]
    return jsonschema.Draft7Validator(_strict(version["schema"]["openAPIV3Schema"]))


def validate_rayjob(doc: Mapping[str, Any]) -> None:
    """Validate a RayJob against the vendored CRD's v1 schema, refusing unknown fields;
    raises :class:`jsonschema.ValidationError` naming the first problem."""
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    error = jsonschema.exceptions.best_match(_rayjob_validator().iter_errors(dict(doc)))
    if error is not None:
        raise error
    # metadata is a bare object in the CRD: the API server checks it as ObjectMeta.
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": dict(doc["metadata"])},
        KUBERNETES_VERSION,
        strict=True,
    )


def _ray_pod(template: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pod spec and the Ray container of a head or worker group's template, checked for
    what every restream pod needs: the image's user, a read-only root, its volumes."""
    pod: dict[str, Any] = template["spec"]
    containers = pod["containers"]
    # KubeRay runs Ray in the first container.
    container: dict[str, Any] = containers[0]
    assert container["name"] == "restream", "the Ray container (the first) must be restream"
    assert "command" not in container and "args" not in container, (
        "KubeRay sets the Ray container's command (ray start)"
    )
    environ = _environ(container)
    assert not env_problems(environ), env_problems(environ)
    _check_security(pod, container)
    _check_volumes(pod, container)
    _check_kernel_cache(pod, container)
    requests = container["resources"]["requests"]
    assert {"cpu", "memory"} <= set(requests), "Ray nodes need CPU and memory requests"
    return pod, container


def check_ray_job(
    rayjob: Mapping[str, Any], config_maps: Mapping[str, Mapping[str, Any]]
) -> RunConfig:
    """Check a restream RayJob against its CRD, the CLI and the image; return the config its
    driver runs with.

    The entrypoint is the driver: ``restream run`` with executor ray on the head pod, whose
    mounted ConfigMap (from ``config_maps``) provides the config file. The head holds the
    checkpoint claim and serves the metrics; the worker groups have at least a CPU per
    worker actor; the cluster is deleted when the job ends.
    """
    validate_rayjob(rayjob)
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True, "a finished backtest must free its nodes"
    assert spec.get("ttlSecondsAfterFinished", 0) >= 0
    assert spec["backoffLimit"] >= 0 and spec["activeDeadlineSeconds"] > 0
    assert spec.get("submissionMode", "K8sJobMode") == "K8sJobMode"
    assert "clusterSelector" not in spec, "the RayJob creates its own cluster"
    cluster = spec["rayClusterSpec"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", cluster["rayVersion"])
    assert not cluster.get("enableInTreeAutoscaling"), "a fixed cluster: workers are placed once"

    head = cluster["headGroupSpec"]
    pod, container = _ray_pod(head["template"])
    args = shlex.split(spec["entrypoint"])
    assert args[0] == "restream", f"the entrypoint must run restream, not {args[0]}"
    config = _run_config(args[1:], container, pod, config_maps)
    assert config.executor == "ray", f"the RayJob's driver runs executor {config.executor}"
    assert config.workers >= 1, "set workers: restream's default counts the driver's CPUs"
    assert head["rayStartParams"].get("num-cpus") == "0", (
        "no actors on the head: its CPUs are the driver's"
    )
    _check_metrics(config, head["template"], container)
    _check_mounted_files(config, container)
    # Without checkpoint_dir a retry starts over (still without duplicating output).
    _check_checkpoints(config, pod, container)

    slots = 0
    for group in cluster["workerGroupSpecs"]:
        assert group["replicas"] == group["minReplicas"] == group["maxReplicas"], (
            f"worker group {group['groupName']}: a fixed number of worker pods"
        )
        _, worker = _ray_pod(group["template"])
        cpus = group["rayStartParams"]["num-cpus"]
        assert parse_quantity(worker["resources"]["requests"]["cpu"]) == parse_quantity(cpus), (
            f"worker group {group['groupName']}: CPU request differs from num-cpus {cpus}"
        )
        slots += group["replicas"] * int(cpus)
        # The reader and sink actors open the same files as the driver.
        _check_mounted_files(config, worker)
        assert _environ(worker) == _environ(container), "workers need the driver's environment"
    assert config.workers <= slots, (
        f"workers {config.workers} is more than the worker pods' {slots} CPUs"
    )
    return config
