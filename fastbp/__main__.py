"""``python -m fastbp``: the same as the ``fastbp`` command (see :mod:`fastbp.cli`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
