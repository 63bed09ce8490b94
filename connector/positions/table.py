"""The table that ``restream positions`` prints: resolved ranges, record counts, time spans.

Record times are those of each range's first and last record, read one by one through an
:class:`~connector.kafka.offsets.OffsetsClient` (which never joins a group); nothing else is read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from connector.kafka.offsets import OffsetsClient, PartitionKey
from connector.positions.ranges import PartitionRange, ResolvedRanges, format_timestamp

__all__ = ["describe_ranges"]

_EDGE_PROBE = 64  # offsets searched at each end of a range for its first and last record


def describe_ranges(ranges: ResolvedRanges, client: OffsetsClient | None) -> str:
    """The table that ``restream positions`` prints: one row per partition, then totals.

    Columns: topic, partition, start and end offsets, records (offsets; an upper bound, see
    :attr:`PartitionRange.records`) and the retained range. With a ``client`` also the
    timestamps of each range's first and last record, fetched one by one, and per topic and
    overall the time span from the earliest first to the latest last record.
    """
    with_times = client is not None
    times: dict[PartitionKey, tuple[int | None, int | None]] = {}
    if client is not None:
        times = {r.tp: _edge_times(r, client) for r in ranges.ranges if r.records}
    header = ["topic", "partition", "start", "end", "records", "retained"]
    if with_times:
        header += ["first record", "last record", "span"]
    rows: list[list[str]] = []
    for topic, parts in ranges.by_topic().items():
        for r in parts:
            row = [topic, str(r.partition), str(r.start), str(r.end), str(r.records)]
            row.append(f"{r.low}..{r.high}")
            if with_times:
                first, last = times.get(r.tp, (None, None))
                row += [_time(first, r), _time(last, r), ""]
            rows.append(row)
        rows.append(_total_row(topic, parts, times, with_times))
    rows.append(_total_row("all topics", ranges.ranges, times, with_times))
    right = {"partition", "start", "end", "records"}
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            (cell.rjust(width) if name in right else cell.ljust(width))
            for name, cell, width in zip(header, row, widths, strict=True)
        ).rstrip()
        for row in [header, *rows]
    ]
    lines += [
        "",
        "records: offsets in [start, end); compaction and transaction markers leave fewer records.",
        "retained: the partition's low..high watermarks when resolved.",
    ]
    if any(None in pair for pair in times.values()):
        lines.append(
            f"?: no record within {_EDGE_PROBE} offsets of that end of the range (compaction "
            "or transaction markers)."
        )
    return "\n".join(lines) + "\n"


def _edge_times(r: PartitionRange, client: OffsetsClient) -> tuple[int | None, int | None]:
    """Timestamps of the first and last record in the range (None: none near that end)."""
    whole = r.records <= 2 * _EDGE_PROBE
    if whole:
        offsets = list(range(r.start, r.end))
    else:
        offsets = [*range(r.start, r.start + _EDGE_PROBE), *range(r.end - _EDGE_PROBE, r.end)]
    found = client.timestamps(r.tp, offsets)
    present = sorted(o for o in found if r.start <= o < r.end)
    head = present if whole else [o for o in present if o < r.start + _EDGE_PROBE]
    tail = present if whole else [o for o in present if o >= r.end - _EDGE_PROBE]
    return (found[head[0]] if head else None, found[tail[-1]] if tail else None)


def _total_row(
    label: str,
    parts: Sequence[PartitionRange],
    times: Mapping[PartitionKey, tuple[int | None, int | None]],
    with_times: bool,
) -> list[str]:
    row = [label, "total", "", "", str(sum(r.records for r in parts)), ""]
    if with_times:
        edges = [times[r.tp] for r in parts if r.tp in times]
        firsts = [first for first, _ in edges if first is not None]
        lasts = [last for _, last in edges if last is not None]
        first, last = (min(firsts) if firsts else None), (max(lasts) if lasts else None)
        span = _duration(last - first) if first is not None and last is not None else ""
        row += [_when(first), _when(last), span]
    return row


def _time(timestamp_ms: int | None, r: PartitionRange) -> str:
    return "-" if not r.records else _when(timestamp_ms)


def _when(timestamp_ms: int | None) -> str:
    if timestamp_ms is None:
        return "?"
    # Always with milliseconds, so that the column lines up.
    whole = format_timestamp(timestamp_ms - timestamp_ms % 1000)
    return f"{whole[:-1]}.{timestamp_ms % 1000:03d}Z"


def _duration(ms: int) -> str:
    sign, ms = ("-", -ms) if ms < 0 else ("", ms)
    seconds, millis = divmod(ms, 1000)
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    clock = f"{hour:02d}:{minute:02d}:{second:02d}.{millis:03d}"
    return f"{sign}{days}d {clock}" if days else f"{sign}{clock}"
