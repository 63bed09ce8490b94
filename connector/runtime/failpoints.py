"""Fail points: named places where a fault-injection test can make the job die on purpose.

``RESTREAM_FAILPOINTS=checkpoint.write:2,sink.epoch:5`` makes the process SIGKILL itself the
2nd time it reaches ``checkpoint.write`` or the 5th time it reaches ``sink.epoch`` (whichever
comes first). ``sink.epoch:5:segv`` makes it die of SIGSEGV there instead, as a fault in
native code (the Kafka client, a compiled kernel) would: this process alone, with the crash
report of :func:`connector.cli.app.main`. Unset (always, outside tests) a fail point costs
one dict lookup. The points:

- ``sink.epoch``: an epoch's output was handed to the producer (not yet flushed), in the
  sink process when there is one (:mod:`connector.output.sink_process`; with several, each
  counts its own epochs and the first to reach the count kills);
- ``checkpoint.flushed``: the output up to a checkpoint is flushed, its snapshot not written;
- ``checkpoint.write``: half of a snapshot file is written (a torn temporary file).
"""

from __future__ import annotations

import os
import signal

__all__ = ["ENV", "hit"]

ENV = "RESTREAM_FAILPOINTS"


def _parse(text: str) -> dict[str, tuple[int, str]]:
    points: dict[str, tuple[int, str]] = {}
    for item in text.split(","):
        name, _, rest = item.strip().partition(":")
        nth, _, how = rest.partition(":")
        if name:
            points[name] = (int(nth or "1"), how or "kill")
    return points


_POINTS = _parse(os.environ.get(ENV, ""))
_HITS: dict[str, int] = {}


def hit(name: str) -> None:
    """Die here (SIGKILL, no cleanup; or SIGSEGV) if the environment asks for it on this hit."""
    if not _POINTS:
        return
    point = _POINTS.get(name)
    if point is None:
        return
    nth, how = point
    _HITS[name] = _HITS.get(name, 0) + 1
    if _HITS[name] == nth:
        if how == "segv":
            signal.raise_signal(signal.SIGSEGV)
            return
        # Like a pod's death: the whole process group when it is the job's (this process or
        # its parent, the sink process's, leads it), workers and sink process included.
        group = os.getpgid(0)
        if group in (os.getpid(), os.getppid()):
            os.killpg(group, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
