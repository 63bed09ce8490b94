"""How restream's processes behave: child processes, the garbage collector, fail points.

Shared by the job (the coordinator) and the sink process, which is why it is not in
:mod:`connector.job`::

    processes.py  fork or forkserver, whichever is safe next to librdkafka's threads;
                  children that die with their parent; run_in_processes
    gcpolicy.py   replay_collection: full collections 100x rarer during a replay
    failpoints.py named places where a fault-injection test makes the process SIGKILL itself
                  (``RESTREAM_FAILPOINTS``); a dict lookup when unset
    cpus.py       the CPUs the process may use: the pod's cgroup quota and affinity set,
                  not the node's CPU count (what ``workers: 0`` means)
    hugepages.py  numpy's huge-page advice off during a replay (page faults that compact
                  memory cost more than the pages save); NUMPY_MADVISE_HUGEPAGE=1 keeps it
"""

from __future__ import annotations

from connector.runtime import failpoints
from connector.runtime.cpus import CpuBudget, usable_cpus, usable_cpus_here
from connector.runtime.gcpolicy import REPLAY_THRESHOLDS, replay_collection
from connector.runtime.hugepages import prefer_small_pages
from connector.runtime.processes import (
    kafka_client_threads,
    process_context,
    run_in_processes,
)

__all__ = [
    "REPLAY_THRESHOLDS",
    "CpuBudget",
    "failpoints",
    "kafka_client_threads",
    "prefer_small_pages",
    "process_context",
    "replay_collection",
    "run_in_processes",
    "usable_cpus",
    "usable_cpus_here",
]
