"""Small procedurally drawn datasets for the demo and the tests (nothing is downloaded).

:func:`make_shapes_dataset` draws one colour-shape concept of :mod:`..shapes.draw` (the demo's
data for the tiny-shapes model); :func:`make_demo_dataset` draws cartoon cat faces.

There every image shows the same kind of object in one consistent flat style, a round cartoon cat face
with pointed ears, in varied fur and background colours, positions and sizes; each has a caption
file naming those colours, so ``[filewords]`` templates have something to work with.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image, ImageDraw

from .outputs import atomic_write

_FUR = {
    "orange": (232, 140, 48),
    "black": (38, 36, 40),
    "white": (236, 232, 224),
    "grey": (128, 128, 136),
    "brown": (120, 78, 44),
    "cream": (242, 214, 160),
}
_BACKGROUND = {
    "blue": (120, 168, 224),
    "green": (132, 196, 120),
    "pink": (238, 170, 196),
    "yellow": (246, 222, 120),
    "purple": (168, 140, 214),
    "teal": (96, 184, 176),
}
_EYES = {"green": (70, 170, 80), "yellow": (230, 200, 40), "blue": (70, 120, 220)}
_SUPERSAMPLE = 4


def draw_demo_image(rng: random.Random, size: int) -> tuple[Image.Image, str]:
    """One cat-face image of ``size`` x ``size`` pixels and its caption, drawn from ``rng``."""
    fur_name, fur = rng.choice(sorted(_FUR.items()))
    bg_name, bg = rng.choice(sorted(_BACKGROUND.items()))
    eye_name, eye = rng.choice(sorted(_EYES.items()))
    s = size * _SUPERSAMPLE
    image = Image.new("RGB", (s, s), bg)
    draw = ImageDraw.Draw(image)
    radius = s * rng.uniform(0.24, 0.32)
    cx = s * rng.uniform(0.38, 0.62)
    cy = s * rng.uniform(0.45, 0.62)
    outline = tuple(max(0, c - 70) for c in fur)
    width = max(1, s // 64)
    for side in (-1, 1):  # ears first, so the head overlaps their base
        base_x = cx + side * radius * 0.55
        ear = [
            (base_x - radius * 0.42, cy - radius * 0.55),
            (base_x + side * radius * 0.25, cy - radius * 1.45),
            (base_x + radius * 0.42, cy - radius * 0.55),
        ]
        draw.polygon(ear, fill=fur, outline=outline, width=width)
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fur, outline=outline, width=width)
    for side in (-1, 1):
        ex, ey, er = cx + side * radius * 0.4, cy - radius * 0.15, radius * 0.17
        draw.ellipse((ex - er, ey - er, ex + er, ey + er), fill=eye)
        draw.ellipse((ex - er * 0.35, ey - er * 0.8, ex + er * 0.35, ey + er * 0.8), fill=(20, 20, 20))
    nose_y = cy + radius * 0.2
    nose = [(cx - radius * 0.12, nose_y), (cx + radius * 0.12, nose_y), (cx, nose_y + radius * 0.12)]
    draw.polygon(nose, fill=(220, 110, 130))
    for side in (-1, 1):  # whiskers
        for dy in (-0.06, 0.08):
            start = (cx + side * radius * 0.25, nose_y + radius * dy)
            end = (cx + side * radius * 1.15, nose_y + radius * (dy * 2.5))
            draw.line([start, end], fill=outline, width=width)
    image = image.resize((size, size), Image.Resampling.LANCZOS)
    caption = f"{fur_name} cat face, {eye_name} eyes, {bg_name} background"
    return image, caption


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def make_demo_dataset(folder: Path, n: int = 8, size: int = 64, seed: int = 0, *, overwrite: bool = False) -> Path:
    """Write ``n`` demo images ``demo-XX.png`` with captions ``demo-XX.txt`` into ``folder``.

    Deterministic for ``(n, size, seed)``. Files already holding exactly the same bytes are left as
    they are; a different existing file raises :class:`FileExistsError` unless ``overwrite``.
    Returns ``folder``.
    """
    _check_size(n, size)
    folder = Path(folder)
    rng = random.Random(seed)
    files: list[tuple[Path, bytes]] = []
    for i in range(n):
        image, caption = draw_demo_image(rng, size)
        stem = f"demo-{i:02d}"
        files.append((folder / f"{stem}.png", _png_bytes(image)))
        files.append((folder / f"{stem}.txt", (caption + "\n").encode("utf-8")))
    return _write_files(folder, files, overwrite, "demo data")


def make_shapes_dataset(
    folder: Path, concept: str = "purple star", n: int = 8, size: int = 32, seed: int = 0, *, overwrite: bool = False
) -> Path:
    """Write ``n`` pictures ``shape-XX.png`` of ``concept`` (e.g. "purple star", see
    :mod:`..shapes.draw`) in varied sizes, positions and backgrounds into ``folder``.

    Each caption file holds only what is *not* the concept ("small, white background"), so a
    ``[filewords]`` template never tells the model what to learn. Deterministic for the arguments;
    existing files are treated as in :func:`make_demo_dataset`. Returns ``folder``.
    """
    from ..shapes.draw import draw_shape, filewords, parse_concept, random_spec

    colour, shape = parse_concept(concept)
    _check_size(n, size)
    folder = Path(folder)
    rng = random.Random(seed)
    files: list[tuple[Path, bytes]] = []
    for i in range(n):
        spec = random_spec(rng, colour=colour, shape=shape)
        stem = f"shape-{i:02d}"
        files.append((folder / f"{stem}.png", _png_bytes(draw_shape(spec, size))))
        files.append((folder / f"{stem}.txt", (filewords(spec) + "\n").encode("utf-8")))
    return _write_files(folder, files, overwrite, "generated pictures")


def _check_size(n: int, size: int) -> None:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if size < 8 or size % 8:
        raise ValueError(f"size must be a multiple of 8 (>= 8), got {size}")


def _write_files(folder: Path, files: list[tuple[Path, bytes]], overwrite: bool, what: str) -> Path:
    """Write ``files`` (path, bytes) atomically; identical files are left alone, different ones raise
    :class:`FileExistsError` unless ``overwrite``."""
    if not overwrite:
        clashes = [p for p, data in files if p.exists() and (not p.is_file() or p.read_bytes() != data)]
        if clashes:
            raise FileExistsError(
                f"{len(clashes)} file(s) in {str(folder)!r} differ from the {what}, e.g. "
                f"{clashes[0].name!r}: choose an empty folder or pass overwrite=True."
            )
    folder.mkdir(parents=True, exist_ok=True)
    for path, data in files:
        if not (path.is_file() and path.read_bytes() == data):
            atomic_write(path, lambda tmp, data=data: tmp.write_bytes(data))
    return folder
