"""Python's cyclic garbage collector, tuned for a replay.

A replay allocates millions of short-lived container objects at a steady rate: a Kafka
``Message`` per input record, tuples of its timestamp, lists of output headers. Many of them
stay alive for a while (a partition's records wait for the merge, up to 50,000 of them), so
they reach the oldest generation, and with CPython's default thresholds (700, 10, 10) the
collector then runs full collections over every tracked object again and again. Reading 2M
events of the spam backtest from Kafka took 5.3-6.4 s of CPU with the defaults, 2.9-3.1 s
with full collections 100 times rarer, 3.4-3.6 s with the collector off.

The engine itself allocates few such objects (numpy arrays of many rows), so this is the
application's choice, made around a run by :func:`replay_collection` and undone after it.
Cycles still get collected: young ones as often as before, old ones less often.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["REPLAY_THRESHOLDS", "replay_collection"]

#: (generation 0, generation 1, generation 2) thresholds during a run; see the module
#: docstring. Generation 0 at 100,000 allocations rather than 700 (a few MB of young objects
#: at most), and a full collection after 1,000 of generation 1 rather than 10.
REPLAY_THRESHOLDS = (100_000, 50, 1_000)


@contextlib.contextmanager
def replay_collection() -> Iterator[None]:
    """Run the body with :data:`REPLAY_THRESHOLDS` (processes forked inside inherit them),
    then restore the thresholds that were set before."""
    before = gc.get_threshold()
    gc.set_threshold(*REPLAY_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
