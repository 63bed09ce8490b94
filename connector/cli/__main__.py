"""``python -m connector.cli``: the same as the ``restream`` command."""

from __future__ import annotations

import sys

from connector.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
