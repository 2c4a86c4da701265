"""Seeded random weights for a model built on the meta device, allocated once in the target dtype.

Building a full-size model the usual way runs every layer's default initialiser (Kaiming uniform
for each convolution, transformers' ``_init_weights``) in float32 and then casts: slow and twice
the memory. Here the model is built on the meta device (no memory, no initialisers), allocated
directly in the target dtype and device, and each tensor is filled from its own generator seeded
by ``(seed, tag, parameter name)``: the values do not depend on the order of the parameters, the
device or the dtype (they are drawn in float32 on the CPU and rounded), so ``random-sd15`` is the
same model on every machine.

The scales keep activations in a sane range through the real depths: linear and convolution
weights ``N(0, 1/fan_in)`` (LeCun normal, variance preserving), biases 0, embeddings ``N(0, 0.02)``
(CLIP's), normalisation layers weight 1 and bias 0 unless spread (see :func:`materialize_seeded`).
"""

from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

EMBEDDING_STD = 0.02  # CLIP's token / position embedding scale


class SeededInitError(RuntimeError):
    """The model holds a tensor this initialiser does not know how to fill."""


def tensor_seed(seed: int, tag: str, name: str) -> int:
    """A 63-bit generator seed for one tensor, stable across runs and platforms."""
    digest = hashlib.sha256(f"ti-trainer/{tag}/{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _fill_normal(tensor: torch.Tensor, std: float, mean: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    target = tensor.detach()
    in_place = target.dtype == torch.float32 and target.device.type == "cpu" and target.is_contiguous()
    if in_place:  # the same draws as below, without a temporary copy
        values = torch.randn(target.shape, generator=gen, out=target)
    else:
        values = torch.randn(target.shape, generator=gen, dtype=torch.float32)
    if std != 1.0:
        values.mul_(std)
    if mean:
        values.add_(mean)
    if not in_place:
        target.copy_(values)  # rounds to the target dtype and moves to the target device


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm))


_Draw = tuple[torch.Tensor, float, float]  # (tensor, std, mean): filled from N(mean, std²)


def _plan_parameter(module: nn.Module, leaf: str, param: torch.Tensor, spread_norms: bool) -> _Draw | None:
    """Fill ``param`` now if it is a constant; else return the normal draw it needs."""
    if _is_norm(module):
        if spread_norms:  # random affine LayerNorms, like trained CLIP's (see tiny.spread_layer_norms)
            return param, 0.1, 1.0 if leaf == "weight" else 0.05
        param.fill_(1.0 if leaf == "weight" else 0.0)
        return None
    if isinstance(module, nn.Embedding):
        return param, EMBEDDING_STD, 0.0
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
        if leaf == "bias":
            param.zero_()
            return None
        return param, 1.0 / math.sqrt(param[0].numel()), 0.0  # fan_in
    raise SeededInitError(f"no seeded initialiser for parameter {leaf!r} of {type(module).__name__}")


def materialize_seeded(
    model: nn.Module,
    *,
    seed: int,
    tag: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    spread_norms: bool = False,
) -> nn.Module:
    """Allocate a meta-device ``model`` on ``device`` in ``dtype`` and fill it with seeded values.

    ``tag`` names the component (e.g. ``"random-sd15/unet"``) so that two components with the same
    parameter names get different values. ``spread_norms`` gives LayerNorms random affine
    parameters (weight ~ N(1, 0.1), bias ~ N(0.05, 0.1)) as trained text encoders have. CLIP's
    ``position_ids`` buffer is rebuilt; any other buffer is an error (it would hold garbage).
    """
    # nn.Module's own ``to``: free on the meta device (diffusers' override warns about casting)
    nn.Module.to(model, dtype=dtype)
    model.to_empty(device=device)
    draws: list[tuple[_Draw, int]] = []
    with torch.no_grad():
        for module_name, module in model.named_modules():
            for leaf, param in module.named_parameters(recurse=False):
                name = f"{module_name}.{leaf}" if module_name else leaf
                draw = _plan_parameter(module, leaf, param, spread_norms)
                if draw is not None:
                    draws.append((draw, tensor_seed(seed, tag, name)))
            for leaf, buffer in module.named_buffers(recurse=False):
                if leaf != "position_ids":
                    raise SeededInitError(f"no seeded initialiser for buffer {module_name}.{leaf}")
                buffer.copy_(torch.arange(buffer.shape[-1]).expand(buffer.shape))
    # each draw has its own generator, so they can run side by side (torch releases the GIL)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(lambda job: _fill_normal(job[0][0], job[0][1], job[0][2], job[1]), draws))
    return model.eval()
