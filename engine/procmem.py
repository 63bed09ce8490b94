"""Memory of a process tree, as the machine pays for it: summed PSS, sampled.

Peak RSS (``VmHWM``) summed over processes overstates what a run uses when its workers are
forked: a forked worker's RSS counts every page it shares copy-on-write with the coordinator
(the benchmark starts its workers before loading the data set for this reason), so the same
page is counted once per process. The
proportional set size (PSS) divides each shared page among the processes that map it, so PSS
summed over a process tree counts every page once, like a container's memory accounting does.
The kernel keeps no peak PSS, so :class:`PeakPss` samples it from a thread; a peak shorter
than the interval can be missed. Linux only: elsewhere it reports ``None``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType

__all__ = ["PeakPss", "child_pids", "tree_pss"]

_PROC = Path("/proc")


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
