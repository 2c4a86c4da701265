"""Fast attention keeps the gradients of plain attention.

The web UI's own trainer turns its attention optimizations off because one once broke training.
TI Trainer keeps torch's scaled_dot_product_attention (the web UI's "sdp" / "sdp-no-mem") on
while training: this proves that its gradient with respect to an injected input (the text context
carrying our vectors, and the queries) equals that of plain softmax attention.
"""

import math

import pytest
import torch
import torch.nn.functional as F


def plain_attention(q, k, v):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return scores.softmax(dim=-1) @ v


def cross_attention(x, context, to_q, to_k, to_v, heads, attend):
    """One cross-attention layer as latent diffusion's: context -> keys/values, split into heads."""
    b, n, _ = x.shape
    q, k, v = to_q(x), to_k(context), to_v(context)

    def split(t):
        return t.reshape(b, t.shape[1], heads, -1).transpose(1, 2)

    out = attend(split(q), split(k), split(v))
    return out.transpose(1, 2).reshape(b, n, -1)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("seq", [(64, 77), (16, 154)])
def test_sdp_gradient_matches_plain_attention(dtype, tol, seq):
    torch.manual_seed(0)
    n_query, n_ctx = seq
    width, ctx_width, heads = 64, 48, 4
    to_q = torch.nn.Linear(width, width, bias=False).to(dtype)
    to_k = torch.nn.Linear(ctx_width, width, bias=False).to(dtype)
    to_v = torch.nn.Linear(ctx_width, width, bias=False).to(dtype)
    for p in (*to_q.parameters(), *to_k.parameters(), *to_v.parameters()):
        p.requires_grad_(False)  # frozen model, as during TI training
    x0 = torch.randn(2, n_query, width, dtype=dtype)
    ctx0 = torch.randn(2, n_ctx, ctx_width, dtype=dtype)
    injected = torch.randn(3, ctx_width, dtype=dtype)
    target = torch.randn(2, n_query, width, dtype=dtype)

    grads = {}
    for name, attend in (("plain", plain_attention), ("sdp", F.scaled_dot_product_attention)):
        vec = injected.clone().requires_grad_(True)
        x = x0.clone().requires_grad_(True)
        # the vectors replace context rows 5..7, as embedding injection does
        ctx = torch.cat([ctx0[:, :5], vec.expand(2, -1, -1), ctx0[:, 8:]], dim=1)
        out = cross_attention(x, ctx, to_q, to_k, to_v, heads, attend)
        loss = ((out - target) ** 2).mean()
        loss.backward()
        grads[name] = (loss.detach(), vec.grad, x.grad)

    (lp, gvp, gxp), (ls, gvs, gxs) = grads["plain"], grads["sdp"]
    assert gvp.abs().sum() > 0
    assert torch.allclose(lp, ls, rtol=tol, atol=tol)
    assert torch.allclose(gvs, gvp, rtol=tol * 10, atol=tol)
    assert torch.allclose(gxs, gxp, rtol=tol * 10, atol=tol)


def test_sdp_gradient_differs_when_inputs_differ():
    """Sanity check of the comparison: a different injected vector gives a different gradient."""
    torch.manual_seed(1)
    q = torch.randn(1, 2, 8, 16)
    ctx = torch.randn(1, 2, 10, 16)
    g = []
    for scale in (1.0, 2.0):
        k = (ctx * scale).requires_grad_(True)
        F.scaled_dot_product_attention(q, k, ctx).sum().backward()
        g.append(k.grad)
    assert not torch.allclose(g[0], g[1])
