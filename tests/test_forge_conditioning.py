"""SDXL's vector condition built per image as Forge's sdxl.py builds it per batch."""

import math

import pytest
import torch

from extension.backends.base import SizeConditioning
from extension.forge.conditioning import default_sizes, sdxl_vector


def timestep_embedding(t: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """The sinusoidal embedding of Forge's Timestep(256) (backend/nn/unet.py)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def forge_vector(pooled_row, h, w, crop_h, crop_w, th, tw):
    # sdxl.py get_learned_conditioning, for one prompt
    out = [timestep_embedding(torch.Tensor([x])) for x in (h, w, crop_h, crop_w, th, tw)]
    flat = torch.flatten(torch.cat(out)).unsqueeze(0)
    return torch.cat([pooled_row[None], flat], dim=1)


def test_vector_matches_forge_per_row():
    torch.manual_seed(0)
    pooled = torch.randn(2, 1280)
    sizes = [
        SizeConditioning((1024, 768), (16, 0), (1024, 768)),
        SizeConditioning((512, 512), (0, 32), (640, 640)),
    ]
    vector = sdxl_vector(pooled, sizes, timestep_embedding)
    assert vector.shape == (2, 2816)
    torch.testing.assert_close(vector[0:1], forge_vector(pooled[0], 1024, 768, 16, 0, 1024, 768))
    torch.testing.assert_close(vector[1:2], forge_vector(pooled[1], 512, 512, 0, 32, 640, 640))


def test_gradient_reaches_pooled():
    pooled = torch.randn(1, 1280, requires_grad=True)
    sdxl_vector(pooled, default_sizes(1, 1024), timestep_embedding).sum().backward()
    assert pooled.grad is not None and torch.all(pooled.grad == 1)


def test_wrong_batch_is_refused():
    with pytest.raises(ValueError, match="2 size conditionings for a batch of 1"):
        sdxl_vector(torch.zeros(1, 1280), default_sizes(2, 1024), timestep_embedding)
