"""Gradient checkpointing really recomputes the UNet's blocks in the backward pass, on every
diffusers version we allow (0.27-0.31 gate it on ``module.training``; our frozen UNet is in eval mode)."""

from __future__ import annotations

import torch

from extension.backends.tiny import build_tiny_backend


def _forward_counts(backend, checkpointing: bool) -> int:
    """How often the first transformer block (on the gradient's path: it reads the text conditioning)
    runs in one forward + backward step."""
    block = backend.unet.down_blocks[0].attentions[0].transformer_blocks[0]
    calls = []
    forward = block.forward

    def counting_forward(*args, **kwargs):  # (torch skips forward hooks when it recomputes)
        calls.append(1)
        return forward(*args, **kwargs)

    block.forward = counting_forward
    vectors = {"clip_l": torch.randn(2, 32, requires_grad=True)}
    try:
        with backend.frozen():
            backend.set_gradient_checkpointing(checkpointing)
            try:
                cond = backend.encode_text(["a photo of tok"], {"tok": vectors})
                x = torch.randn(1, backend.latent_channels, 8, 8)
                out = backend.denoise(x, torch.tensor([500]), cond)
                out.float().pow(2).mean().backward()
            finally:
                backend.set_gradient_checkpointing(False)
    finally:
        del block.forward
    assert vectors["clip_l"].grad is not None and vectors["clip_l"].grad.abs().sum() > 0
    return len(calls)


def test_checkpointing_recomputes_blocks_in_backward():
    backend = build_tiny_backend("sd1")
    assert _forward_counts(backend, checkpointing=False) == 1
    assert _forward_counts(backend, checkpointing=True) == 2  # the forward, and its recomputation
    assert not backend.unet.training  # back in eval mode afterwards


def test_checkpointing_gives_the_same_gradients():
    backend = build_tiny_backend("sd1")
    grads = []
    for on in (False, True):
        vectors = {"clip_l": torch.ones(2, 32, requires_grad=True)}
        with backend.frozen():
            backend.set_gradient_checkpointing(on)
            try:
                cond = backend.encode_text(["tok on a table"], {"tok": vectors})
                g = torch.Generator().manual_seed(1)
                x = torch.randn(1, backend.latent_channels, 8, 8, generator=g)
                backend.denoise(x, torch.tensor([300]), cond).pow(2).mean().backward()
            finally:
                backend.set_gradient_checkpointing(False)
        grads.append(vectors["clip_l"].grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)
