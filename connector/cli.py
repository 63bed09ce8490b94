"""The ``restream`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from connector import __version__


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level argument parser with one subcommand per job."""
    parser = argparse.ArgumentParser(
        prog="restream",
        description="Replay Kafka topics through stateful logic, serial-equivalent and fast.",
    )
    parser.add_argument("--version", action="version", version=f"restream {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
