"""The sampled peak of a process tree's summed PSS."""

from __future__ import annotations

import mmap
import os
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.procmem import PeakPss, tree_pss

linux = pytest.mark.skipif(
    not os.path.exists("/proc/self/smaps_rollup"), reason="PSS needs Linux /proc smaps_rollup"
)


def _touched(size: int) -> mmap.mmap:
    """Fresh anonymous pages, every one written: resident, and unmapped again on close (a
    heap allocation could reuse pages the process already had, or keep them after free)."""
    block = mmap.mmap(-1, size)
    for at in range(0, size, mmap.PAGESIZE):
        block[at] = 1
    return block


@linux
def test_tree_pss_counts_this_process() -> None:
    before = tree_pss(os.getpid())
    block = _touched(64 * 2**20)
    after = tree_pss(os.getpid())
    block.close()
    assert after - before > 48 * 2**20


@linux
def test_peak_outlives_the_memory_it_saw() -> None:
    with PeakPss(os.getpid(), interval=0.02) as pss:
        start = pss.peak_bytes
        block = _touched(128 * 2**20)
        time.sleep(0.2)
        block.close()
    assert start is not None and pss.peak_bytes is not None
    assert pss.peak_bytes - start > 96 * 2**20
    assert pss.peak_bytes > tree_pss(os.getpid()) + 64 * 2**20


def test_a_process_without_proc_entries_reports_none() -> None:
    gone = 2**22 + 12345  # above the default pid_max: no such process
    with PeakPss(gone) as pss:
        pass
    assert pss.peak_bytes is None
    assert tree_pss(gone) == 0
    assert sys.platform != "linux" or tree_pss(os.getpid()) > 0


def test_a_watched_process_reports_its_state_and_a_sigkill_as_a_possible_oom_kill() -> None:
    import os
    import signal

    from engine.procmem import Watched, process_state

    if not Path("/proc/self/status").exists():
        pytest.skip("reads /proc")
    me = Watched(os.getpid())
    assert me.peak_rss is not None and me.peak_rss > 0
    assert process_state(os.getpid()) == "running"
    assert me.stall().startswith("it is running, ")
    assert re.fullmatch(
        r"was killed by SIGKILL \(out of memory\? its peak RSS was at least [\d,]+ MiB.*\)",
        me.death(-signal.SIGKILL),
    )
    assert me.death(-signal.SIGTERM) == "was killed by SIGTERM"
    assert me.death(3) == "exited with code 3"
    assert Watched(None).death(-signal.SIGKILL) == (
        "was killed by SIGKILL (out of memory? no memory figures)"
    )


def test_signs_of_life_sample_a_child_at_most_every_50_ms(monkeypatch: pytest.MonkeyPatch) -> None:
    """A parallel run hears from each worker after every phase; sampling each time read
    /proc twice per message. Within 50 ms of a sample nothing is read again, unless forced
    (a stall report needs the CPU time now)."""
    import os

    from engine import procmem

    reads: list[int] = []
    monkeypatch.setattr(procmem, "_vm_hwm", lambda pid: reads.append(pid) or 1024)
    clock = [100.0]
    monkeypatch.setattr(procmem, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    me = procmem.Watched(os.getpid())
    assert len(reads) == 1  # watching starts with a sample
    me.sample()
    clock[0] += 0.049
    me.sample()
    assert len(reads) == 1
    clock[0] += 0.002
    me.sample()
    assert len(reads) == 2
    me.stall()
    assert len(reads) == 3
    me.sample(force=True)
    assert len(reads) == 4
