"""Byte strings that stay where they were read: a fetched buffer and where each row is in it.

The native reader (:mod:`connector.kafka.fetcher`) reads keys and values as positions in the
fetch response; :class:`RawRows` lets the decoders use them without one ``bytes`` object per
record: bodies are gathered into a decoder's container in one compiled pass, keys checked in
place. ``rows()`` makes the objects for the few paths that need them (JSON, rows decoded one
at a time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.state.jit import jit, register_warm_up

__all__ = ["RawRows", "ascii_rows", "gather", "valid_decimals"]


@dataclass(frozen=True, slots=True, eq=False)
class RawRows:
    """Row ``i`` is ``data[starts[i]:starts[i] + lengths[i]]``, or None where ``lengths[i]``
    is negative (a null key or value)."""

    data: bytes
    starts: npt.NDArray[np.integer[Any]]
    lengths: npt.NDArray[np.integer[Any]]

    def __len__(self) -> int:
        return len(self.starts)

    def take(self, rows: npt.NDArray[np.integer[Any]]) -> RawRows:
        """The rows ``rows``, in that order."""
        return RawRows(self.data, self.starts[rows], self.lengths[rows])

    def nulls(self) -> npt.NDArray[np.bool_]:
        """Which rows are null."""
        return self.lengths < 0

    def rows(self) -> list[bytes | None]:
        """Each row as ``bytes`` (None: null)."""
        data = self.data
        ends = (self.starts + self.lengths).tolist()
        if len(self) and int(self.lengths.min()) < 0:
            return [
                None if n < 0 else data[a:b]
                for a, b, n in zip(self.starts.tolist(), ends, self.lengths.tolist(), strict=True)
            ]
        return [data[a:b] for a, b in zip(self.starts.tolist(), ends, strict=True)]

    def row(self, i: int) -> bytes | None:
        """Row ``i`` as ``bytes`` (None: null)."""
        n = int(self.lengths[i])
        if n < 0:
            return None
        start = int(self.starts[i])
        return self.data[start : start + n]


@jit
def _gather(src: Any, starts: Any, lengths: Any, out: Any, at: int) -> int:
    for i in range(len(starts)):
        n = lengths[i]
        if n > 0:
            s = starts[i]
            out[at : at + n] = src[s : s + n]
            at += n
    return at


def gather(rows: RawRows, prefix: bytes = b"", suffix: bytes = b"") -> bytes:
    """``prefix``, every row back to back (nulls as empty), then ``suffix``."""
    size = int(np.maximum(rows.lengths, 0).sum())
    out = np.empty(len(prefix) + size + len(suffix), dtype=np.uint8)
    out[: len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    src = np.frombuffer(rows.data, dtype=np.uint8)
    end = _gather(src, rows.starts, rows.lengths, out, len(prefix))
    out[end:] = np.frombuffer(suffix, dtype=np.uint8)
    return out.tobytes()


@jit
def _decimals(src: Any, starts: Any, lengths: Any, valid: Any, long: Any) -> None:
    for i in range(len(starts)):
        n = lengths[i]
        s = starts[i]
        minus = 1 if n > 0 and src[s] == 45 else 0  # "-"
        digits = n - minus
        ok = digits > 0
        for k in range(s + minus, s + n):
            c = src[k]
            if c < 48 or c > 57:
                ok = False
                break
        valid[i] = ok
        long[i] = ok and digits > 18


def valid_decimals(rows: RawRows) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Which rows are ASCII ``-?[0-9]+`` (nulls are not), and which of those have more than
    18 digits (their range must still be checked)."""
    valid = np.zeros(len(rows), dtype=np.bool_)
    long = np.zeros(len(rows), dtype=np.bool_)
    _decimals(np.frombuffer(rows.data, dtype=np.uint8), rows.starts, rows.lengths, valid, long)
    return valid, long


@jit
def _ascii(src: Any, starts: Any, lengths: Any, out: Any) -> None:
    for i in range(len(starts)):
        ok = True
        for k in range(starts[i], starts[i] + max(lengths[i], 0)):
            if src[k] >= 128:
                ok = False
                break
        out[i] = ok


def ascii_rows(rows: RawRows) -> npt.NDArray[np.bool_]:
    """Which rows hold only ASCII bytes (nulls do)."""
    out = np.zeros(len(rows), dtype=np.bool_)
    _ascii(np.frombuffer(rows.data, dtype=np.uint8), rows.starts, rows.lengths, out)
    return out


@register_warm_up
def _warm() -> None:
    rows = RawRows(b"-12x", np.array([0, 3], np.int64), np.array([3, 1], np.int64))
    gather(rows, b"p", b"s")
    valid_decimals(rows)
    ascii_rows(rows)
