"""Replay positions: their text syntax, their resolution to offset ranges, their table.

::

    syntax.py   ``earliest | latest | ts:TIME | group:NAME | offsets:...`` parsed to Position
    ranges.py   resolve(start, end) -> a PartitionRange per partition (ResolvedRanges),
                through an OffsetsClient (:mod:`connector.kafka.offsets`)
    table.py    describe_ranges: the table ``restream positions`` prints

Every error is a :class:`~connector.errors.ConfigError` raised before anything is read.
"""

from __future__ import annotations

from connector.positions.ranges import PartitionRange, ResolvedRanges, resolve
from connector.positions.syntax import Position, format_timestamp, parse_end, parse_start
from connector.positions.table import describe_ranges

__all__ = [
    "PartitionRange",
    "Position",
    "ResolvedRanges",
    "describe_ranges",
    "format_timestamp",
    "parse_end",
    "parse_start",
    "resolve",
]
