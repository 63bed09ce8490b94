"""Tables: the versioned, partitioned state that operators read and write (DESIGN.md §2).

The map of this folder:

- ``spec.py`` what a built-in table computes (:class:`AggregateSpec`), the scalar and
  vector interfaces; ``aggregates.py`` picks an implementation (``make_scalar``,
  ``make_vector``); ``scalar.py`` the one-event-at-a-time oracle; ``vector.py`` the
  vectorised dispatch.
- ``unwindowed.py`` one value per key across epochs; ``windowed.py`` sliding and hopping
  windows of every kind but distinct; ``distinct.py`` windowed distinct counts.
- Per-key history: ``regions.py`` (records of a key kept sorted by time in one region of
  arrays), ``rangeindex.py`` (a segment tree over its rows for range extremes),
  ``keyindex.py`` (int64 keys to dense slots), ``clock.py`` (stream time for tables with an
  allowed lateness), ``colnames.py`` (the names of the records' columns).
- One epoch's writes: ``epoch.py`` (grouped by key; which of them a read sees) and
  ``wparts.py`` (time keys, time order per key).
- Compiled per-key kernels (numba): ``winkernels.py`` (window reads among an epoch's
  writes), ``distinctkernel.py`` (distinct counts over ranges), ``jit.py`` (where the JIT
  cache goes, warm-up before workers fork).
- numpy helpers: ``packing.py`` (packed sorts), ``search.py`` (batched searches),
  ``segscan.py`` (segmented scans).
- ``pytables.py`` versioned tables for Python merge functions.
"""
