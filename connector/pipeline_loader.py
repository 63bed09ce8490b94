"""Finding the pipeline a job runs: a built-in name, ``path/to/file.py:attribute`` or
``package.module:attribute``.

The attribute is a :class:`~engine.pipeline.Pipeline` or a callable that returns one. A file
path is relative to the working directory; its folder goes on ``sys.path`` first, as when
Python runs a script, so the file can import its neighbours. A module is looked up with the
working directory on ``sys.path`` (as ``python -m`` does), so ``restream plan
fraud_pipeline:build`` works from the module's own folder without ``PYTHONPATH``.

Every way loading can fail (no such file or module, an exception while the user's module runs,
no such attribute, an attribute that is not a pipeline, a callable that fails or returns
something else) is a one-line :class:`~connector.errors.ConfigError` that names the spec and,
for errors in the user's code, the file and line: the CLI exits 2 without a traceback.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, ModuleType

from connector.config import KeyFormat
from connector.errors import ConfigError
from engine.examples.social.spam import build_spam_pipeline
from engine.pipeline import Pipeline

__all__ = [
    "BUILTIN_DEFAULTS",
    "BUILTIN_PIPELINES",
    "SOCIAL_SPAM",
    "PipelineDefaults",
    "load_pipeline",
]

#: The demo's spam rules over the reference social data set (the demo, benches and tests name
#: it; it is not a default: ``restream run`` requires a ``pipeline``).
SOCIAL_SPAM = "social-spam"

#: Pipelines that ship with restream, by name.
BUILTIN_PIPELINES: dict[str, Callable[[], Pipeline]] = {
    SOCIAL_SPAM: build_spam_pipeline,
}


@dataclass(frozen=True, slots=True)
class PipelineDefaults:
    """What a built-in pipeline reads and writes unless the job's settings say otherwise."""

    inputs: tuple[tuple[str, str], ...] = ()
    schemas: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    output_schemas: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    key_format: KeyFormat = "any"


#: Defaults of the built-in pipelines (a user's own pipeline gets its settings from the job).
BUILTIN_DEFAULTS: dict[str, PipelineDefaults] = {
    SOCIAL_SPAM: PipelineDefaults(
        inputs=(("social.messages", "message"), ("social.friendships", "friendship")),
        schemas=MappingProxyType({"message": "social/Message", "friendship": "social/Friendship"}),
        output_schemas=MappingProxyType({"scores": "social/SpamScore"}),
        key_format="decimal",
    ),
}

_FORMS = "a built-in name ({}), path/to/file.py:ATTRIBUTE or package.module:ATTRIBUTE"


def load_pipeline(spec: str, *, field: str = "pipeline") -> Pipeline:
    """Resolve ``spec`` (see the module docstring); every failure is a one-line ConfigError
    labelled ``field``."""
    if spec in BUILTIN_PIPELINES:
        return BUILTIN_PIPELINES[spec]()
    forms = _FORMS.format(", ".join(sorted(BUILTIN_PIPELINES)))
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr:
        hint = f"; name the pipeline in it: '{spec}:ATTRIBUTE'" if spec.endswith(".py") else ""
        raise ConfigError(field, f"unknown pipeline {spec!r}; use {forms}{hint}")
    if not attr.isidentifier():
        raise ConfigError(
            field, f"{spec!r}: {attr!r} after the ':' is not a Python name; use {forms}"
        )
    if where.endswith(".py") or "/" in where or os.sep in where:
        module = _import_file(where, spec, field)
    else:
        module = _import_module(where, spec, field)
    try:
        target = getattr(module, attr)
    except AttributeError:
        found = _candidates(module)
        listed = f"; it has {', '.join(found)}" if found else ""
        raise ConfigError(field, f"{where} has no attribute {attr!r}{listed}") from None
    if isinstance(target, Pipeline):
        return target
    if not callable(target):
        raise ConfigError(
            field,
            f"{spec} is {_a(target)}, not an engine.pipeline.Pipeline or a "
            "function that returns one",
        )
    try:
        pipeline = target()
    except Exception as exc:  # the user's code: any failure is theirs to fix, in one line
        raise ConfigError(field, f"calling {spec}() failed: {_one_line(exc)}") from None
    if not isinstance(pipeline, Pipeline):
        raise ConfigError(
            field,
            f"{spec}() returned {_a(pipeline)}, not an engine.pipeline.Pipeline",
        )
    return pipeline


def _import_file(where: str, spec: str, field: str) -> ModuleType:
    path = Path(where).expanduser()
    resolved = path.resolve()
    if not resolved.is_file():
        what = "is a directory" if resolved.is_dir() else "does not exist"
        raise ConfigError(
            field, f"{spec!r}: {where} {what} (looked for {resolved}, from {Path.cwd()})"
        )
    folder = str(resolved.parent)
    if folder not in sys.path:
        # As when Python runs the file as a script: it may import the modules next to it.
        sys.path.insert(0, folder)
    name = resolved.stem
    known = sys.modules.get(name)
    if known is not None and getattr(known, "__file__", None) == str(resolved):
        return known
    if not name.isidentifier() or known is not None:
        # The stem is taken by another module (a file called json.py) or is no Python name.
        digest = hashlib.sha1(str(resolved).encode(), usedforsecurity=False).hexdigest()[:12]
        name = f"restream_pipeline_{digest}"
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(field, f"{spec!r}: {where} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    # Registered before it runs, as an import does (dataclasses and pickling look it up).
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ConfigError(field, f"loading {where} failed: {_one_line(exc)}") from None
    return module


def _import_module(name: str, spec: str, field: str) -> ModuleType:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        # As ``python -m`` does: a module in the working directory is found without PYTHONPATH.
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            leaf = name.rpartition(".")[2]
            raise ConfigError(
                field,
                f"{spec!r}: no module named {exc.name!r} in {cwd} or on the Python path; run "
                f"from the folder that holds it, or give the file: path/to/{leaf}.py:"
                + spec.rpartition(":")[2],
            ) from None
        raise ConfigError(field, f"importing {name} failed: {_one_line(exc)}") from None
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ConfigError(field, f"importing {name} failed: {_one_line(exc)}") from None


def _candidates(module: ModuleType) -> list[str]:
    """The module's attributes that could be meant: pipelines and its own functions."""
    found = []
    for name, value in sorted(vars(module).items()):
        if name.startswith("_"):
            continue
        if isinstance(value, Pipeline):
            found.append(f"{name} (a Pipeline)")
        elif inspect.isfunction(value) and value.__module__ == module.__name__:
            found.append(f"{name}()")
    return found


def _a(value: object) -> str:
    """``an int``, ``a dict``: the value's type with its article."""
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _one_line(exc: BaseException) -> str:
    """``Type: message (file, line N)``: where in the user's code, on one line."""
    text = " ".join(str(exc).split()) or "(no message)"
    if isinstance(exc, SyntaxError) and exc.filename:
        text = " ".join((exc.msg or "").split()) or text
        return f"{type(exc).__name__}: {text} ({exc.filename}, line {exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if not _is_ours(f.filename)]
    place = f" ({user[-1].filename}, line {user[-1].lineno})" if user else ""
    return f"{type(exc).__name__}: {text}{place}"


#: Frames of restream itself and of the import machinery: not where the user's error is.
_ROOT = Path(__file__).resolve().parent.parent
_OURS = (str(_ROOT / "connector") + os.sep, str(_ROOT / "engine") + os.sep, "<frozen ")


def _is_ours(filename: str) -> bool:
    return filename.startswith(_OURS)
