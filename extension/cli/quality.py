"""``python -m extension quality``: the quality benchmark on tiny-shapes (see :mod:`..shapes.quality`)."""

from __future__ import annotations

import argparse

from ..shapes.quality import HELP, run
from ..shapes.quality import add_arguments as _add_quality_arguments

__all__ = ["HELP", "add_arguments", "run"]

EXAMPLES = """examples:
  python -m extension quality                                   # 4 held-out concepts x seeds 0,1, 100 steps
  python -m extension quality --concepts "cyan triangle" --seeds 0,1,2 --every 10 --json curves.json
  python -m extension quality --score ./peer-snapshots --concept "cyan triangle"   # another trainer's files
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLES
    _add_quality_arguments(parser)
