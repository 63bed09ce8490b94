"""How many CPUs this process may use: the pod's CPU quota, not the node's CPU count.

In a Kubernetes pod with ``resources.limits.cpu: 2`` on a 64-core node, ``os.cpu_count()``
says 64; sized by it, ``workers: 0`` would start 64 processes that the kernel throttles to two
cores' worth of time, each paying its own memory. The limit is the cgroup's CPU quota
(``cpu.max`` in cgroup v2, ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` in v1), a number of
CPU-seconds per period that the whole cgroup may use; the CPUs the process may run on at all
are its affinity set (``taskset``, cpusets). The usable count is the smaller of the two:
the quota rounded up (1.5 CPUs of quota keep two processes busy part of the time), at least 1.

The cgroup's path comes from ``/proc/self/cgroup``; every level from it up to the mount's root
is read, since a parent's quota bounds its children. With a cgroup namespace (the usual
container) the path is ``/`` and the mount's root is the pod's own cgroup. Files that are
missing or unreadable count as no quota: the count then falls back to the affinity set.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath

__all__ = ["CpuBudget", "usable_cpus", "usable_cpus_here"]

logger = logging.getLogger(__name__)

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_SELF_CGROUP = Path("/proc/self/cgroup")
#: Where cgroup v1 mounts the cpu controller (alone, or with cpuacct).
_V1_MOUNTS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


@dataclass(frozen=True, slots=True)
class CpuBudget:
    """The usable CPU count and where it comes from (for the log line at start)."""

    count: int
    #: e.g. ``cgroup v2 quota 1.5 CPUs (/sys/fs/cgroup/cpu.max), 8 CPUs in the affinity set``.
    source: str


def _cgroup_paths(self_cgroup: Path) -> tuple[str | None, str | None]:
    """The process's cgroup v2 path and cgroup v1 ``cpu`` controller path (None: absent)."""
    try:
        text = self_cgroup.read_text(encoding="utf-8")
    except OSError:
        return None, None
    v2 = v1 = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _levels(mount: Path, path: str | None) -> list[Path]:
    """The cgroup directories from ``path`` (relative to ``mount``) up to ``mount`` itself,
    those that exist."""
    levels = []
    if path:
        current = PurePosixPath(path)
        while current.parts[1:]:  # below "/"
            levels.append(mount / Path(*current.parts[1:]))
            current = current.parent
    levels.append(mount)
    return [level for level in levels if level.is_dir()]


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _v2_quota(directory: Path) -> float | None:
    """CPUs of ``cpu.max`` in ``directory`` (None: no file, ``max``, or unreadable)."""
    text = _read(directory / "cpu.max")
    if not text:
        return None
    fields = text.split()
    if fields[0] == "max":
        return None
    try:
        quota = int(fields[0])
        period = int(fields[1]) if len(fields) > 1 else 100_000
    except ValueError:
        logger.debug("ignoring %s: %r", directory / "cpu.max", text)
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_quota(directory: Path) -> float | None:
    """CPUs of ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (None: -1, none, unreadable)."""
    quota_text = _read(directory / "cpu.cfs_quota_us")
    period_text = _read(directory / "cpu.cfs_period_us")
    if quota_text is None or period_text is None:
        return None
    try:
        quota, period = int(quota_text), int(period_text)
    except ValueError:
        logger.debug("ignoring the cfs quota in %s: %r / %r", directory, quota_text, period_text)
        return None
    return quota / period if quota > 0 and period > 0 else None


def _quota(root: Path, self_cgroup: Path) -> tuple[float, str] | None:
    """The tightest CPU quota on the process's cgroup and its ancestors, and the file that
    sets it; v2 first, v1 when no v2 level has one."""
    v2_path, v1_path = _cgroup_paths(self_cgroup)
    found: list[tuple[float, str]] = []
    for level in _levels(root, v2_path):
        cpus = _v2_quota(level)
        if cpus is not None:
            found.append((cpus, f"cgroup v2 quota {cpus:g} CPUs ({level / 'cpu.max'})"))
    if not found:
        for name in _V1_MOUNTS:
            mount = root / name
            if not mount.is_dir():
                continue
            for level in _levels(mount, v1_path):
                cpus = _v1_quota(level)
                if cpus is not None:
                    where = level / "cpu.cfs_quota_us"
                    found.append((cpus, f"cgroup v1 quota {cpus:g} CPUs ({where})"))
            break
    return min(found, key=lambda item: item[0]) if found else None


def usable_cpus(
    root: Path = _CGROUP_ROOT,
    *,
    self_cgroup: Path = _SELF_CGROUP,
    affinity: int | None = None,
) -> CpuBudget:
    """The CPUs this process may use: ceil(cgroup quota), at least 1, at most the affinity
    set (``affinity``; default: ``os.sched_getaffinity``, else ``os.cpu_count()``). ``root``
    is where the cgroup file system is mounted, ``self_cgroup`` the process's cgroup file
    (parameters so that tests can point them at fake trees)."""
    if affinity is None:
        try:
            affinity = len(os.sched_getaffinity(0))
            allowed = f"{affinity} CPUs in the affinity set"
        except (AttributeError, OSError):  # not Linux
            affinity = os.cpu_count() or 1
            allowed = f"{affinity} CPUs"
    else:
        allowed = f"{affinity} CPUs in the affinity set"
    affinity = max(1, affinity)
    quota = _quota(root, self_cgroup)
    if quota is None:
        return CpuBudget(affinity, f"{allowed}, no cgroup CPU quota")
    cpus, where = quota
    count = max(1, min(affinity, math.ceil(cpus)))
    return CpuBudget(count, f"{where}, {allowed}")


@cache
def usable_cpus_here() -> CpuBudget:
    """:func:`usable_cpus` of this process, read once (a quota does not change mid-run)."""
    return usable_cpus()
