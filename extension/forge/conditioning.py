"""SDXL's conditioning vector as Forge's engine builds it, with per-image sizes: host-free.

Forge's ``StableDiffusionXL.get_learned_conditioning`` (sdxl.py) concatenates the pooled clip_g
output (1280) with six 256-wide timestep embeddings of the image's height, width, crop top,
crop left, target height and target width, the same numbers for every prompt of a batch. Training
images have their own sizes, so here each row gets its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..backends.base import SizeConditioning


def size_numbers(sizes: Sequence[SizeConditioning]) -> torch.Tensor:
    """``(B, 6)`` float32: height, width, crop top, crop left, target height, target width (sdxl.py order)."""
    rows = [[*s.original_size, *s.crop_top_left, *s.target_size] for s in sizes]
    return torch.tensor(rows, dtype=torch.float32)


def sdxl_vector(
    pooled: torch.Tensor, sizes: Sequence[SizeConditioning], embed: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``(B, 1280 + 6*256)``: ``pooled`` followed by ``embed`` (Forge's ``Timestep(256)``) of each
    size number, flattened per row, as Forge builds its ``vector`` condition."""
    if pooled.ndim != 2:
        raise ValueError(f"pooled output must be (B, width), got {tuple(pooled.shape)}")
    if len(sizes) != pooled.shape[0]:
        raise ValueError(f"got {len(sizes)} size conditionings for a batch of {pooled.shape[0]}")
    numbers = size_numbers(sizes)
    flat = embed(numbers.reshape(-1)).reshape(numbers.shape[0], -1)
    return torch.cat([pooled, flat.to(pooled)], dim=1)


def default_sizes(batch: int, side: int, crop: tuple[int, int] = (0, 0)) -> list[SizeConditioning]:
    """Sizes for ``batch`` square ``side`` images with the host's crop setting (top, left)."""
    return [SizeConditioning((side, side), crop, (side, side))] * batch
