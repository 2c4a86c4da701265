"""The three failures a backward pass through Forge's engine hits, each reproduced on plain torch
modules built the way Forge builds and runs its models, and fixed by extension/forge/tensors.py."""

import pytest
import torch

from extension.forge.tensors import (
    guard_inplace,
    is_untrainable,
    make_trainable,
    remove_hooks,
    requires_grad_flags,
    restore_requires_grad,
    untrainable_tensors,
)


def _built_in_inference_mode(module_fn):
    with torch.inference_mode():  # Forge's loader is decorated with inference_mode
        return module_fn()


class TokenWrapper(torch.nn.Module):
    """Like Forge's CLIPEmbeddingForTextualInversion: its ``weight`` is the wrapped table's."""

    def __init__(self, wrapped: torch.nn.Embedding):
        super().__init__()
        self.wrapped = wrapped
        self.weight = self.wrapped.weight

    def forward(self, ids, vec):
        rows = self.wrapped(ids)
        return torch.cat([rows[:1], vec, rows[1 + vec.shape[0] :]])


class TextModel(torch.nn.Module):
    """fp16 weights (as Forge keeps CLIP) with a float32 projection."""

    def __init__(self):
        super().__init__()
        self.token_embedding = TokenWrapper(torch.nn.Embedding(16, 8))
        self.position = torch.nn.Embedding(6, 8)
        self.proj = torch.nn.Linear(8, 8)
        self.register_buffer("position_ids", torch.arange(6))

    def half(self):
        super().half()
        self.proj.float()
        return self

    def forward(self, ids, vec):
        # Forge's text engine casts these two to float32 on every call (classic_engine.py)
        self.token_embedding = self.token_embedding.to(dtype=torch.float32)
        self.position = self.position.to(dtype=torch.float32)
        return self.proj(self.token_embedding(ids, vec) + self.position(self.position_ids))


def _text_model_fp16():
    torch.manual_seed(0)
    return _built_in_inference_mode(lambda: TextModel().half())


def _loss(model, vec):
    ids = torch.tensor([0, 3, 4, 5, 1, 2])
    return model(ids, vec).square().mean()


def test_inference_weights_fail_backward_and_are_fixed():
    with torch.inference_mode():
        lin = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"[Ii]nference tensors"):
        lin(x).sum().backward()

    assert make_trainable([lin]) == 2  # weight and bias
    lin(x).sum().backward()
    assert x.grad is not None and lin.weight.grad is None
    assert not lin.weight.requires_grad and isinstance(lin.weight, torch.nn.Parameter)


def test_hybrid_from_a_cast_outside_inference_mode_is_detected_and_fixed():
    with torch.inference_mode():
        emb = torch.nn.Embedding(10, 4).half()
    emb.to(torch.float32)  # what the text engine does when called with gradients on
    weight = emb.weight
    assert not weight.is_inference()  # it does not say it is one...
    assert is_untrainable(weight)  # ...but has no version counter
    with pytest.raises(RuntimeError, match="version counter"):
        with torch.inference_mode():  # later txt2img fails on it
            emb(torch.tensor([1]))

    make_trainable([emb])
    assert not is_untrainable(emb.weight)
    with torch.inference_mode():
        assert emb(torch.tensor([1])).shape == (1, 4)


def test_text_model_trains_the_vector_only_after_make_trainable():
    model = _text_model_fp16()
    vec = torch.randn(2, 8, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"[Ii]nference tensors"):
        _loss(model, vec).backward()

    model = _text_model_fp16()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert untrainable_tensors([model])
    make_trainable([model])
    assert untrainable_tensors([model]) == []
    # the wrapper and the wrapped table still share one tensor
    assert model.token_embedding.weight is model.token_embedding.wrapped.weight
    loss = _loss(model, vec)
    loss.backward()
    assert vec.grad is not None and vec.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    # later inference (txt2img) runs on the normal tensors without converting them back
    with torch.inference_mode():
        _loss(model, vec.detach())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value.to(before[key].dtype), before[key], rtol=0, atol=0)


def test_shared_parameter_is_copied_once():
    with torch.inference_mode():
        inner = torch.nn.Embedding(100, 32)
        wrapper = TokenWrapper(inner)
    assert make_trainable([wrapper, inner]) == 1
    assert wrapper.weight is inner.weight


def test_make_trainable_refuses_inside_inference_mode():
    lin = _built_in_inference_mode(lambda: torch.nn.Linear(2, 2))
    with torch.inference_mode(), pytest.raises(RuntimeError, match="outside"):
        make_trainable([lin])


def test_normal_tensors_are_left_alone():
    lin = torch.nn.Linear(2, 2)
    weight = lin.weight
    assert make_trainable([lin]) == 0
    assert lin.weight is weight


class BasicTransformerBlock(torch.nn.Module):
    """The shape of Forge's block (backend/nn/unet.py): normalise, attend, add in place."""

    def __init__(self, dim=8):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(dim)
        self.attn1 = torch.nn.Linear(dim, dim)
        self.norm2 = torch.nn.LayerNorm(dim)
        self.attn2 = torch.nn.Linear(dim, dim)
        self.norm3 = torch.nn.LayerNorm(dim)
        self.ff = torch.nn.Linear(dim, dim)

    def forward(self, x, context):
        n = self.norm1(x)
        n = self.attn1(n)
        x += n
        n = self.norm2(x)
        n = self.attn2(n) * context.mean()
        x += n
        return self.ff(self.norm3(x))


class Unet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj_in = torch.nn.Linear(8, 8)
        self.blocks = torch.nn.ModuleList([BasicTransformerBlock(), BasicTransformerBlock()])

    def forward(self, x, context):
        h = self.proj_in(x)
        for block in self.blocks:
            h = block(h, context)
        return h


def test_inplace_add_breaks_backward_and_the_guard_fixes_it():
    torch.manual_seed(0)
    unet = Unet().requires_grad_(False)
    x = torch.randn(3, 8)
    context = torch.randn(4, requires_grad=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        unet(x, context).sum().backward()

    handles = guard_inplace(unet)
    assert len(handles) == 4  # norm1 and norm2 of each block
    out = unet(x, context).sum()
    out.backward()
    grad = context.grad.clone()
    remove_hooks(handles)

    # the gradient is the one of the same network written without in-place adds
    def reference(x, context):
        h = unet.proj_in(x)
        for b in unet.blocks:
            h = h + b.attn1(b.norm1(h))
            h = h + b.attn2(b.norm2(h)) * context.mean()
            h = b.ff(b.norm3(h))
        return h

    c2 = context.detach().clone().requires_grad_(True)
    ref = reference(x, c2).sum()
    ref.backward()
    torch.testing.assert_close(out.detach(), ref.detach())
    torch.testing.assert_close(grad, c2.grad)


def test_guard_is_inert_without_gradients_and_removable():
    unet = Unet().requires_grad_(False)
    norm1 = unet.blocks[0].norm1
    handles = guard_inplace(unet)
    seen = []
    norm1.register_forward_pre_hook(lambda m, a: seen.append(a[0]))  # runs after ours
    inputs = []
    unet.blocks[0].register_forward_pre_hook(lambda m, a: inputs.append(a[0]))
    x = torch.randn(3, 8)
    with torch.inference_mode():
        unet(x, torch.randn(4))
    assert seen[-1] is inputs[-1]  # no copy without gradients
    unet(x, torch.randn(4, requires_grad=True))
    assert seen[-1] is not inputs[-1]  # a copy with them
    remove_hooks(handles)
    assert len(norm1._forward_pre_hooks) == 1  # only the probe is left


def test_manual_cast_layers_keep_a_copy_of_every_weight_for_backward():
    """Why short-VRAM ("CPU swap") mode is refused: with weights cast per layer, autograd keeps
    every cast copy alive until the backward pass, so all layers end up held at once."""

    class CastLinear(torch.nn.Linear):
        def forward(self, x):  # Forge's manual cast: weight.to(x's device and dtype) per call
            return torch.nn.functional.linear(x, self.weight.to(x.dtype), self.bias.to(x.dtype))

    layers = torch.nn.Sequential(*[CastLinear(16, 16) for _ in range(5)]).half().requires_grad_(False)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    x = torch.randn(2, 16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = layers(x)
    kept_weights = [t for t in saved if t.shape == (16, 16)]
    assert len(kept_weights) == 5 and all(t.dtype == torch.float32 for t in kept_weights)
    out.sum().backward()
    assert x.grad is not None


def test_requires_grad_flags_come_back_on_the_copies():
    # Forge's weights are inference tensors with requires_grad True (nn.Parameter's default)
    model = _text_model_fp16()
    model.proj.bias.requires_grad_(False)  # a flag that differs, to see it kept too
    modules = [model]
    flags = requires_grad_flags(modules)
    originals = list(model.parameters())
    make_trainable(modules)
    # every parameter is a new object: flags kept per object (the old way) cannot reach them
    assert not any(p is o for p in model.parameters() for o in originals)
    for p in model.parameters():  # frozen for training
        p.requires_grad_(False)

    assert restore_requires_grad(modules, flags) == 3  # table (shared), position, proj weight
    assert requires_grad_flags(modules) == flags
    assert model.token_embedding.weight.requires_grad and not model.proj.bias.requires_grad


def test_inference_tensors_get_their_flag_back():
    # the VAE: inference tensors frozen for training (allowed) but not copied
    lin = _built_in_inference_mode(lambda: torch.nn.Linear(2, 2))
    flags = requires_grad_flags([lin])
    for p in lin.parameters():
        p.requires_grad_(False)
    assert restore_requires_grad([lin], flags) == 2
    assert lin.weight.requires_grad and lin.bias.requires_grad and lin.weight.is_inference()
