"""The ``restream`` headers of output records, in the three modes of ``output_headers``.

- ``full`` (the default): three headers, ``restream.seq`` (decimal seq of the event that
  produced the record), ``restream.source`` (``topic/partition@offset`` of that event) and
  ``restream.job`` (the job id).
- ``compact``: one header ``restream`` whose value is the seq as 8 bytes, big-endian two's
  complement, followed by the job id in UTF-8 (:func:`compact_values`, :func:`parse_compact`).
  A resume finds its place and ownership from it just as from ``full`` headers; only the
  source coordinates are gone.
- ``none``: no headers. Nothing in a record says which job wrote it or at which seq, so a
  resume skips by count from the checkpoint's marks instead (:mod:`connector.output.topics`).

Whatever the mode, :func:`identity` reads a record's headers back as ``(job, seq, source)``.
Dead letters always carry their ``restream.*`` headers (:mod:`connector.input.dead_letters`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from connector.config import OutputHeaders

__all__ = [
    "COMPACT",
    "HEADER_MODES",
    "Identity",
    "compact_values",
    "identity",
    "parse_compact",
]

HEADER_MODES: tuple[OutputHeaders, ...] = ("full", "compact", "none")
#: The header of ``compact`` mode.
COMPACT: Literal["restream"] = "restream"
_SEQ_BYTES = 8

#: What a record's headers say about it: the job that wrote it, its seq, its source.
Identity = tuple[str | None, int | None, str | None]


def compact_values(seq: npt.NDArray[np.int64], job: bytes) -> list[bytes]:
    """The ``restream`` header value of each record with ``seq``: 8 bytes of seq, then ``job``.

    Built as one ``(n, 8 + len(job))`` byte matrix viewed as fixed-size void records, whose
    ``tolist`` gives one bytes object a row at C speed (no per-record Python code); void,
    not ``S``, because ``S`` would drop trailing zero bytes."""
    n = len(seq)
    width = _SEQ_BYTES + len(job)
    rows = np.empty((n, width), dtype=np.uint8)
    rows[:, :_SEQ_BYTES] = np.ascontiguousarray(seq, dtype=">i8").view(np.uint8).reshape(n, 8)
    rows[:, _SEQ_BYTES:] = np.frombuffer(job, dtype=np.uint8)
    values: list[bytes] = rows.view(f"V{width}").ravel().tolist()
    return values


def parse_compact(value: bytes) -> tuple[int, str] | None:
    """``(seq, job)`` of a ``restream`` header value; None if it is not one."""
    if len(value) <= _SEQ_BYTES:
        return None
    try:
        job = value[_SEQ_BYTES:].decode()
    except UnicodeDecodeError:
        return None
    return int.from_bytes(value[:_SEQ_BYTES], "big", signed=True), job


def identity(headers: Sequence[tuple[str, Any]] | Mapping[str, Any] | None) -> Identity:
    """``(job, seq, source)`` of a record from its headers (``full`` or ``compact``); each
    None where the headers do not say (``none`` mode: all three)."""
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or [])
    found = {k: v for k, v in pairs if isinstance(v, bytes)}
    packed = found.get(COMPACT)
    if packed is not None:
        parsed = parse_compact(packed)
        if parsed is not None:
            return parsed[1], parsed[0], None
    job = found.get("restream.job")
    seq = found.get("restream.seq")
    source = found.get("restream.source")
    return (
        None if job is None else job.decode(errors="replace"),
        int(seq) if seq is not None and seq.isdigit() else None,
        None if source is None else source.decode(errors="replace"),
    )
