"""Apply prompt weights to text-encoder output and pick the CLIP-skip layer (spec §7)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

EMPHASIS_MODES = ("Original", "No norm", "Ignore", "None")


def apply_emphasis(z: Tensor, multipliers: Tensor, mode: str = "Original") -> Tensor:
    """Weight encoder output ``z`` ``(B, T, C)`` by ``multipliers`` ``(B, T)`` the web UI's way.

    * ``"Original"``: ``z * m``, then rescaled so the mean over the whole tensor is unchanged.
    * ``"No norm"``: ``z * m`` only.
    * ``"Ignore"`` / ``"None"``: ``z`` unchanged.
    * any other name: like ``"Original"`` (the web UI's fallback).

    Returns a new tensor of ``z``'s dtype; never modifies ``z`` (autograd-friendly).
    """
    if tuple(multipliers.shape) != tuple(z.shape[:-1]):
        raise ValueError(
            f"multipliers of shape {tuple(multipliers.shape)} do not match z of shape {tuple(z.shape)}; "
            "they need one weight per token: z.shape[:-1]"
        )
    if mode in ("Ignore", "None"):
        return z
    # computed in (at least) float32 like the web UI, whose multipliers are float32; result in z's dtype
    work = torch.promote_types(z.dtype, torch.float32)
    zw = z.to(work)
    weighted = zw * multipliers.to(device=z.device, dtype=work).unsqueeze(-1)
    if mode != "No norm" and not bool((multipliers == 1).all()):
        # restores the overall mean: cancels uniform weighting, as in the web UI (mean ~ 0 gives inf/NaN).
        # With every weight 1 the factor is exactly 1, or 0/0 when mean(z) is exactly 0 (an untrained
        # final layer norm without bias): skipping it is bit-identical wherever the web UI is finite.
        weighted = weighted * (zw.mean() / weighted.mean())
    return weighted.to(z.dtype)


def select_hidden_layer(
    hidden_states: Sequence[Tensor],
    clip_skip: int,
    final_layer_norm: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """The CLIP-skip output: ``hidden_states[-clip_skip]``, then ``final_layer_norm`` if given.

    ``hidden_states`` is the encoder's list with the embedding output first (as transformers
    returns it with ``output_hidden_states=True``), so ``clip_skip=1`` is the last layer and 2 the
    penultimate. SD1 passes its final LayerNorm; SDXL CLIP-L passes none.
    """
    layers = len(hidden_states) - 1
    if not 1 <= clip_skip <= layers:
        raise ValueError(
            f"clip skip must be between 1 and {layers} for a {layers}-layer encoder, got {clip_skip}"
        )
    z = hidden_states[-clip_skip]
    return final_layer_norm(z) if final_layer_norm is not None else z


def multipliers_tensor(
    multipliers: Sequence[Sequence[float]], device: torch.device | str | None = None
) -> Tensor:
    """A ``(B, T)`` float32 tensor from per-chunk multiplier lists (as the web UI builds it)."""
    return torch.tensor([list(map(float, row)) for row in multipliers], dtype=torch.float32, device=device)
