"""Moving columnar data between processes through shared memory, without copying it.

Objects (epochs, derived-column parts, output chunks) are pickled with protocol 5: numpy
arrays travel out of band, as raw buffers appended to a file in a per-run directory on a
memory-backed file system (``/dev/shm`` when it exists). The reader maps the file and unpickles
with those buffers, so its arrays are views of the shared pages: one write, zero-copy reads.
Only object arrays (strings) are pickled in band.

A string dictionary shared by many epochs (a source that dictionary-encodes against one
stable dictionary) is pickled once, not once per epoch and worker: the coordinator's
:class:`SentObjects` writes each large object array to a file of its own the first time an
epoch refers to it and afterwards refers to it by name; each worker's :class:`ReceivedObjects`
loads a name once and keeps it while the coordinator may still refer to it (both keep the
``keep`` most recent names, so they agree on which those are).

Everything a run creates lives in its run directory, which the coordinator removes at the end,
also when a worker was killed; directories left by a coordinator that was itself killed (an
OOM kill) are swept, and their size logged, when the next run creates its own: a directory
names its owner's pid, and its ``owner`` file that process's start time, so a directory whose
pid now belongs to another process (a restarted container's coordinator gets the same low
pid) is recognised as dead too. A full or unwritable directory is a
:class:`~engine.errors.SharedMemoryError` that says so.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import mmap
import os
import pickle
import re
import shutil
import struct
import tempfile
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import EngineError, SharedMemoryError

__all__ = [
    "ReceivedObjects",
    "RunDir",
    "SentObjects",
    "default_shm_dir",
    "is_dictionary",
    "load",
    "store",
    "sweep_stale",
]

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("<QQ")  # pickle length, buffer count
_ALIGN = 64
_NAME = re.compile(r"^restream-(\d+)-[0-9a-f]{12}$")
_OWNER = "owner"


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
        try:
            path.mkdir(mode=0o700)
            (path / _OWNER).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
        except OSError as exc:
            shutil.rmtree(path, ignore_errors=True)
            raise _shm_error(exc, path, "a run directory") from exc
        return cls(path)

    def file(self, name: str) -> Path:
        """The path of a file in the run directory."""
        return self.path / name

    def remove(self) -> None:
        """Delete the directory and everything in it."""
        shutil.rmtree(self.path, ignore_errors=True)


def _start_time(pid: int) -> str:
    """When ``pid`` started (clock ticks since boot, ``/proc/PID/stat``), or "" if unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = text[text.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else ""


def _owner_dead(entry: Path, pid: int) -> bool:
    """Whether the process that made run directory ``entry`` is gone."""
    try:
        recorded = (entry / _OWNER).read_text().split()
    except OSError:
        recorded = []
    if len(recorded) == 2 and recorded[0] == str(pid):
        now = _start_time(pid)
        if now and now != recorded[1]:
            return True  # the pid was reused: its maker is gone
        if now:
            return False
    if pid == os.getpid():
        return False  # ours, and made before it recorded its owner
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _size(path: Path) -> int:
    """Bytes held by the files under ``path``."""
    total = 0
    with contextlib.suppress(OSError):
        for root, _dirs, files in os.walk(path):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def sweep_stale(base: Path | None = None) -> int:
    """Remove the run directories under ``base`` (default: :func:`default_shm_dir`) whose
    maker is dead, logging what they held; return the bytes freed."""
    base = base or default_shm_dir()
    count = freed = 0
    with contextlib.suppress(OSError):
        for entry in base.iterdir():
            m = _NAME.match(entry.name)
            if m is None or not entry.is_dir() or not _owner_dead(entry, int(m.group(1))):
                continue
            size = _size(entry)
            shutil.rmtree(entry, ignore_errors=True)
            if not entry.exists():
                count += 1
                freed += size
    if count:
        logger.warning(
            "removed %d run director%s of dead runs (a killed coordinator's) from %s: %.1f MiB",
            count,
            "y" if count == 1 else "ies",
            base,
            freed / 2**20,
        )
    return freed


def _shm_error(exc: OSError, path: Path, what: str) -> SharedMemoryError:
    where = path.parent if path.name.startswith("restream-") else path.parent.parent
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return SharedMemoryError(
            f"no room for {what} in {where} ({exc.strerror}): the run passes epochs and "
            f"output between its processes through this memory-backed directory; give it "
            f"more room (a larger /dev/shm) or use smaller epochs"
        )
    return SharedMemoryError(f"cannot write {what} to {where}: {exc}")


#: Object arrays at least this long are sent once by :class:`SentObjects`.
_SHARED_MIN = 1024
#: How many named arrays both sides remember. The coordinator forgets in the order it wrote
#: them and a worker drops names more than this many below the newest it has seen: the two
#: agree only while both use this number and the coordinator evicts oldest-written first.
#: Small, since where dictionaries are not shared (one per decoded batch) each process keeps
#: this many epochs' dictionaries alive for nothing.
_KEEP = 4
_SHARED_PREFIX = "obj"


def _check_keep(keep: int) -> None:
    if keep < 1:  # 0 would drop an array while the epoch that named it is being read
        raise EngineError(f"keep must be >= 1 (arrays the coordinator may still name), got {keep}")


def is_dictionary(obj: Any) -> bool:
    """Whether ``obj`` is worth sending once and naming afterwards: an object array of at
    least ``_SHARED_MIN`` items (a string dictionary, which many epochs may share)."""
    return (
        type(obj) is np.ndarray
        and obj.dtype == object
        and obj.ndim == 1
        and len(obj) >= _SHARED_MIN
    )


class SentObjects:
    """The coordinator's record of the object arrays it has written as files of their own.

    Keeps (and so keeps alive: an ``id`` is not reused while its object lives) the ``keep``
    most recently written arrays; :attr:`written` lists the files written since it was last
    emptied, which the caller deletes once every worker has read the epoch that named them.
    """

    def __init__(self, run_dir: RunDir, keep: int = _KEEP) -> None:
        _check_keep(keep)
        self.run_dir = run_dir
        self.keep = keep
        self._names: OrderedDict[int, tuple[str, Any]] = OrderedDict()
        self._count = 0
        self.written: list[Path] = []

    def name_of(self, obj: Any) -> str | None:
        """The name ``obj`` travels by, writing it on first sight; None: pickle it in band."""
        if not is_dictionary(obj):
            return None
        hit = self._names.get(id(obj))
        if hit is not None and hit[1] is obj:
            return hit[0]
        name = f"{_SHARED_PREFIX}{self._count}"
        self._count += 1
        path = self.run_dir.file(name)
        store(path, obj)
        self.written.append(path)
        self._names[id(obj)] = (name, obj)
        # Oldest written first out, and a reuse does not refresh: workers drop names by
        # number, so any other order (LRU) would name arrays they no longer hold.
        while len(self._names) > self.keep:
            self._names.popitem(last=False)
        return name


class ReceivedObjects:
    """A worker's copies of the arrays named by :class:`SentObjects` (same ``keep``)."""

    def __init__(self, run_dir: RunDir, keep: int = _KEEP) -> None:
        _check_keep(keep)
        self.run_dir = run_dir
        self.keep = keep
        self._objects: dict[int, Any] = {}

    def get(self, name: str) -> Any:
        """The array called ``name``, read from its file the first time."""
        n = int(name[len(_SHARED_PREFIX) :])
        obj = self._objects.get(n)
        if obj is None:
            obj = self._objects[n] = load(self.run_dir.file(name))
            # Every later epoch that names it gets this same array: an edit would leak.
            obj.flags.writeable = False
            # The coordinator names only its ``keep`` newest arrays, all newer than these.
            for old in [k for k in self._objects if k <= n - self.keep]:
                del self._objects[old]
        return obj


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, sent: SentObjects, **kwargs: Any) -> None:
        super().__init__(file, protocol=5, **kwargs)
        self._sent = sent

    def persistent_id(self, obj: Any) -> str | None:
        return self._sent.name_of(obj)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, received: ReceivedObjects, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._received = received

    def persistent_load(self, pid: Any) -> Any:
        return self._received.get(str(pid))


def store(path: Path, obj: Any, sent: SentObjects | None = None) -> int:
    """Write ``obj`` to ``path`` (pickle 5, arrays out of band); return the bytes written.

    With ``sent``, large object arrays go by name (see :class:`SentObjects`); read such a file
    with the matching :class:`ReceivedObjects`.
    """
    buffers: list[pickle.PickleBuffer] = []
    if sent is None:
        payload = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    else:
        out = io.BytesIO()
        _Pickler(out, sent, buffer_callback=buffers.append).dump(obj)
        payload = out.getvalue()
    raws = [b.raw() for b in buffers]
    tmp = path.with_suffix(".tmp")
    try:
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
    except OSError as exc:
        tmp.unlink(missing_ok=True)  # a full directory should not stay fuller
        total = sum(r.nbytes for r in raws) + len(payload)
        raise _shm_error(exc, path, f"{path.name} ({total:,} bytes)") from exc
    return size


def load(path: Path, received: ReceivedObjects | None = None) -> Any:
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
    if received is None:
        return pickle.loads(payload, buffers=buffers)
    return _Unpickler(io.BytesIO(payload), received, buffers=buffers).load()
