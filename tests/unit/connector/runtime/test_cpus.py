"""The usable CPU count from fake cgroup trees: v2 and v1 quotas, nesting, affinity, junk."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from connector.config import load_config
from connector.job import run
from connector.runtime.cpus import CpuBudget, usable_cpus


def _tree(tmp_path: Path, self_cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A fake cgroup mount under tmp_path/cgroup holding ``files`` and a fake
    /proc/self/cgroup with ``self_cgroup``."""
    root = tmp_path / "cgroup"
    root.mkdir()
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
    proc = tmp_path / "self-cgroup"
    proc.write_text(self_cgroup, encoding="utf-8")
    return root, proc


def _cpus(root: Path, proc: Path, affinity: int) -> CpuBudget:
    return usable_cpus(root, self_cgroup=proc, affinity=affinity)


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("200000 100000", 2), ("150000 100000", 2), ("50000 100000", 1), ("1000 100000", 1)],
)
def test_v2_quota_is_rounded_up_and_at_least_one(
    tmp_path: Path, cpu_max: str, expected: int
) -> None:
    # A container with a cgroup namespace: its own cgroup is the mount's root, path "/".
    root, proc = _tree(tmp_path, "0::/\n", {"cpu.max": cpu_max})
    budget = _cpus(root, proc, affinity=64)
    assert budget.count == expected
    assert "cgroup v2 quota" in budget.source and str(root / "cpu.max") in budget.source


def test_no_quota_means_the_affinity_set(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, "0::/\n", {"cpu.max": "max 100000"})
    budget = _cpus(root, proc, affinity=6)
    assert budget == CpuBudget(6, "6 CPUs in the affinity set, no cgroup CPU quota")


def test_the_affinity_set_caps_a_larger_quota(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, "0::/\n", {"cpu.max": "800000 100000"})
    assert _cpus(root, proc, affinity=3).count == 3


def test_v2_without_namespace_reads_the_process_cgroup_and_its_ancestors(tmp_path: Path) -> None:
    # The node's view: the pod's cgroup is nested; the tightest level wins.
    root, proc = _tree(
        tmp_path,
        "0::/kubepods/pod1/ctr\n",
        {
            "kubepods/cpu.max": "max 100000",
            "kubepods/pod1/cpu.max": "300000 100000",
            "kubepods/pod1/ctr/cpu.max": "max 100000",
            "other/cpu.max": "100000 100000",  # another cgroup's quota: not ours
        },
    )
    budget = _cpus(root, proc, affinity=16)
    assert budget.count == 3
    assert str(root / "kubepods/pod1/cpu.max") in budget.source


def test_v1_quota_is_the_fallback(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "4:memory:/x\n2:cpu,cpuacct:/pod\n0::/\n",
        {
            "cpu,cpuacct/cpu.cfs_quota_us": "-1",
            "cpu,cpuacct/cpu.cfs_period_us": "100000",
            "cpu,cpuacct/pod/cpu.cfs_quota_us": "250000",
            "cpu,cpuacct/pod/cpu.cfs_period_us": "100000",
        },
    )
    budget = _cpus(root, proc, affinity=8)
    assert budget.count == 3
    assert "cgroup v1 quota 2.5 CPUs" in budget.source


def test_v1_unlimited_is_no_quota(tmp_path: Path) -> None:
    # This development machine's layout: hybrid, cpu on v1 with quota -1, no cpu.max.
    root, proc = _tree(
        tmp_path,
        "1:cpu:/\n0::/\n",
        {
            "cpu/cpu.cfs_quota_us": "-1",
            "cpu/cpu.cfs_period_us": "100000",
            "unified/cgroup.procs": "",
        },
    )
    assert _cpus(root, proc, affinity=2) == CpuBudget(
        2, "2 CPUs in the affinity set, no cgroup CPU quota"
    )


@pytest.mark.parametrize("junk", ["", "lots 100000", "100000 zero", "-5 100000", "100 0"])
def test_unreadable_quotas_count_as_none(tmp_path: Path, junk: str) -> None:
    root, proc = _tree(tmp_path, "0::/\n", {"cpu.max": junk})
    assert _cpus(root, proc, affinity=4).count == 4


def test_no_cgroup_file_system_at_all(tmp_path: Path) -> None:
    budget = usable_cpus(tmp_path / "absent", self_cgroup=tmp_path / "absent-self", affinity=5)
    assert budget.count == 5


def test_the_default_reads_this_process(tmp_path: Path) -> None:
    # Whatever this machine's cgroups say, the count is within 1..the affinity set.
    budget = usable_cpus()
    assert 1 <= budget.count <= len(os.sched_getaffinity(0))
    assert budget.source


def test_workers_zero_uses_the_usable_count_and_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(run, "usable_cpus_here", lambda: CpuBudget(3, "fake quota 2.5 CPUs"))
    config = load_config({"executor": "parallel", "workers": "0"}, environ={})
    assert run._workers(config) == 3
    with caplog.at_level(logging.INFO, logger="connector.job.run"):
        executor = run._executor(config)
    assert executor.workers == 3  # type: ignore[attr-defined]
    assert "3 workers (workers 0: one per usable CPU; fake quota 2.5 CPUs)" in caplog.text
    chosen = load_config({"executor": "parallel", "workers": "5"}, environ={})
    assert run._workers(chosen) == 5
