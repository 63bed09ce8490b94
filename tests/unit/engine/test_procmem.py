"""The sampled peak of a process tree's summed PSS."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

from engine.procmem import PeakPss, tree_pss

linux = pytest.mark.skipif(
    not os.path.exists("/proc/self/smaps_rollup"), reason="PSS needs Linux /proc smaps_rollup"
)


@linux
def test_tree_pss_counts_this_process() -> None:
    before = tree_pss(os.getpid())
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, every page touched
    after = tree_pss(os.getpid())
    assert block.sum() == len(block)
    assert after - before > 48 * 2**20


@linux
def test_peak_outlives_the_memory_it_saw() -> None:
    with PeakPss(os.getpid(), interval=0.02) as pss:
        start = pss.peak_bytes
        block = np.ones(128 * 2**20 // 8)
        time.sleep(0.2)
        del block
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
