"""Making a model built for inference trainable through, and undoing it: host-free torch helpers.

Forge builds and runs its models under ``torch.inference_mode()``. A backward pass through them
hits three failures, each reproduced on plain modules in ``tests/test_forge_tensors.py``:

1. Weights created in inference mode are *inference tensors*: autograd cannot save them for the
   backward pass ("Inference tensors cannot be saved for backward").
2. *Hybrids*: ``module.to(dtype)`` outside inference mode on an inference parameter (Forge's text
   engine does this on every call) leaves a tensor that says ``is_inference()`` False but has no
   version counter; autograd, and later even inference-mode code, fails on it ("Inference tensors
   do not track version counter").
3. Forge's transformer block normalises ``x`` and then adds to ``x`` in place (``x += n``), so the
   norm's saved input is modified before the backward pass needs it.

:func:`make_trainable` fixes 1 and 2 by giving every such tensor a normal copy (frozen); normal
tensors work inside inference mode too, so nothing has to be converted back. :func:`guard_inplace`
fixes 3 with forward pre-hooks that hand the norms a copy of their input while gradients are on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch.utils.hooks import RemovableHandle


def is_untrainable(tensor: torch.Tensor) -> bool:
    """True for an inference tensor or a hybrid (a tensor whose version counter cannot be read)."""
    if tensor.is_inference():
        return True
    try:
        tensor._version  # noqa: B018 - reading it is the test
    except RuntimeError:
        return True
    return False


def _normal_copy(tensor: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode(False), torch.no_grad():
        copy = tensor.detach().clone()
    if isinstance(tensor, torch.nn.Parameter):
        return torch.nn.Parameter(copy, requires_grad=False)
    return copy


def make_trainable(modules: Iterable[torch.nn.Module]) -> int:
    """Replace every inference or hybrid parameter and buffer under ``modules`` by a normal copy.

    Copies are made one tensor at a time (peak memory grows by one tensor) and are frozen
    (``requires_grad=False``). A tensor registered in several places (e.g. a wrapper's ``weight``
    that is its inner module's) gets one copy, put everywhere it was. Returns how many distinct
    tensors were replaced.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("make_trainable must run outside torch.inference_mode()")
    replaced: dict[int, torch.Tensor] = {}
    seen: set[int] = set()
    for root in modules:
        for module in root.modules():
            if id(module) in seen:
                continue
            seen.add(id(module))
            for table in (module._parameters, module._buffers):
                for name, tensor in list(table.items()):
                    if tensor is None:
                        continue
                    if id(tensor) in replaced:
                        table[name] = replaced[id(tensor)]
                    elif is_untrainable(tensor):
                        copy = _normal_copy(tensor)
                        replaced[id(tensor)] = copy
                        table[name] = copy
    return len(replaced)


def requires_grad_flags(modules: Sequence[torch.nn.Module]) -> list[dict[str, bool]]:
    """Each module's ``requires_grad`` per parameter name, for :func:`restore_requires_grad`."""
    return [{name: p.requires_grad for name, p in root.named_parameters()} for root in modules]


def restore_requires_grad(modules: Sequence[torch.nn.Module], flags: Sequence[dict[str, bool]]) -> int:
    """Put the flags of :func:`requires_grad_flags` back by name, so that the copies
    :func:`make_trainable` put in place get their originals' flags. Inference tensors (e.g. the
    VAE's, frozen for training but never copied) take ``requires_grad=True`` only inside
    inference mode, so each flag is set there. Returns how many flags changed.
    """
    changed = 0
    for root, saved in zip(modules, flags, strict=True):
        for name, p in root.named_parameters():
            flag = saved.get(name)
            if flag is None or p.requires_grad == flag:
                continue
            with torch.inference_mode(p.is_inference()):
                p.requires_grad_(flag)
            changed += 1
    return changed


def untrainable_tensors(modules: Iterable[torch.nn.Module]) -> list[str]:
    """Qualified names of the inference or hybrid parameters and buffers under ``modules``."""
    found = []
    for i, root in enumerate(modules):
        for name, tensor in [*root.named_parameters(), *root.named_buffers()]:
            if is_untrainable(tensor):
                found.append(f"{i}:{name}")
    return found


# Forge's backend/nn/unet.py BasicTransformerBlock: ``n = norm1(x); ...; x += n`` and again with
# norm2; norm3's input is not modified afterwards.
INPLACE_BLOCKS = ("BasicTransformerBlock",)
INPLACE_NORMS = ("norm1", "norm2")


def _copy_input(module: torch.nn.Module, args: tuple) -> tuple | None:
    if not torch.is_grad_enabled() or not args or not isinstance(args[0], torch.Tensor):
        return None
    return (args[0].clone(), *args[1:])


def guard_inplace(
    root: torch.nn.Module,
    block_classes: Sequence[str] = INPLACE_BLOCKS,
    norm_names: Sequence[str] = INPLACE_NORMS,
) -> list[RemovableHandle]:
    """Hook the norms (``norm_names``) of every block under ``root`` whose class is named in
    ``block_classes`` so that, while gradients are enabled, each gets a copy of its input: the
    block's later in-place add then changes a tensor the norm did not save.

    Under ``torch.no_grad()`` / inference mode the hooks do nothing. Returns the handles for
    :func:`remove_hooks`.
    """
    handles = []
    for module in root.modules():
        if type(module).__name__ not in block_classes:
            continue
        for name in norm_names:
            norm = getattr(module, name, None)
            if isinstance(norm, torch.nn.Module):
                handles.append(norm.register_forward_pre_hook(_copy_input))
    return handles


def remove_hooks(handles: Iterable[RemovableHandle]) -> None:
    """Remove hooks made by :func:`guard_inplace`."""
    for handle in handles:
        handle.remove()
