"""A deterministic judge: which colour and which shape a picture shows.

No learning: the coloured pixels (chroma well above the border's, far from the border colour) form
a mask; its largest 4-connected blob is the shape. The blob's chroma-weighted mean hue names the
colour (nearest of :data:`..draw.COLOURS`, within :data:`MAX_HUE_ERROR`). Its outline names the
shape: the blob's radius seen from its centroid, as a function of the angle, is flat for a circle
and has 3, 4 or 5 bumps for a triangle, a square or a five-pointed star, so the strongest of the
3rd, 4th and 5th Fourier harmonics of that profile (relative to the mean radius) says which, when
it is strong enough. That holds for soft, slightly blurred shapes as well as for crisp ones. A
picture with no clear blob, a stretched one, an ambiguous outline or a colour far from every named
hue gets ``None``.
"""

from __future__ import annotations

import colorsys
import math
from collections import deque
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .draw import COLOURS

MIN_CHROMA = 0.25  # max - min of RGB in 0..1 for a pixel to count as coloured
MIN_DISTANCE = 0.25  # and its RGB distance from the background colour
MIN_AREA = 0.012  # the blob's share of the picture
MAX_STRAY = 0.35  # coloured pixels outside the blob, as a share of the blob
MAX_HUE_ERROR = 30.0  # degrees
ASPECT_RANGE = (0.7, 1.45)  # width / height of the blob's bounding box
ELONGATION = 0.2  # the 2nd harmonic above this: stretched (generator shapes <= 0.09, drawn ones up to ~0.17)
# The harmonic a shape needs (it must also be the strongest of the three). Crisp generator pictures
# at 32 px measure (1000 pictures, seed 123): triangles h3 0.27-0.35, squares h4 0.13-0.18, stars
# h5 0.28-0.49, each at least 1.7 times the other two; circles keep all three below 0.05.
SHAPE_HARMONICS = {"triangle": (3, 0.12), "square": (4, 0.08), "star": (5, 0.12)}
ROUND = 0.06  # all three below this: a circle
PROFILE_BINS = 36

_HUES = {name: colorsys.rgb_to_hsv(*(v / 255 for v in rgb))[0] * 360 for name, rgb in COLOURS.items()}


@dataclass(frozen=True)
class Verdict:
    """What the judge sees; ``None`` where it cannot tell. ``features`` holds the measurements."""

    colour: str | None
    shape: str | None
    features: dict[str, float]

    @property
    def concept(self) -> str | None:
        """``"<colour> <shape>"`` when both are recognised."""
        return f"{self.colour} {self.shape}" if self.colour and self.shape else None


def judge(image: Image.Image) -> Verdict:
    """Name the colour and shape of the one shape ``image`` shows (see the module docstring)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)
    chroma = rgb.max(-1) - rgb.min(-1)
    bg_chroma = float(background.max() - background.min())
    mask = (chroma > bg_chroma + MIN_CHROMA) & (np.linalg.norm(rgb - background, axis=-1) > MIN_DISTANCE)
    blob = largest_blob(mask)
    area = int(blob.sum())
    features: dict[str, float] = {"area": area / mask.size, "stray": (int(mask.sum()) - area) / max(area, 1)}
    if features["area"] < MIN_AREA or features["stray"] > MAX_STRAY:
        return Verdict(None, None, features)
    features.update(_geometry(blob))
    features["hue"] = _mean_hue(rgb[blob], chroma[blob])
    return Verdict(colour_of_hue(features["hue"]), _shape(features), features)


def largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean ``mask`` (all False when it is empty)."""
    seen = np.zeros_like(mask, dtype=bool)
    best: list[tuple[int, int]] = []
    height, width = mask.shape
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        component, queue = [], deque([(int(y0), int(x0))])
        while queue:
            y, x = queue.popleft()
            component.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(component) > len(best):
            best = component
    blob = np.zeros_like(mask, dtype=bool)
    if best:
        ys, xs = zip(*best)
        blob[list(ys), list(xs)] = True
    return blob


def _geometry(blob: np.ndarray) -> dict[str, float]:
    ys, xs = np.nonzero(blob)
    width, height = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    harmonics = radial_harmonics(blob)
    return {"aspect": width / height, **{f"h{k}": float(harmonics[k]) for k in (2, 3, 4, 5)}}


def radial_harmonics(blob: np.ndarray, bins: int = PROFILE_BINS) -> np.ndarray:
    """Fourier magnitudes of the blob's outline radius against angle (around its centroid), relative
    to the mean radius: index k is the k-fold symmetric part (2: elongation, 3: triangle, ...)."""
    ys, xs = np.nonzero(blob)
    cy, cx = ys.mean() + 0.5, xs.mean() + 0.5
    corners_x = (xs[:, None] + np.array([0, 1, 0, 1])).ravel()  # every pixel's four corners
    corners_y = (ys[:, None] + np.array([0, 0, 1, 1])).ravel()
    angle = np.arctan2(corners_y - cy, corners_x - cx)
    index = ((angle + math.pi) / (2 * math.pi) * bins).astype(int) % bins
    radius = np.zeros(bins)
    np.maximum.at(radius, index, np.hypot(corners_y - cy, corners_x - cx))
    while not radius.all():  # a bin no corner fell in (tiny blobs): its neighbours' radius
        radius = np.where(radius > 0, radius, np.maximum(np.roll(radius, 1), np.roll(radius, -1)))
    return 2 * np.abs(np.fft.rfft(radius)) / (bins * radius.mean())


def _mean_hue(pixels: np.ndarray, weights: np.ndarray) -> float:
    """The chroma-weighted circular mean hue of ``pixels`` (N x 3 in 0..1), in degrees."""
    hues = np.array([colorsys.rgb_to_hsv(*p)[0] for p in pixels]) * 2 * math.pi
    mean = np.angle((weights * np.exp(1j * hues)).sum())
    return float(math.degrees(mean) % 360)


def colour_of_hue(hue: float) -> str | None:
    """The named colour within :data:`MAX_HUE_ERROR` of ``hue`` (degrees), else None."""

    def gap(name: str) -> float:
        return abs((hue - _HUES[name] + 180) % 360 - 180)

    name = min(_HUES, key=gap)
    return name if gap(name) <= MAX_HUE_ERROR else None


def _shape(f: dict[str, float]) -> str | None:
    if not ASPECT_RANGE[0] <= f["aspect"] <= ASPECT_RANGE[1] or f["h2"] > ELONGATION:
        return None
    strengths = {name: f[f"h{k}"] for name, (k, _) in SHAPE_HARMONICS.items()}
    if max(strengths.values()) < ROUND:
        return "circle"
    name = max(strengths, key=strengths.get)
    return name if strengths[name] >= SHAPE_HARMONICS[name][1] else None
