"""Memory of a process tree, as the machine pays for it: summed PSS, sampled.

Peak RSS (``VmHWM``) summed over processes overstates what a run uses when its workers are
forked: a forked worker's RSS counts every page it shares copy-on-write with the coordinator
(the benchmark starts its workers before loading the data set for this reason), so the same
page is counted once per process. The
proportional set size (PSS) divides each shared page among the processes that map it, so PSS
summed over a process tree counts every page once, like a container's memory accounting does.
The kernel keeps no peak PSS, so :class:`PeakPss` samples it from a thread; a peak shorter
than the interval can be missed. Linux only: elsewhere it reports ``None``.

It also keeps what a watchdog needs to explain a child's death or silence after the fact
(:class:`Watched`): a dead process's ``/proc`` entry is gone, so its peak RSS (``VmHWM``) is
sampled while it lives, and its scheduler state says whether it is stopped (SIGSTOP) or
running. :func:`oom_kills` reads the cgroup's count of OOM kills, where the cgroup shows it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from types import TracebackType

__all__ = ["PeakPss", "Watched", "child_pids", "oom_kills", "process_state", "tree_pss"]

_PROC = Path("/proc")
#: A sign of life samples a child at most this often (seconds): a parallel run hears from
#: each worker after every phase (~440 times a worker at 10M events), and two ``/proc`` reads
#: each time took 0.09 s of the coordinator's 1.1 s of CPU at 4M events.
_SAMPLE_EVERY = 0.05


def _pss(pid: int) -> int:
    """PSS of one process, bytes (0 if it is gone)."""
    try:
        text = (_PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def child_pids(pid: int) -> list[int]:
    """Direct children of a process (through each of its threads)."""
    out: list[int] = []
    try:
        tasks = list((_PROC / str(pid) / "task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def tree_pss(pid: int) -> int:
    """PSS summed over ``pid`` and all its descendants, bytes."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += _pss(p)
        todo.extend(child_pids(p))
    return total


class PeakPss:
    """The peak of :func:`tree_pss` over the life of a ``with`` block, sampled every
    ``interval`` seconds; ``peak_bytes`` is None where ``/proc`` has no ``smaps_rollup``."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_bytes: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="restream-pss", daemon=True)

    def __enter__(self) -> PeakPss:
        if (_PROC / str(self.pid) / "smaps_rollup").exists():
            self.peak_bytes = tree_pss(self.pid)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
            self._record()

    def _record(self) -> None:
        now = tree_pss(self.pid)
        if self.peak_bytes is None or now > self.peak_bytes:
            self.peak_bytes = now

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._record()


#: ``/proc/PID/stat`` states, as a watchdog reports them.
_STATES = {
    "R": "running",
    "S": "sleeping",
    "D": "in uninterruptible I/O",
    "T": "stopped (SIGSTOP?)",
    "t": "stopped by a debugger",
    "Z": "exited (a zombie)",
}


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name, or None if it is gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def process_state(pid: int) -> str | None:
    """How the kernel sees ``pid`` now ("running", "stopped (SIGSTOP?)", ...), or None."""
    fields = _stat_fields(pid)
    if not fields:
        return None
    return _STATES.get(fields[0], fields[0])


def _cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of ``pid``, seconds."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 13:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _vm_hwm(pid: int) -> int | None:
    """Peak resident set size of ``pid`` (``VmHWM``), bytes."""
    try:
        text = (_PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def oom_kills() -> int | None:
    """OOM kills in this process's cgroup so far (cgroup v2 ``memory.events``), or None."""
    try:
        lines = (_PROC / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            path = Path("/sys/fs/cgroup") / line[3:].strip().lstrip("/") / "memory.events"
            try:
                events = path.read_text()
            except OSError:
                return None
            for entry in events.splitlines():
                name, _, value = entry.partition(" ")
                if name == "oom_kill":
                    return int(value)
    return None


class Watched:
    """What a parent knows of a child process beyond its exit code: its last sampled peak
    RSS and CPU time, and the cgroup's OOM kills since watching began.

    Call :meth:`sample` whenever the child shows a sign of life (cheap: two small ``/proc``
    reads, at most every 50 ms); after its death :meth:`death` words its exit code with what
    was sampled.
    """

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.peak_rss: int | None = None
        self.cpu_s: float | None = None
        self._oom_before = oom_kills()
        self._sampled = -_SAMPLE_EVERY
        self.sample(force=True)

    def sample(self, *, force: bool = False) -> None:
        """Record the child's peak RSS and CPU time now (kept if it is gone); without
        ``force``, only if the last sample is older than 50 ms."""
        if self.pid is None:
            return
        now = time.monotonic()
        if not force and now - self._sampled < _SAMPLE_EVERY:
            return
        self._sampled = now
        peak = _vm_hwm(self.pid)
        if peak is not None:
            self.peak_rss = peak
        cpu = _cpu_seconds(self.pid)
        if cpu is not None:
            self.cpu_s = cpu

    def death(self, exitcode: int) -> str:
        """``"was killed by SIGKILL (out of memory? ...)"`` or ``"exited with code 3"``."""
        if exitcode >= 0:
            return f"exited with code {exitcode}"
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if exitcode != -signal.SIGKILL:
            return f"was killed by {name}"
        notes = []
        if self.peak_rss is not None:
            notes.append(f"its peak RSS was at least {self.peak_rss / 2**20:,.0f} MiB")
        now = oom_kills()
        if now is not None and self._oom_before is not None and now > self._oom_before:
            notes.append(f"the OOM killer ran {now - self._oom_before} time(s) in this cgroup")
        return f"was killed by SIGKILL (out of memory? {'; '.join(notes) or 'no memory figures'})"

    def stall(self) -> str:
        """What the child is doing now, and its CPU time since the last recorded sample (at
        most 50 ms before its last sign of life; a stopped or blocked child uses none, a
        child in an endless loop uses it all)."""
        if self.pid is None:
            return "its state is unknown"
        state = process_state(self.pid)
        before = self.cpu_s
        self.sample(force=True)
        if state is None:
            return "it is gone"
        if before is None or self.cpu_s is None:
            return f"it is {state}"
        return f"it is {state}, {self.cpu_s - before:.1f} s of CPU since its last sign of life"
