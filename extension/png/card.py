"""PNG embedding cards as the web UI writes them while training: caption, pixel bands, text chunk."""

from __future__ import annotations

import base64
import io
import math
import os
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from ..embedding.atomic import atomic_write_bytes
from ..embedding.model import SDXL_KEYS, Embedding
from .bands import insert_bands, shade_sequence
from .extract import TEXT_KEY
from .payload_json import encode_payload

_PAD = 10
_FILL = (255, 255, 255)


class NoPixelBandsWarning(UserWarning):
    """``embed_in_png`` could only write the text chunk: SDXL pairs cannot go into pixel bands
    (the web UI's band decoration needs ``string_to_param``), so the card loses its embedding if
    the text chunk is stripped."""


def payload_for(embedding: Embedding) -> dict:
    """The payload the web UI stores in cards: its six-key ``.pt`` dict, or ``{clip_l, clip_g}`` for
    SDXL (the only SDXL form its loader accepts; the name then comes from the file name)."""
    if isinstance(embedding.vectors, dict):
        return {k: embedding.vectors[k] for k in SDXL_KEYS}
    return {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": embedding.vectors},
        "name": embedding.name,
        "step": embedding.step,
        "sd_checkpoint": embedding.checkpoint_hash,
        "sd_checkpoint_name": embedding.checkpoint_name,
    }


def can_embed_in_pixels(embedding: Embedding) -> bool:
    """Whether ``embed_in_png`` can write pixel bands for this embedding (not for SDXL pairs)."""
    return not embedding.is_sdxl


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=max(1, size))
    except (TypeError, ValueError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> float:
    return draw.textbbox((0, 0), text, font=font)[2]


def _one_line(text: str) -> str:
    """The caption is one line: a name with a line break in it (a file may carry any name) would
    make Pillow refuse the anchored text."""
    return " ".join(text.splitlines())


def _draw(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font, anchor: str) -> None:
    if isinstance(font, ImageFont.FreeTypeFont):
        draw.text(xy, text, font=font, fill=_FILL, anchor=anchor)
        return
    # bitmap fonts know no anchors: place the box by hand
    left, _top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x, y = xy
    x -= {"l": 0, "m": (right - left) / 2, "r": right - left}[anchor[0]]
    y -= 0 if anchor[1] == "t" else bottom
    draw.text((x, y), text, font=font, fill=_FILL)


def caption_overlay(image: Image.Image, title: str, footer: tuple[str, str, str]) -> Image.Image:
    """The web UI's cosmetic caption: top and bottom darkened, the title at the top left, the
    footer left/middle/right along the bottom, in white (Pillow's default font)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint32)
    h, w = rgb.shape[:2]
    y = np.arange(h, dtype=np.float64)
    mag = np.maximum(1 - np.cos(y / h * 1.5), 1 - np.cos((h - y) / h * 1.5 * 1.1))
    alpha = np.minimum((mag * 255).astype(np.int64), 255).astype(np.uint32)[:, None, None]
    shaded = ((rgb * (255 - alpha) * 2 + 255) // 510).astype(np.uint8)  # round(c * (255 - a) / 255)
    out = Image.fromarray(shaded, "RGB")
    draw = ImageDraw.Draw(out)
    size = 32
    title = _one_line(title)
    footer = tuple(_one_line(t) for t in footer)
    if title:
        tw = _text_width(draw, title, _font(size))
        if tw > 0:
            size = max(1, min(int(size * ((w * 0.75 - _PAD * 4) / tw)), 72))
        _draw(draw, (_PAD, _PAD), title, _font(size), "lt")
    texts = [t for t in footer if t]
    if texts:
        font = _font(size)
        sizes = []
        for t in texts:
            fw = _text_width(draw, t, font)
            sizes.append(min(int(size * ((w / 3 - _PAD) / fw)), 72) if fw > 0 else size)
        font = _font(max(1, min(sizes)))
        left, mid, right = footer
        base = h - _PAD
        if left:
            _draw(draw, (_PAD, base), left, font, "ls")
        if mid:
            _draw(draw, (w / 2, base), mid, font, "ms")
        if right:
            _draw(draw, (w - _PAD, base), right, font, "rs")
    return out


def default_footer(embedding: Embedding) -> tuple[str, str, str]:
    """Checkpoint name, ``[checkpoint hash]`` and ``"<n>v <step>s"``, as the web UI captions."""
    return (
        embedding.checkpoint_name or "",
        f"[{embedding.checkpoint_hash}]" if embedding.checkpoint_hash else "",
        f"{embedding.n_vectors}v {embedding.step if embedding.step is not None else 0}s",
    )


def embed_in_png(
    image: Image.Image,
    embedding: Embedding,
    *,
    title: str | None = None,
    footer: tuple[str, str, str] | None = None,
    caption: bool = True,
) -> tuple[Image.Image, PngInfo]:
    """A PNG card carrying ``embedding``, and the PngInfo to save it with.

    Draws the caption (``title`` defaults to ``<name>``, ``footer`` to checkpoint name, hash and
    ``"<n>v <step>s"``; ``caption=False`` leaves the picture as it is), adds the web UI's pixel
    bands on both sides and puts the base64 JSON in the ``sd-ti-embedding`` text chunk.  For SDXL
    pairs only the text chunk is written and a NoPixelBandsWarning is issued.
    """
    if not isinstance(embedding, Embedding):
        raise TypeError(f"expected an Embedding, got {type(embedding).__name__}")
    payload = payload_for(embedding)
    text = encode_payload(payload)
    carrier = image
    if caption:
        carrier = caption_overlay(
            image,
            f"<{embedding.name}>" if title is None else title,
            default_footer(embedding) if footer is None else tuple(footer),
        )
    if can_embed_in_pixels(embedding):
        first_row = embedding.vectors[0].numpy()
        card = insert_bands(carrier, zlib.compress(text, level=9), shade_sequence(first_row))
    else:
        warnings.warn(
            f"{embedding.name}: SDXL embeddings cannot be stored in pixel bands; the card carries it "
            "only in its text chunk, which image hosts and editors often strip",
            NoPixelBandsWarning,
            stacklevel=2,
        )
        card = carrier.convert("RGB")
    info = PngInfo()
    info.add_text(TEXT_KEY, base64.b64encode(text))
    return card, info


def plain_card_image(embedding: Embedding, size: tuple[int, int] = (512, 512)) -> Image.Image:
    """A generated picture for cards made without one: a soft gradient tinted by the vectors."""
    first = (embedding.vectors["clip_l"] if isinstance(embedding.vectors, dict) else embedding.vectors)[0]
    v = first.numpy().astype(np.float64)
    hue = [(math.tanh(float(v[i::3].mean()) * 50) + 1) / 2 for i in range(3)]
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    t = (xx / max(w - 1, 1) + yy / max(h - 1, 1)) / 2
    rgb = np.stack([(60 + 150 * (hue[c] * (1 - t) + (1 - hue[c]) * t)) for c in range(3)], axis=-1)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def png_bytes(image: Image.Image, pnginfo: PngInfo | None = None) -> bytes:
    """The PNG file bytes of ``image`` with ``pnginfo``'s chunks."""
    buf = io.BytesIO()
    image.save(buf, "PNG", pnginfo=pnginfo)
    return buf.getvalue()


def save_png_card(
    path: str | os.PathLike, image: Image.Image, pnginfo: PngInfo | None, *, overwrite: bool = False
) -> Path:
    """Save a card atomically (FileExistsError if ``path`` exists and not ``overwrite``)."""
    return atomic_write_bytes(path, png_bytes(image, pnginfo), overwrite=overwrite)
