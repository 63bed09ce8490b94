"""How every ``restream`` command reads a flag from the environment.

A flag ``--jitter-ms`` reads ``RESTREAM_JITTER_MS`` (:func:`connector.config.env_name`), in
every command that has it; the flag wins. The variable is read after parsing, so that a bad
value in a variable that the chosen command does not use breaks nothing, and a bad value in
one it uses exits 2 naming the variable (``parser.error``). ``--help`` shows each variable and
default. The settings of ``restream run`` and ``restream positions`` come from
:data:`connector.config.SETTINGS` instead, which adds the YAML file between environment and
default; their variables are named by the same rule.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from connector.config import env_name

__all__ = ["EnvDefault", "option", "resolve_env_defaults"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class EnvDefault:
    """The default of a flag not given: resolved from its env var after parsing."""

    parser: argparse.ArgumentParser
    flag: str
    env: str
    convert: Callable[[str], Any]
    default: Any
    choices: Sequence[Any] | None

    def resolve(self) -> Any:
        """The variable's value converted like the flag's, else the default; exit 2 if bad."""
        raw = os.environ.get(self.env, "")
        if not raw:
            return self.default
        try:
            value = self.convert(raw)
        except ValueError:
            self.parser.error(f"{self.env}={raw!r} is not a valid {self.flag} value")
        if self.choices is not None and value not in self.choices:
            self.parser.error(
                f"{self.env}={raw!r}: choose from {', '.join(map(str, self.choices))}"
            )
        return value


def option(
    parser: argparse.ArgumentParser,
    flag: str,
    convert: Callable[[str], T],
    default: T | None,
    help_text: str,
    *,
    choices: Sequence[T] | None = None,
) -> None:
    """Add ``--flag`` (or an optional positional ``name``) whose default comes from
    ``RESTREAM_<FLAG>``; ``--help`` shows the variable, the choices and the default."""
    env = env_name(flag)
    notes = [f"env {env}"]
    if choices is not None:
        notes.append("one of " + ", ".join(map(str, choices)))
    if default is not None:
        notes.append(f"default {default}")
    kwargs: dict[str, Any] = {
        "type": convert,
        "default": EnvDefault(parser, flag, env, convert, default, choices),
        "choices": choices,
        "help": f"{help_text} [{'; '.join(notes)}]",
    }
    if not flag.startswith("-"):
        kwargs["nargs"] = "?"
    parser.add_argument(flag, **kwargs)


def resolve_env_defaults(args: argparse.Namespace) -> None:
    """Replace every :class:`EnvDefault` left in ``args`` by its value."""
    for name, value in vars(args).items():
        if isinstance(value, EnvDefault):
            setattr(args, name, value.resolve())
