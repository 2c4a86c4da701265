"""Score an embedding: the share of seeded preview samples the judge recognises as the target concept."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..backends.base import PreviewRequest, VectorSet
from .judge import Verdict, judge

PREVIEW_STEPS = 20
PREVIEW_CFG = 5.0


@dataclass
class Score:
    """``hits`` of ``len(verdicts)`` samples judged to be ``concept``; the images for a contact sheet."""

    concept: str
    verdicts: list[Verdict]
    images: list = field(default_factory=list, repr=False)

    @property
    def hits(self) -> int:
        return sum(v.concept == self.concept for v in self.verdicts)

    @property
    def value(self) -> float:
        """The score, 0..1."""
        return self.hits / len(self.verdicts) if self.verdicts else 0.0


def score_embedding(
    backend,
    prompt: str,
    embeddings: Mapping[str, VectorSet],
    concept: str,
    *,
    samples: int = 16,
    seed: int = 0,
    steps: int = PREVIEW_STEPS,
    cfg_scale: float = PREVIEW_CFG,
) -> Score:
    """Render ``prompt`` (naming an embedding of ``embeddings``) with seeds ``seed .. seed+samples-1``
    through the backend's own preview sampler and judge each picture against ``concept``."""
    side = backend.default_size
    verdicts, images = [], []
    for i in range(samples):
        request = PreviewRequest(prompt=prompt, steps=steps, cfg_scale=cfg_scale, seed=seed + i, width=side, height=side)
        image = backend.sample_preview(request, embeddings)
        images.append(image)
        verdicts.append(judge(image))
    return Score(concept, verdicts, images)


def contact_sheet(images: list, path: Path, columns: int = 8, zoom: int = 2) -> Path:
    """The images in a grid, enlarged ``zoom`` times (nearest neighbour), written atomically as PNG."""
    from PIL import Image

    from ..training.outputs import atomic_write

    side = images[0].width
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * side, rows * side), (255, 255, 255))
    for k, image in enumerate(images):
        sheet.paste(image, ((k % columns) * side, (k // columns) * side))
    sheet = sheet.resize((sheet.width * zoom, sheet.height * zoom), Image.Resampling.NEAREST)
    return atomic_write(Path(path), lambda tmp: sheet.save(tmp, format="PNG"))
