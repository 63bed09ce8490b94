"""Finding the pipeline a job runs: a built-in name or ``package.module:attribute``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

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


def load_pipeline(spec: str, *, field: str = "pipeline") -> Pipeline:
    """Resolve ``spec``: a name from :data:`BUILTIN_PIPELINES`, or ``module:attribute``
    where the attribute is a :class:`Pipeline` or a callable that returns one."""
    if spec in BUILTIN_PIPELINES:
        return BUILTIN_PIPELINES[spec]()
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            field,
            f"unknown pipeline {spec!r}; use one of {sorted(BUILTIN_PIPELINES)} or "
            "'package.module:attribute'",
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(field, f"cannot import module {module_name!r}: {exc}") from exc
    try:
        target = getattr(module, attr)
    except AttributeError as exc:
        raise ConfigError(field, f"module {module_name!r} has no attribute {attr!r}") from exc
    pipeline = target() if callable(target) and not isinstance(target, Pipeline) else target
    if not isinstance(pipeline, Pipeline):
        raise ConfigError(
            field, f"{spec!r} is a {type(pipeline).__name__}, not an engine.pipeline.Pipeline"
        )
    return pipeline
