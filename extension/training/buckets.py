"""Aspect-ratio buckets: a set of training sizes of (at most) the same area as width x height.

Each image goes to the bucket whose aspect ratio is nearest to its own (compared on a log scale, so
2:1 and 1:2 are equally far from 1:1), is resized to cover it and centre-cropped. Micro-batches are
drawn from one bucket at a time, so latents in a batch always share a shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Size = tuple[int, int]  # (width, height) in pixels


def make_buckets(width: int, height: int, step: int = 64, max_ratio: float = 2.0) -> list[Size]:
    """Bucket sizes with area <= ``width*height``, sides multiples of ``step``, ratio <= ``max_ratio``.

    For each width ``w`` (a multiple of ``step``) the bucket takes the largest height that fits the
    area. ``(width, height)`` itself is always included. Sorted by aspect ratio (w/h), then area.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    if step <= 0:
        raise ValueError(f"bucket step must be positive, got {step}")
    if max_ratio < 1:
        raise ValueError(f"max aspect ratio must be >= 1, got {max_ratio}")
    area = width * height
    sizes: set[Size] = {(width, height)}
    w = step
    while w * step <= area:
        h = (area // w) // step * step
        if h >= step and max(w, h) / min(w, h) <= max_ratio + 1e-9:
            sizes.add((w, h))
        w += step
    return sorted(sizes, key=lambda s: (s[0] / s[1], s[0] * s[1]))


def nearest_bucket(size: Size, buckets: Sequence[Size]) -> Size:
    """The bucket whose aspect ratio is nearest to that of ``size`` (ties: larger area, then order)."""
    if not buckets:
        raise ValueError("no buckets to choose from")
    w, h = size
    if w <= 0 or h <= 0:
        raise ValueError(f"image size must be positive, got {w}x{h}")
    target = math.log(w / h)
    best = min(
        range(len(buckets)),
        key=lambda i: (
            round(abs(math.log(buckets[i][0] / buckets[i][1]) - target), 12),
            -buckets[i][0] * buckets[i][1],
            i,
        ),
    )
    return buckets[best]
