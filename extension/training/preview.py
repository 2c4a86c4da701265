"""Preview images during training: the image itself and a PNG card carrying the embedding."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..backends.base import Backend, PreviewRequest, VectorSet
from ..embedding import Embedding
from .config import TrainConfig
from .outputs import atomic_write


@dataclass
class PreviewFiles:
    image: Path
    card: Path | None


def preview_request(config: TrainConfig, training_prompt: str) -> PreviewRequest:
    """The preview settings of ``config``: its prompt, or the current training prompt when empty;
    its size, or the training size when 0; its seed, or the training seed when negative."""
    return PreviewRequest(
        prompt=config.preview_prompt or training_prompt,
        negative_prompt=config.preview_negative_prompt,
        steps=config.preview_steps,
        cfg_scale=config.preview_cfg_scale,
        seed=config.preview_seed if config.preview_seed >= 0 else config.seed,
        width=config.preview_width or config.width,
        height=config.preview_height or config.height,
    )


def infotext(request: PreviewRequest, step: int) -> str:
    """A short web-UI-style ``parameters`` text for the preview PNG."""
    lines = [request.prompt]
    if request.negative_prompt:
        lines.append(f"Negative prompt: {request.negative_prompt}")
    lines.append(
        f"Steps: {request.steps}, CFG scale: {request.cfg_scale}, Seed: {request.seed}, "
        f"Size: {request.width}x{request.height}, TI training step: {step}"
    )
    return "\n".join(lines)


def save_preview(
    backend: Backend,
    request: PreviewRequest,
    name: str,
    vectors: VectorSet,
    image_path: Path,
    *,
    card_path: Path | None = None,
    embedding: Embedding | None = None,
    step: int = 0,
) -> PreviewFiles:
    """Render one preview with ``vectors`` active as ``name``; write the image and, when
    ``card_path`` and ``embedding`` are given, a PNG card with the embedding inside."""
    image: Image.Image = backend.sample_preview(request, {name: vectors})
    info = PngInfo()
    info.add_text("parameters", infotext(request, step))
    atomic_write(image_path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))
    card = None
    if card_path is not None and embedding is not None:
        from ..png import embed_in_png, save_png_card

        footer = (backend.checkpoint_name or "", f"[{backend.checkpoint_hash or ''}]", f"{embedding.n_vectors}v {step}s")
        card_image, card_info = embed_in_png(image, embedding, title=f"<{embedding.name}>", footer=footer)
        card = Path(save_png_card(card_path, card_image, card_info, overwrite=True))
    return PreviewFiles(image_path, card)
