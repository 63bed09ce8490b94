"""Executors: running a plan over a log (DESIGN.md §3).

The map of this folder:

- ``base.py`` the :class:`Executor` protocol, :class:`RunStats`, the automatic epoch size.
- ``serial.py`` the oracle: one event at a time; ``batch.py`` one process, epoch by epoch;
  ``parallel.py`` a coordinator and W forked worker processes.
- ``runtime.py`` one epoch through every phase (shared by batch and the parallel workers);
  ``columns.py`` an epoch's columns as the runtime sees them and the parts workers swap.
- ``worker.py`` a parallel worker's loop and messages; ``placement.py`` which worker runs
  what and which columns cross; ``sharding.py`` which worker owns a key; ``arena.py``
  shared-memory transport; ``snapshot.py`` pickled state for checkpoints.
"""
