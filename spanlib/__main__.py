"""Command line entry point: `python -m spanlib reproduce ...`."""

import sys

from .reproduce.cli import main

if __name__ == "__main__":
    sys.exit(main())
