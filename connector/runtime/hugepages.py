"""Transparent huge pages for numpy's large arrays: off during a replay, unless asked for.

numpy advises the kernel to back every array of 4 MiB or more with 2 MiB pages
(``madvise(MADV_HUGEPAGE)``). Where the kernel's THP ``defrag`` setting is ``madvise`` (a
common default), a page fault in such an array that finds no free huge page compacts memory
there and then. A replay allocates and drops hundreds of MB a second (epochs, exchanged
parts, tables that grow by doubling), so on a machine that has been up a while those faults
cost more than the huge pages save: the spam backtest's batch executor on 3M uniform events
took 7.9-8.3 s of CPU with numpy's default and 5.8-6.0 s without (three alternating runs
each, 2-core machine with ``enabled`` and ``defrag`` both ``madvise``).

:func:`prefer_small_pages` turns the advice off in this process and, through numpy's own
``NUMPY_MADVISE_HUGEPAGE`` variable, in the processes it starts that import numpy afresh (the
sink process, spawned benchmark children); forked workers inherit it. ``NUMPY_MADVISE_HUGEPAGE=1``
in the environment keeps numpy's default.
"""

from __future__ import annotations

import logging
import os

from numpy._core import multiarray

__all__ = ["ENV", "prefer_small_pages"]

logger = logging.getLogger(__name__)

#: numpy's variable (read when numpy is imported): "0" no huge-page advice, "1" advice.
ENV = "NUMPY_MADVISE_HUGEPAGE"


def prefer_small_pages() -> bool:
    """Turn numpy's huge-page advice off unless :data:`ENV` asks for it; whether it is on."""
    os.environ.setdefault(ENV, "0")
    wanted = os.environ[ENV].strip() not in ("", "0")
    setter = getattr(multiarray, "_set_madvise_hugepage", None)
    if setter is None:  # a numpy without the switch: its import read the variable
        logger.debug("numpy has no _set_madvise_hugepage; %s applies to new processes", ENV)
        return wanted
    setter(wanted)
    return wanted
