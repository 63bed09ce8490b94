"""Pickling a runtime's state for checkpoints, with the plan's objects kept out of it.

State (tables, key codecs, pending timers) refers to objects of the plan: table specs, key
specs, and above all functions (merge functions, the lambdas that timers apply), which cannot
be pickled by value. A resumed run rebuilds the plan from the same pipeline code, so the
pickler writes every object reachable from the plan as a stable *path* (``("op", 3, "merge")``)
found by walking the plan the same way in both processes, and the unpickler maps each path back
to the new plan's object. Functions created while running (a timer's ``lambda old: old - d``
made inside a merge) are pickled as their code (``marshal``), module, defaults and closure
values; functions importable by name are pickled by name.

A blob starts with a header: the plan's fingerprint (operators, tables, and the code of every
function of the plan) and the worker's shard, so that a snapshot restored into another
pipeline or another worker layout fails with a clear :class:`~engine.errors.CheckpointError`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import io
import marshal
import pickle
import struct
import sys
import types
from collections.abc import Callable, Hashable, Mapping
from typing import Any, BinaryIO, TypeAlias

from engine.errors import CheckpointError
from engine.planner import Plan

__all__ = ["PlanObjects", "check_header", "dump_state", "fingerprint", "load_state"]

Path: TypeAlias = tuple[Hashable, ...]

_MAGIC = b"RSRT"
# 3: keys are owned by sharding.owners_of_ids' multiplicative hash (2 was a short-lived
# golden-ratio hash); a shard of an older version holds keys that another worker owns now.
# 4: KeyIndex keeps its hash table as (key, slot) rows.
# 5: the state holds the workers' balanced key ownership (sharding.Ownership); an older
# build would route keys by the plain hash and find them on the wrong workers, so it must
# refuse these. A 4 restores with the plain hash, which is where its keys are.
# 6: KeyIndex pickles its state as a dict and tables hold an EpochGrouping (twins share
# them); a build before 6 cannot unpickle those, and must refuse with the version message.
# 4 and 5 restore as they were.
# 7: KeyCodec pickles its state as a dict and interns wide integers as engine.keys._Wide (a
# build before 7 must refuse with the version message); numbers equal to an int have that
# int's id whatever their type. 4-6 restore, unless their codec interned such a number (its
# keys' state could not be found again): that one refuses (KeyCodec.__setstate__).
_VERSION = 7
_READABLE = frozenset({4, 5, 6, 7})
_HEADER = struct.Struct("<4sHII32s")  # magic, version, shard index, shard count, fingerprint
_ATOMS = (type(None), bool, int, float, complex, str, bytes)
_MAX_DEPTH = 40


class PlanObjects:
    """Every object reachable from a plan that state may refer to, by a stable path."""

    def __init__(self, plan: Plan) -> None:
        self.by_path: dict[Path, Any] = {}
        self.path_of: dict[int, Path] = {}
        self._seen: set[int] = set()
        pipeline = plan.pipeline
        for i, op in enumerate(pipeline.operators):
            self._walk(op, ("op", i), 0)
        for i, table in enumerate(pipeline.tables.values()):
            self._walk(table, ("table", i), 0)
        for i, column in enumerate(pipeline.columns.values()):
            self._walk(column, ("column", i), 0)
        for i, output in enumerate(pipeline.outputs.values()):
            self._walk(output, ("output", i), 0)
        self.fingerprint = fingerprint(plan)

    def _walk(self, obj: Any, path: Path, depth: int) -> None:
        if isinstance(obj, _ATOMS) or id(obj) in self._seen or depth > _MAX_DEPTH:
            return
        self._seen.add(id(obj))
        if isinstance(obj, tuple | list):
            for i, item in enumerate(obj):
                self._walk(item, (*path, i), depth + 1)
            return
        if isinstance(obj, dict):
            for i, item in enumerate(obj.values()):
                self._walk(item, (*path, i), depth + 1)
            return
        if isinstance(obj, set | frozenset | type | types.ModuleType):
            # Set order depends on the hash seed; classes and modules pickle by name.
            return
        self.by_path[path] = obj
        self.path_of[id(obj)] = path
        for name, child in _children(obj):
            self._walk(child, (*path, name), depth + 1)

    def resolve(self, path: Path) -> Any:
        """The object at ``path`` (for the unpickler)."""
        try:
            return self.by_path[path]
        except KeyError:
            raise CheckpointError(
                f"the snapshot refers to plan object {path!r}, which this pipeline does not "
                "have; the pipeline changed since the checkpoint: start over without it"
            ) from None


def _children(obj: Any) -> list[tuple[str, Any]]:
    """The parts of a plan object worth walking: fields, defaults, closures."""
    if dataclasses.is_dataclass(obj):
        return [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    if isinstance(obj, types.FunctionType):
        out: list[tuple[str, Any]] = [("__defaults__", obj.__defaults__)]
        if obj.__kwdefaults__:
            out.append(("__kwdefaults__", obj.__kwdefaults__))
        for i, cell in enumerate(obj.__closure__ or ()):
            try:
                out.append((f"__closure__{i}", cell.cell_contents))
            except ValueError:  # an empty cell
                continue
        return out
    if isinstance(obj, types.MethodType):
        return [("__self__", obj.__self__), ("__func__", obj.__func__)]
    if isinstance(obj, functools.partial):
        return [("func", obj.func), ("args", obj.args), ("keywords", obj.keywords)]
    return []


# -- fingerprint ---------------------------------------------------------------------------


def fingerprint(plan: Plan) -> bytes:
    """A digest of the plan's structure and code, equal across processes for the same plan."""
    h = hashlib.sha256()
    h.update(f"{plan.pipeline.name}|{plan.phases}".encode())
    for planned in plan.operators:
        h.update(f"|{planned.index}:{planned.phase}:".encode())
        h.update(_canon(planned.op, 0).encode())
    for name, table in plan.pipeline.tables.items():
        h.update(f"|table {name}:".encode())
        h.update(_canon(table, 0).encode())
    return h.digest()


def _canon(obj: Any, depth: int) -> str:
    """A process-independent rendering (no addresses, no hash-seed order)."""
    if depth > 12:
        return "..."
    if isinstance(obj, _ATOMS):
        return repr(obj)
    d = depth + 1
    if isinstance(obj, tuple | list):
        return f"{type(obj).__name__}({','.join(_canon(x, d) for x in obj)})"
    if isinstance(obj, dict):
        return "{" + ",".join(f"{_canon(k, d)}:{_canon(v, d)}" for k, v in obj.items()) + "}"
    if isinstance(obj, set | frozenset):
        return f"{type(obj).__name__}({','.join(sorted(_canon(x, d) for x in obj))})"
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = ",".join(
            f"{f.name}={_canon(getattr(obj, f.name), d)}" for f in dataclasses.fields(obj)
        )
        return f"{type(obj).__qualname__}({fields})"
    if isinstance(obj, types.FunctionType):
        parts = [_code_digest(obj.__code__), _canon(obj.__defaults__, d)]
        for cell in obj.__closure__ or ():
            try:
                parts.append(_canon(cell.cell_contents, d))
            except ValueError:
                parts.append("<empty>")
        return f"fn {obj.__module__}.{obj.__qualname__}({';'.join(parts)})"
    if isinstance(obj, types.MethodType):
        return f"method({_canon(obj.__func__, d)})"
    if isinstance(obj, functools.partial):
        return f"partial({_canon(obj.func, d)},{_canon(obj.args, d)},{_canon(obj.keywords, d)})"
    if isinstance(obj, type):
        return f"class {obj.__module__}.{obj.__qualname__}"
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if isinstance(name, str):  # builtins, ufuncs
        return f"{type(obj).__qualname__} {name}"
    return f"<{type(obj).__module__}.{type(obj).__qualname__}>"


def _code_digest(code: types.CodeType) -> str:
    h = hashlib.sha256(code.co_code)
    h.update(repr((code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars)).encode())
    h.update(repr((code.co_argcount, code.co_kwonlyargcount, code.co_flags)).encode())
    for const in code.co_consts:
        h.update(
            (
                _code_digest(const) if isinstance(const, types.CodeType) else _canon(const, 0)
            ).encode()
        )
    return h.hexdigest()[:16]


# -- pickling ------------------------------------------------------------------------------


def _plan_object(path: Path) -> Any:
    """Stands for a plan object in a pickle; :class:`_Unpickler` resolves it."""
    raise CheckpointError(f"plan object {path!r} can only be loaded with engine.executors.snapshot")


def _make_function(
    code: types.CodeType,
    module: str,
    name: str,
    qualname: str,
    defaults: tuple[Any, ...] | None,
    kwdefaults: dict[str, Any] | None,
    cells: tuple[Any, ...],
    attrs: dict[str, Any] | None,
) -> types.FunctionType:
    """Rebuild a function made at run time (see :meth:`_Pickler.reducer_override`)."""
    namespace = importlib.import_module(module).__dict__
    closure = tuple(types.CellType(v) for v in cells) if cells else None
    fn = types.FunctionType(code, namespace, name, defaults, closure)
    fn.__qualname__ = qualname
    fn.__kwdefaults__ = kwdefaults
    if attrs:
        fn.__dict__.update(attrs)
    return fn


def _load_code(data: bytes) -> types.CodeType:
    code = marshal.loads(data)
    if not isinstance(code, types.CodeType):
        raise CheckpointError("a snapshot's function code is damaged")
    return code


def _importable(fn: types.FunctionType) -> bool:
    """Whether pickle can save ``fn`` by module and qualified name."""
    obj: Any = sys.modules.get(fn.__module__)
    for part in fn.__qualname__.split("."):
        obj = getattr(obj, part, None)
    return obj is fn


class _Pickler(pickle.Pickler):
    def __init__(self, file: BinaryIO, objects: PlanObjects) -> None:
        super().__init__(file, protocol=5)
        self._objects = objects

    def reducer_override(self, obj: Any) -> Any:
        path = self._objects.path_of.get(id(obj))
        if path is not None:
            return _plan_object, (path,)
        if isinstance(obj, types.FunctionType) and not _importable(obj):
            return self._function(obj)
        if isinstance(obj, types.CodeType):
            return _load_code, (marshal.dumps(obj),)
        return NotImplemented

    def _function(self, fn: types.FunctionType) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        module = sys.modules.get(fn.__module__)
        if module is None or fn.__globals__ is not module.__dict__:
            raise CheckpointError(
                f"function {fn.__module__}.{fn.__qualname__} in the state cannot be "
                "checkpointed: its globals are not those of an importable module; define it in "
                "a module (or inside an operator's function)"
            )
        cells = []
        for cell in fn.__closure__ or ():
            try:
                cells.append(cell.cell_contents)
            except ValueError:
                raise CheckpointError(
                    f"function {fn.__module__}.{fn.__qualname__} in the state cannot be "
                    "checkpointed: its closure has an unassigned variable"
                ) from None
        return _make_function, (
            fn.__code__,
            fn.__module__,
            fn.__name__,
            fn.__qualname__,
            fn.__defaults__,
            fn.__kwdefaults__,
            tuple(cells),
            fn.__dict__ or None,
        )


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, objects: PlanObjects) -> None:
        super().__init__(file)
        self._objects = objects

    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name == "_plan_object":
            return self._objects.resolve
        return super().find_class(module, name)


def dump_state(
    state: Any,
    objects: PlanObjects,
    out: BinaryIO,
    *,
    shard: int,
    shards: int,
    parts: Mapping[str, Any] | None = None,
) -> None:
    """Write ``state`` as a blob to ``out``: a header (plan fingerprint, shard), the pickle.

    Large arrays go from memory to ``out`` in one copy, so write to the final destination.
    If ``state`` cannot be pickled, the error names the first of ``parts`` (the pieces of
    ``state`` by name) that cannot be pickled on its own.
    """
    out.write(_HEADER.pack(_MAGIC, _VERSION, shard, shards, objects.fingerprint))
    try:
        _pickle(state, objects, out)
    except CheckpointError as exc:
        for name, part in (parts or {}).items():
            try:
                _pickle(part, objects, io.BytesIO())
            except CheckpointError as inner:
                raise CheckpointError(f"{name}: {inner}") from exc
        raise


def _pickle(obj: Any, objects: PlanObjects, out: BinaryIO) -> None:
    try:
        _Pickler(out, objects).dump(obj)
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(
            "the state cannot be checkpointed: it holds a function whose closure refers to "
            "itself (or a structure nested too deeply to pickle)"
        ) from None
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"the state cannot be checkpointed: {exc}; keep table values and timer functions "
            "to plain data, functions and picklable objects"
        ) from exc


def load_state(blob: bytes, objects: PlanObjects, *, shard: int, shards: int) -> Any:
    """The state in a blob from :func:`dump_state`, checked against the plan and shard."""
    check_header(blob, objects.fingerprint, shard=shard, shards=shards)
    try:
        # BytesIO shares a bytes object's buffer: no copy of the blob before unpickling.
        data = io.BytesIO(blob)
        data.seek(_HEADER.size)
        return _Unpickler(data, objects).load()
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"a runtime snapshot could not be loaded: {exc}") from exc


def check_header(blob: bytes, plan_fingerprint: bytes, *, shard: int, shards: int) -> None:
    """Raise :class:`CheckpointError` unless ``blob`` is a snapshot of this plan and shard
    (cheap: reads the header only)."""
    if len(blob) < _HEADER.size:
        raise CheckpointError("a runtime snapshot is truncated; resume from another checkpoint")
    magic, version, index, count, digest = _HEADER.unpack_from(blob)
    if magic != _MAGIC or version not in _READABLE:
        raise CheckpointError(
            f"not a runtime snapshot of this engine version (magic {magic!r}, version "
            f"{version}); resume with the restream version that wrote it, or start over"
        )
    if (index, count) != (shard, shards):
        raise CheckpointError(
            f"the snapshot holds the state of worker {index} of {count}; it cannot be restored "
            f"into worker {shard} of {shards}: resume with the same worker count"
        )
    if digest != plan_fingerprint:
        raise CheckpointError(
            "the snapshot was taken with another pipeline (its operators, tables or code "
            "differ from this plan's); resume with the pipeline that took it, or start over "
            "without the checkpoint"
        )
