"""Child processes that die with their parent (Linux ``PR_SET_PDEATHSIG``).

A parent killed with SIGKILL (an OOM kill, a test) cannot stop its children; without this
they would linger until their next read of a closed pipe, or go on computing. Used by the
parallel executor's workers, the benchmark's measuring processes, and the embedded broker
(:mod:`tooling.tansu`). Elsewhere than Linux only the "parent already gone" check applies.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["die_with_parent", "die_with_parent_preexec"]

_PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl() -> Callable[..., Any] | None:
    """libc's ``prctl`` on Linux (looked up once), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., Any] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


def _arm(prctl: Callable[..., Any] | None, parent: int) -> None:
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def die_with_parent(parent: int | None = None) -> None:
    """In a child process: have the kernel SIGKILL it when its parent dies (strictly, when
    the thread that started it ends).

    ``parent`` is the parent's pid as the parent saw it (pass it when the child starts
    slowly, as a spawned interpreter does); by default, the parent at the time of the call.
    If that process is gone already (the child was re-parented), this one exits at once.
    """
    _arm(_prctl(), os.getppid() if parent is None else parent)


def die_with_parent_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen` that does :func:`die_with_parent` in
    the child, or None where it cannot.

    ``prctl`` is looked up here, in the parent, so the child between fork and exec only calls
    it (no loader locks taken). PR_SET_PDEATHSIG follows the thread that forked, so it is set
    only from the main thread (which lives as long as the interpreter).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    prctl = _prctl()
    if prctl is None:
        return None
    return functools.partial(_arm, prctl, os.getpid())
