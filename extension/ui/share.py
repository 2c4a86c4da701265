"""Sharing embeddings as PNG cards, and importing any supported file into the embeddings folder."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image

from ..embedding import (
    SUPPORTED_SUFFIXES,
    Embedding,
    EmbeddingFormatError,
    load_embedding,
    sanitize_name,
    save_embedding,
)
from ..embedding.diffusers_pair import lone_half_problem


class ShareError(ValueError):
    """A card cannot be made or a file cannot be imported; the message says why and what to do."""


def _open_picture(picture: Image.Image | str | os.PathLike) -> Image.Image:
    if isinstance(picture, Image.Image):
        return picture
    try:
        with Image.open(picture) as im:
            im.load()
            return im.copy()
    except (OSError, ValueError) as exc:
        raise ShareError(
            f"the picture {picture} cannot be read ({exc}); upload a PNG, JPEG or WebP"
        ) from None


def make_card(
    embedding_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    picture: Image.Image | str | os.PathLike | None = None,
) -> Path:
    """Write a PNG card of the embedding at ``embedding_path`` into ``out_dir``; returns its path.

    ``picture`` (a preview or an uploaded image) is the card's picture; without one a plain
    gradient tinted by the vectors is used. The card is named ``<name>.png`` (``<name>-2.png``... if that exists).
    """
    from ..png import NoPixelBandsWarning, embed_in_png, plain_card_image, save_png_card

    try:
        embedding = load_embedding(embedding_path)
    except EmbeddingFormatError as exc:
        raise ShareError(f"cannot share this embedding: {exc}") from None
    image = _open_picture(picture) if picture is not None else plain_card_image(embedding)
    with warnings.catch_warnings():
        # SDXL pairs go into the text chunk only; the import reads that back fine
        warnings.simplefilter("ignore", NoPixelBandsWarning)
        card, info = embed_in_png(image.convert("RGB"), embedding)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = sanitize_name(embedding.name)
    target = out / f"{stem}.png"
    n = 2
    while target.exists():
        target = out / f"{stem}-{n}.png"
        n += 1
    return Path(save_png_card(target, card, info, overwrite=False))


def import_embedding(
    source: str | os.PathLike,
    embeddings_dir: str | os.PathLike,
    *,
    name: str | None = None,
    overwrite: bool = False,
) -> tuple[Path, Embedding]:
    """Read any supported embedding file (``.pt``, ``.bin``, ``.safetensors`` or a picture carrying
    one) and write it to ``embeddings_dir/<name>.safetensors``.  Either file of diffusers' SDXL pair
    brings the pair when the other is beside it; the CLIP-G file alone is refused with the way out.

    It is always re-written as safetensors, so no pickle from an unknown source lands in the
    folder the web UI loads. ``name`` overrides the stored name. Raises ShareError.
    """
    source = Path(source)
    if source.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise ShareError(
            f"{source.name}: unsupported file type {source.suffix or '(none)'}; "
            f"import one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    try:
        embedding = load_embedding(source)
    except EmbeddingFormatError as exc:
        raise ShareError(f"cannot import {source.name}: {exc.problem}") from None
    half = lone_half_problem(source, embedding)  # an upload arrives without its sibling
    if half:
        raise ShareError(half)
    wanted = (name or "").strip() or embedding.name
    safe = sanitize_name(wanted)
    if name and safe != wanted:
        raise ShareError(f"the name {wanted!r} is not a safe file name; use e.g. {safe!r}")
    if safe != embedding.name:
        embedding = embedding.replace(name=safe)
    target = Path(embeddings_dir) / f"{safe}.safetensors"
    if target.exists() and not overwrite:
        raise ShareError(f"{target} already exists; tick overwrite or choose another name")
    try:
        written = save_embedding(embedding, target, "safetensors", overwrite=overwrite)
    except (EmbeddingFormatError, OSError) as exc:
        raise ShareError(f"cannot write {target}: {exc}") from None
    return Path(written), embedding
