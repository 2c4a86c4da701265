"""Emphasis modes and CLIP skip (spec §7) against hand-computed tensors."""

from __future__ import annotations

import pytest
import torch

from extension.weighting import apply_emphasis, multipliers_tensor, select_hidden_layer

# z: (B=1, T=2, C=2); mean = (1 + 2 + 3 + 6) / 4 = 3
Z = torch.tensor([[[1.0, 2.0], [3.0, 6.0]]], dtype=torch.float64)
M = torch.tensor([[2.0, 1.0]], dtype=torch.float64)


def test_original_rescales_to_the_old_mean():
    out = apply_emphasis(Z, M, "Original")
    # z*m = [[2,4],[3,6]], mean 15/4; times 3 / (15/4) = 0.8
    expected = torch.tensor([[[1.6, 3.2], [2.4, 4.8]]], dtype=torch.float64)
    torch.testing.assert_close(out, expected)
    assert out.mean().item() == pytest.approx(Z.mean().item())


def test_no_norm_only_multiplies():
    out = apply_emphasis(Z, M, "No norm")
    torch.testing.assert_close(out, torch.tensor([[[2.0, 4.0], [3.0, 6.0]]], dtype=torch.float64))


@pytest.mark.parametrize("mode", ["Ignore", "None"])
def test_ignore_and_none_leave_z(mode):
    assert torch.equal(apply_emphasis(Z, M, mode), Z)


def test_unknown_mode_falls_back_to_original():
    torch.testing.assert_close(apply_emphasis(Z, M, "no such mode"), apply_emphasis(Z, M, "Original"))


def test_negative_weight():
    m = torch.tensor([[-1.0, 1.0]], dtype=torch.float64)
    # z*m = [[-1,-2],[3,6]], mean 6/4 = 1.5; factor 3 / 1.5 = 2
    expected = torch.tensor([[[-2.0, -4.0], [6.0, 12.0]]], dtype=torch.float64)
    torch.testing.assert_close(apply_emphasis(Z, m, "Original"), expected)
    torch.testing.assert_close(apply_emphasis(Z, m, "No norm"), expected / 2)


def test_uniform_weights_are_cancelled_by_original():
    m = torch.full((1, 2), 1.5, dtype=torch.float64)
    torch.testing.assert_close(apply_emphasis(Z, m, "Original"), Z)
    torch.testing.assert_close(apply_emphasis(Z, m, "No norm"), Z * 1.5)


def test_all_ones_on_a_zero_mean_encoder_stay_finite():
    # an untrained final LayerNorm without bias gives mean(z) == 0 exactly: "Original" was 0/0 = NaN
    z = torch.tensor([[[1.0, -1.0], [2.5, -2.5]]])
    assert z.mean().item() == 0.0
    out = apply_emphasis(z, torch.ones(1, 2), "Original")
    assert torch.equal(out, z)
    weighted = apply_emphasis(z, torch.tensor([[1.0, 1.5]]), "Original")  # a real weight: the web UI's 0/0
    assert not torch.isfinite(weighted).all()


def test_all_ones_are_bit_identical_to_the_rescaled_result():
    z = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(4))
    ones = torch.ones(2, 5)
    assert torch.equal(apply_emphasis(z, ones, "Original"), z * ones.unsqueeze(-1) * (z.mean() / z.mean()))


def test_mean_is_over_the_whole_batch():
    z = torch.cat([Z, Z * 0 + 1.0])  # second row all ones; whole mean = (12 + 4) / 8 = 2
    m = torch.tensor([[2.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    out = apply_emphasis(z, m, "Original")
    # z*m sum = 15 + 4 = 19, mean 19/8; factor 2 / (19/8) = 16/19
    torch.testing.assert_close(out[1], torch.full((2, 2), 16 / 19, dtype=torch.float64))


def test_dtype_preserved_and_input_untouched():
    z = Z.to(torch.float16)
    before = z.clone()
    out = apply_emphasis(z, M.float(), "Original")
    assert out.dtype == torch.float16
    assert torch.equal(z, before)
    torch.testing.assert_close(out.double(), apply_emphasis(Z, M), atol=1e-2, rtol=1e-3)


def test_autograd_flows_through():
    z = Z.clone().requires_grad_(True)
    apply_emphasis(z, M, "Original").sum().backward()
    assert z.grad is not None and z.grad.shape == z.shape
    z2 = Z.clone().requires_grad_(True)
    apply_emphasis(z2, M, "No norm").sum().backward()
    torch.testing.assert_close(z2.grad, torch.tensor([[[2.0, 2.0], [1.0, 1.0]]], dtype=torch.float64))


def test_shape_mismatch_is_explained():
    with pytest.raises(ValueError, match=r"z.shape\[:-1\]"):
        apply_emphasis(Z, torch.ones(1, 3))


def test_multipliers_tensor():
    t = multipliers_tensor([[1, 1.1], [0.5, 2]])
    assert t.dtype == torch.float32 and t.shape == (2, 2)


HIDDEN = [torch.full((1, 2, 2), float(i)) for i in range(13)]  # embeddings + 12 layers


def _ln(x):
    return x + 100


@pytest.mark.parametrize(("skip", "layer"), [(1, 12), (2, 11), (12, 1)])
def test_clip_skip_picks_nth_from_end(skip, layer):
    assert torch.equal(select_hidden_layer(HIDDEN, skip, None), HIDDEN[layer])
    assert torch.equal(select_hidden_layer(HIDDEN, skip, _ln), HIDDEN[layer] + 100)


@pytest.mark.parametrize("skip", [0, 13, -1])
def test_clip_skip_out_of_range(skip):
    with pytest.raises(ValueError, match="between 1 and 12"):
        select_hidden_layer(HIDDEN, skip, None)


def test_clip_skip_with_a_real_layer_norm():
    ln = torch.nn.LayerNorm(2)
    out = select_hidden_layer([torch.zeros(1, 1, 2), torch.tensor([[[1.0, 3.0]]])], 1, ln)
    torch.testing.assert_close(out, torch.tensor([[[-1.0, 1.0]]]), atol=1e-3, rtol=0)
