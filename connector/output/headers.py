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
:func:`header_sections` builds the headers of many records at once as they go on the wire
(for :class:`connector.kafka.native.NativeProducer`), in one compiled pass.
Dead letters always carry their ``restream.*`` headers (:mod:`connector.input.dead_letters`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from connector.config import OutputHeaders
from connector.kafka.batches import ByteRows, decimal_size, put_decimal, put_varint, varint_size
from engine.state.jit import jit, register_warm_up

__all__ = [
    "COMPACT",
    "HEADER_MODES",
    "Identity",
    "compact_values",
    "header_sections",
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


@jit
def _put_bytes(out: Any, at: int, data: Any, lo: int, hi: int) -> int:
    at = put_varint(out, at, hi - lo)
    out[at : at + hi - lo] = data[lo:hi]
    return at + hi - lo


_SEQ_NAME = np.frombuffer(b"restream.seq", dtype=np.uint8)
_SOURCE_NAME = np.frombuffer(b"restream.source", dtype=np.uint8)
_JOB_NAME = np.frombuffer(b"restream.job", dtype=np.uint8)
_COMPACT_NAME = np.frombuffer(COMPACT.encode(), dtype=np.uint8)


@jit
def _full_sections(
    seq: Any,
    topic: Any,
    partition: Any,
    offset: Any,
    names: Any,
    name_offsets: Any,
    job: Any,
    seq_name: Any,
    source_name: Any,
    job_name: Any,
) -> tuple[Any, Any]:
    n = len(seq)
    fixed = 1 + 3 + len(seq_name) + len(source_name) + len(job_name)
    fixed += varint_size(len(job)) + len(job)
    offsets = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        digits = decimal_size(seq[i])
        t = topic[i]
        source = name_offsets[t + 1] - name_offsets[t] + 2
        source += decimal_size(partition[i]) + decimal_size(offset[i])
        size = fixed + varint_size(digits) + digits + varint_size(source) + source
        offsets[i + 1] = offsets[i] + size
    out = np.empty(offsets[n], dtype=np.uint8)
    for i in range(n):
        at = offsets[i]
        out[at] = 6  # three headers
        at = _put_bytes(out, at + 1, seq_name, 0, len(seq_name))
        at = put_varint(out, at, decimal_size(seq[i]))
        at = put_decimal(out, at, seq[i])
        at = _put_bytes(out, at, source_name, 0, len(source_name))
        t = topic[i]
        lo, hi = name_offsets[t], name_offsets[t + 1]
        source = hi - lo + 2 + decimal_size(partition[i]) + decimal_size(offset[i])
        at = put_varint(out, at, source)
        out[at : at + hi - lo] = names[lo:hi]
        at += hi - lo
        out[at] = 47  # "/"
        at = put_decimal(out, at + 1, partition[i])
        out[at] = 64  # "@"
        at = put_decimal(out, at + 1, offset[i])
        at = _put_bytes(out, at, job_name, 0, len(job_name))
        at = _put_bytes(out, at, job, 0, len(job))
    return out, offsets


@jit
def _compact_sections(seq: Any, job: Any, name: Any) -> tuple[Any, Any]:
    n = len(seq)
    size = 1 + varint_size(len(name)) + len(name) + varint_size(8 + len(job)) + 8 + len(job)
    offsets = np.arange(n + 1, dtype=np.int64) * size
    out = np.empty(n * size, dtype=np.uint8)
    for i in range(n):
        at = offsets[i]
        out[at] = 2  # one header
        at = _put_bytes(out, at + 1, name, 0, len(name))
        at = put_varint(out, at, 8 + len(job))
        v = seq[i]
        for k in range(8):
            out[at + k] = (v >> (8 * (7 - k))) & 0xFF
        at += 8
        out[at : at + len(job)] = job
    return out, offsets


def header_sections(
    mode: OutputHeaders,
    seq: npt.NDArray[np.int64],
    job: bytes,
    sources: tuple[
        Sequence[str], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]
    ],
) -> ByteRows | None:
    """Each record's header section on the wire (a count, then each header's name and
    value with their lengths) in ``mode``; None for ``none``.

    ``sources`` is ``(topic names, topic index, partition, offset)`` per record, what
    ``restream.source`` says in ``full`` mode. Byte for byte the headers that the
    list-of-tuples form of the same mode gives (``KafkaSink``'s librdkafka path)."""
    if mode == "none":
        return None
    seq = np.ascontiguousarray(seq, dtype=np.int64)
    job_bytes = np.frombuffer(job, dtype=np.uint8)
    if mode == "compact":
        data, offsets = _compact_sections(seq, job_bytes, _COMPACT_NAME)
        return ByteRows(data, offsets)
    names, topic, partition, offset = sources
    encoded = ByteRows.of([name.encode() for name in names])
    data, offsets = _full_sections(
        seq,
        np.ascontiguousarray(topic, dtype=np.int64),
        np.ascontiguousarray(partition, dtype=np.int64),
        np.ascontiguousarray(offset, dtype=np.int64),
        encoded.data,
        encoded.offsets,
        job_bytes,
        _SEQ_NAME,
        _SOURCE_NAME,
        _JOB_NAME,
    )
    return ByteRows(data, offsets)


@register_warm_up
def _warm() -> None:
    one = np.array([1], dtype=np.int64)
    for mode in HEADER_MODES:
        header_sections(mode, one, b"j", (["t"], one * 0, one, one))
