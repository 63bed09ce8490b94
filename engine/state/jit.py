"""Compiled per-key kernels: where numba's JIT cache goes, and the warm-up before a fork.

The built-in tables may run compiled loops (DESIGN.md section 2): plain ``@njit`` with
``cache=True``, never ``parallel=True`` (workers are forked processes). Two rules follow.

- **The cache never fails a job.** numba writes compiled code next to the module or to
  ``NUMBA_CACHE_DIR``; on a read-only filesystem with neither writable it raises "no locator
  available" when a cached function is first compiled. This module picks the directory
  *before* numba is imported: ``NUMBA_CACHE_DIR`` when set and writable, else
  ``$XDG_CACHE_HOME/restream/numba`` (``~/.cache/...``), else a directory in ``TMPDIR``
  (the system's temporary folder when unset); when none is writable, kernels compile
  without a cache (slower start, same results), and :data:`CACHE_DIR` is None.
- **Compile before forking.** :func:`warm_up` compiles every kernel (a call on tiny inputs
  of the exact argument types used later), so forked workers inherit the machine code instead
  of each compiling it again; executors call it in the coordinator and report its time.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["CACHE_DIR", "jit", "register_warm_up", "warm_up"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError:
        return False
    return True


def _pick_cache_dir() -> str | None:
    configured = os.environ.get("NUMBA_CACHE_DIR")
    candidates = [configured] if configured else []
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    candidates.append(os.path.join(home, "restream", "numba"))
    uid = os.getuid() if hasattr(os, "getuid") else 0
    # TMPDIR as given: gettempdir() would quietly fall back to /tmp when it is unwritable.
    temp = os.environ.get("TMPDIR") or tempfile.gettempdir()
    candidates.append(os.path.join(temp, f"restream-numba-{uid}"))
    for path in candidates:
        if _writable(path):
            if path != configured:
                if configured:
                    logger.warning(
                        "NUMBA_CACHE_DIR=%s is not writable; caching compiled kernels in %s",
                        configured,
                        path,
                    )
                os.environ["NUMBA_CACHE_DIR"] = path
            return path
    logger.warning(
        "no writable directory for compiled kernels (tried %s); compiling without a cache",
        ", ".join(candidates),
    )
    return None


#: Where compiled kernels are cached, or None when no directory was writable.
CACHE_DIR = _pick_cache_dir()

import numba  # noqa: E402  (after NUMBA_CACHE_DIR is settled: numba reads it at import)

if CACHE_DIR is not None:
    # Also when numba was imported before this module (it read the variable then).
    numba.config.CACHE_DIR = CACHE_DIR  # type: ignore[attr-defined]


def jit(fn: F) -> F:
    """``numba.njit`` with the cache when there is a writable place for it."""
    compiled: F = numba.njit(cache=CACHE_DIR is not None, nogil=True)(fn)  # type: ignore[assignment]
    return compiled


_WARM_UPS: list[Callable[[], None]] = []
_warm = False


def register_warm_up(fn: Callable[[], None]) -> Callable[[], None]:
    """Add ``fn`` (which calls some kernels on tiny inputs) to what :func:`warm_up` runs."""
    _WARM_UPS.append(fn)
    return fn


def warm_up() -> float:
    """Compile (or load from the cache) every registered kernel; seconds it took (0 when
    already done in this process or its parent)."""
    global _warm  # noqa: PLW0603  (once per process, inherited by forks)
    if _warm:
        return 0.0
    started = time.perf_counter()
    # The kernels' modules register themselves on import.
    from engine import keys  # noqa: F401
    from engine.state import (  # noqa: F401
        distinctkernel,
        epoch,
        keyindex,
        packing,
        rangeindex,
        regions,
        segscan,
        unwindowed,
        winkernels,
    )

    for fn in _WARM_UPS:
        fn()
    _warm = True
    seconds = time.perf_counter() - started
    logger.info(
        "compiled per-key kernels ready in %.2f s (JIT cache: %s)",
        seconds,
        CACHE_DIR or "none, not writable",
    )
    return seconds
