"""Names of the record columns of the windowed tables' region stores.

A :class:`~engine.state.regions.RegionStore` keeps its columns in a dict keyed by these short
strings, and that dict is pickled into checkpoints (state format 4), so the strings stay as
they are; code names them by these constants. The same names key an epoch's grouped writes
(``WindowedTable._g``, ``DistinctWindowedTable._g``), whose columns become records.
"""

from __future__ import annotations

__all__ = [
    "COUNT",
    "EXTREME",
    "FIRST_ORDER",
    "FIRST_VALUE",
    "LAST_ORDER",
    "LAST_VALUE",
    "ORDER",
    "PREFIX_COUNT",
    "PREFIX_EXTREME",
    "PREFIX_VALUE",
    "TIME_KEY",
    "VALUE",
    "WRITE_POS",
    "WRITE_TS",
]

#: A record's time key: its write's timestamp (sliding windows) or its pane's index
#: (hopping and tumbling windows: timestamp // pane); regions are sorted by it.
TIME_KEY = "tk"
#: The write's order among all the table's writes (sliding first/last/since_last), which
#: breaks ties of equal time keys and says which write came first or last.
ORDER = "o"
#: The write's position among its key's writes (sliding first/last/since_last); how far a
#: record sits from it bounds the disorder of the region (``RegionStore.disp``).
WRITE_POS = "wp"
#: Writes in a pane (hopping count and ratio; a sliding record is one write).
COUNT = "n"
#: The value as int64: the write's (sliding) or the pane's sum (hopping) for sum and ratio;
#: the value's id for distinct. Also an epoch's grouped values for every kind.
VALUE = "v"
#: Min/max: the value's order key (floats mapped to ordered int64), or the pane's extreme.
EXTREME = "k"
#: First: the order of the pane's first write, and its value (hopping).
FIRST_ORDER = "fo"
FIRST_VALUE = "fv"
#: Last and since_last: the order of the pane's last write (hopping), and its value (last)
#: or timestamp (since_last), sliding and hopping.
LAST_ORDER = "lo"
LAST_VALUE = "lv"
#: Prefix columns (running sum or extreme from the region's start) of COUNT, VALUE, EXTREME.
PREFIX_COUNT = "cn"
PREFIX_VALUE = "cv"
PREFIX_EXTREME = "pk"
#: An epoch's grouped write timestamps (since_last only; never stored as a record column).
WRITE_TS = "ts"
