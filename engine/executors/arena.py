"""Moving columnar data between processes through shared memory, without copying it.

Objects (epochs, derived-column parts, output chunks) are pickled with protocol 5: numpy
arrays travel out of band, as raw buffers appended to a file in a per-run directory on a
memory-backed file system (``/dev/shm`` when it exists). The reader maps the file and unpickles
with those buffers, so its arrays are views of the shared pages: one write, zero-copy reads.
Only object arrays (strings) are pickled in band.

Everything a run creates lives in its run directory, which the coordinator removes at the end,
also when a worker was killed; directories left by a coordinator that was itself killed are
swept at the next run (their owning process is gone).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import re
import shutil
import struct
import tempfile
import uuid
from pathlib import Path
from typing import Any

__all__ = ["RunDir", "default_shm_dir", "load", "store"]

_HEADER = struct.Struct("<QQ")  # pickle length, buffer count
_ALIGN = 64
_NAME = re.compile(r"^restream-(\d+)-[0-9a-f]{12}$")


def default_shm_dir() -> Path:
    """``/dev/shm`` when it exists (memory-backed), else the temporary directory."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


class RunDir:
    """The directory holding one run's shared files."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, base: Path | None = None) -> RunDir:
        """Make a fresh run directory under ``base`` (and sweep dead runs' directories)."""
        base = base or default_shm_dir()
        sweep_stale(base)
        path = base / f"restream-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        path.mkdir(mode=0o700)
        return cls(path)

    def file(self, name: str) -> Path:
        """The path of a file in the run directory."""
        return self.path / name

    def remove(self) -> None:
        """Delete the directory and everything in it."""
        shutil.rmtree(self.path, ignore_errors=True)


def sweep_stale(base: Path) -> None:
    """Remove run directories whose coordinator process no longer exists."""
    with contextlib.suppress(OSError):
        for entry in base.iterdir():
            m = _NAME.match(entry.name)
            if m is None or not entry.is_dir():
                continue
            pid = int(m.group(1))
            if pid == os.getpid():
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                shutil.rmtree(entry, ignore_errors=True)
            except PermissionError:
                continue


def store(path: Path, obj: Any) -> int:
    """Write ``obj`` to ``path`` (pickle 5, arrays out of band); return the bytes written."""
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(_HEADER.pack(len(payload), len(raws)))
        f.write(struct.pack(f"<{len(raws)}Q", *(r.nbytes for r in raws)))
        f.write(payload)
        for raw in raws:
            pad = -f.tell() % _ALIGN
            if pad:
                f.write(b"\0" * pad)
            f.write(raw)
        size = f.tell()
    os.replace(tmp, path)
    return size


def load(path: Path) -> Any:
    """Read an object written by :func:`store`; its arrays are views of the mapped file."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise ValueError(f"{path} is empty")
        mapped = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
    view = memoryview(mapped)
    length, count = _HEADER.unpack_from(view, 0)
    pos = _HEADER.size
    sizes = struct.unpack_from(f"<{count}Q", view, pos)
    pos += 8 * count
    payload = view[pos : pos + length]
    pos += length
    buffers = []
    for n in sizes:
        pos += -pos % _ALIGN
        buffers.append(view[pos : pos + n])
        pos += n
    return pickle.loads(payload, buffers=buffers)
