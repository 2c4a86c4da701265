"""Reproduce the tiny-shapes model (weights, card, sample sheet): see extension/shapes/build.py.

Usage: nice -n 19 python tools/train_tiny_shapes.py --overwrite [--steps N ...]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from extension.shapes.build import main

if __name__ == "__main__":
    sys.exit(main())
