"""Seeded pictures of one coloured shape on a plain background, with captions.

The world: :data:`COLOURS` x :data:`SHAPES` x :data:`SIZES` x :data:`BACKGROUNDS`, at a jittered
position and scale, upright. The combinations in :data:`HELD_OUT` (e.g. purple stars) never appear
in the tiny-shapes model's training pictures or captions: every held-out colour and shape is seen,
only never together, so textual inversion has a concept to find that the model can draw but was
never told about.
"""

from __future__ import annotations

import colorsys
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

# saturated colours with hues at least 40 degrees apart, so that hue alone tells them apart
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 38, 38),
    "yellow": (232, 200, 24),
    "green": (36, 168, 60),
    "cyan": (24, 186, 208),
    "blue": (40, 76, 224),
    "purple": (150, 56, 204),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = {"small": 0.25, "large": 0.36}  # half the shape's extent, as a fraction of the picture side
BACKGROUNDS: dict[str, tuple[int, int, int]] = {  # achromatic, so chroma separates shape from ground
    "white": (242, 242, 242),
    "grey": (128, 128, 128),
    "black": (22, 22, 22),
}
# one held-out shape per held-out colour: each colour and each shape is still seen in other pairs
HELD_OUT: tuple[tuple[str, str], ...] = (
    ("purple", "star"),
    ("green", "circle"),
    ("red", "square"),
    ("cyan", "triangle"),
)
PARTIAL_CAPTIONS = 0.3  # share of captions naming only the shape or only the colour
STAR_INNER_RATIO = 0.42  # inner / outer radius of the five-pointed star
_SUPERSAMPLE = 4
_TEMPLATES = Path(__file__).resolve().parent.parent / "data" / "templates"


@dataclass(frozen=True)
class ShapeSpec:
    """One picture: what it shows and where (``cx``, ``cy``, ``extent`` as fractions of the side)."""

    colour: str
    shape: str
    size: str
    background: str
    cx: float
    cy: float
    extent: float

    @property
    def concept(self) -> str:
        """``"<colour> <shape>"``, e.g. ``"purple star"``."""
        return f"{self.colour} {self.shape}"


def check_concept(colour: str, shape: str) -> None:
    """Raise ``ValueError`` naming the choices when ``colour`` or ``shape`` is not in the world."""
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; choose one of {', '.join(COLOURS)}")
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")


def is_held_out(colour: str, shape: str) -> bool:
    return (colour, shape) in HELD_OUT


def seen_combinations() -> list[tuple[str, str]]:
    """The colour-shape pairs the tiny-shapes model was trained on."""
    return [(c, s) for c in COLOURS for s in SHAPES if not is_held_out(c, s)]


def parse_concept(text: str) -> tuple[str, str]:
    """``"purple star"`` or ``"purple-star"`` -> ``("purple", "star")``; a clear error otherwise."""
    parts = text.replace("-", " ").replace("_", " ").split()
    if len(parts) != 2:
        raise ValueError(f"concept {text!r} must be '<colour> <shape>', e.g. 'purple star'")
    check_concept(parts[0], parts[1])
    return parts[0], parts[1]


def random_spec(
    rng: random.Random, *, colour: str | None = None, shape: str | None = None, seen_only: bool = True
) -> ShapeSpec:
    """A random picture description; ``colour``/``shape`` fix those, ``seen_only`` avoids :data:`HELD_OUT`."""
    while True:
        c = colour or rng.choice(list(COLOURS))
        s = shape or rng.choice(SHAPES)
        if not (seen_only and is_held_out(c, s)) or (colour and shape):
            break
    size = rng.choice(list(SIZES))
    background = rng.choice(list(BACKGROUNDS))
    extent = SIZES[size] * rng.uniform(0.9, 1.1)
    room = 0.5 - extent - 0.04  # keep the shape inside the picture with a small margin
    cx = 0.5 + rng.uniform(-room, room)
    cy = 0.5 + rng.uniform(-room, room)
    return ShapeSpec(c, s, size, background, cx, cy, extent)


def outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """The polygon of ``shape`` centred at (``cx``, ``cy``) with half extent ``r`` (pixels); empty for a circle."""
    if shape == "square":
        h = r * 0.86
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":  # upright and equilateral, its bounding box centred on (cx, cy)
        half_width, height = r, r * math.sqrt(3)
        top, bottom = cy - height / 2, cy + height / 2
        return [(cx, top), (cx + half_width, bottom), (cx - half_width, bottom)]
    if shape == "star":
        radii = [r if i % 2 == 0 else r * STAR_INNER_RATIO for i in range(10)]
        angles = [-math.pi / 2 + i * math.pi / 5 for i in range(10)]
        return [(cx + q * math.cos(a), cy + q * math.sin(a) + r * 0.1) for q, a in zip(radii, angles)]
    if shape == "circle":
        return []
    raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")


def draw_shape(spec: ShapeSpec, side: int, fill: tuple[int, int, int] | None = None) -> Image.Image:
    """The ``side`` x ``side`` RGB picture of ``spec`` (drawn at 4x and downsampled: smooth edges),
    in ``fill`` instead of the named colour when given."""
    s = side * _SUPERSAMPLE
    image = Image.new("RGB", (s, s), BACKGROUNDS[spec.background])
    draw = ImageDraw.Draw(image)
    cx, cy, r = spec.cx * s, spec.cy * s, spec.extent * s
    fill = fill or COLOURS[spec.colour]
    if spec.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(outline(spec.shape, cx, cy, r), fill=fill)
    return image.resize((side, side), Image.Resampling.LANCZOS)


def jittered(colour: str, rng: random.Random, hue_degrees: float = 8.0) -> tuple[int, int, int]:
    """``colour`` with its hue moved up to ``hue_degrees`` and saturation and value up to 10 %."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in COLOURS[colour]))
    h = (h + rng.uniform(-hue_degrees, hue_degrees) / 360) % 1
    s, v = min(1.0, s * rng.uniform(0.9, 1.1)), min(1.0, v * rng.uniform(0.9, 1.1))
    return tuple(round(c * 255) for c in colorsys.hsv_to_rgb(h, s, v))  # type: ignore[return-value]


def any_hue(shape: str, rng: random.Random) -> tuple[int, int, int]:
    """A saturated colour of any hue, except hues named as a colour held out with ``shape`` (so that
    no picture drawn in it shows a held-out pair): what the VAE learns colour from."""
    from .judge import colour_of_hue

    while True:
        hsv = rng.random(), rng.uniform(0.6, 0.9), rng.uniform(0.7, 0.95)
        rgb = tuple(round(c * 255) for c in colorsys.hsv_to_rgb(*hsv))
        hue = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] * 360  # of the rounded colour
        if not is_held_out(colour_of_hue(hue) or "", shape):
            return rgb  # type: ignore[return-value]


def _templates(name: str) -> list[str]:
    lines = (_TEMPLATES / f"{name}.txt").read_text("utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


def filewords(spec: ShapeSpec) -> str:
    """What a picture shows besides its concept: ``"small, white background"`` (the caption files of
    a textual-inversion dataset, so that ``[filewords]`` never names the concept)."""
    return f"{spec.size}, {spec.background} background"


def caption(spec: ShapeSpec, rng: random.Random) -> str:
    """A varied caption naming everything ``spec`` shows (the base model's training text).

    Half are plain ("a small red circle on a white background", size and background each sometimes
    left out); half use the bundled subject templates with the concept as ``[name]`` and size and
    background as ``[filewords]``, so the template words the trainer uses are known to the model.
    :data:`PARTIAL_CAPTIONS` of them name only the shape ("a star") or only the colour ("a purple
    shape"), so that colour and shape words act on their own: what lets the model compose pairs.
    """
    size = spec.size if rng.random() < 0.6 else ""
    background = spec.background if rng.random() < 0.6 else ""
    concept, drop = spec.concept, rng.random()
    if drop < PARTIAL_CAPTIONS / 2:  # the shape alone: "star" must mean a star of any colour
        concept = spec.shape
    elif drop < PARTIAL_CAPTIONS:  # the colour alone: "purple" must mean purple whatever the shape
        concept = f"{spec.colour} shape"
    if rng.random() < 0.5:
        text = " ".join(w for w in ("a", size, concept) if w)
        return text + (f" on a {background} background" if background else "")
    name = concept if rng.random() < 0.5 else f"a {concept}"
    words = [w for w in (size, f"{background} background" if background else "") if w]
    if words:
        template = rng.choice(_templates("subject_filewords"))
        return template.replace("[name]", name).replace("[filewords]", ", ".join(words))
    plain = [t for t in _templates("subject") if not re.search(r"\b(small|large)\b", t)]  # no wrong size
    return rng.choice(plain).replace("[name]", name)
