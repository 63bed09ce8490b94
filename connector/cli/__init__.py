"""The ``restream`` command line (entry point ``connector.cli:main``).

::

    app.py              the parser and every subcommand's flags; each handler imports its
                        module when it runs, so ``restream --version`` loads almost nothing
    options.py          how every command's flags read ``RESTREAM_<FLAG>`` variables
    engine_commands.py  ``restream plan``, ``bench engine``, ``bench lateness``: the engine
                        without Kafka; the data-shape flags the benches share
    __main__.py         ``python -m connector.cli``

``demo``, ``bench e2e|checkpoint``, ``generate`` and ``broker`` run code from :mod:`tooling`.
"""

from __future__ import annotations

from connector.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
