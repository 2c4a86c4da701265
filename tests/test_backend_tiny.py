"""The tiny seeded models and the non-text parts of the standalone backend."""

from __future__ import annotations

import pytest
import torch

from extension.backends import Backend, LatentDistribution, StandaloneBackend
from extension.backends.tiny import build_tiny_backend


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny matrices: extra threads only add overhead (a lot of it on a busy 2-core machine)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



def test_families_build_and_describe_themselves(backends):
    expected = {
        "sd1": ({"clip_l": 32}, "epsilon", 0.18215),
        "sd2": ({"clip_g": 48}, "v_prediction", 0.18215),
        "sdxl": ({"clip_l": 32, "clip_g": 48}, "epsilon", 0.13025),
    }
    for family, backend in backends.items():
        widths, prediction, scale = expected[family]
        assert isinstance(backend, StandaloneBackend) and isinstance(backend, Backend)
        assert backend.family == family
        assert backend.encoder_widths == widths
        assert backend.noise_schedule.prediction_type == prediction
        assert backend.latent_scale == scale
        assert (backend.latent_channels, backend.vae_scale_factor, backend.default_size) == (4, 8, 64)
        assert backend.device == torch.device("cpu") and backend.dtype == torch.float32
        assert backend.checkpoint_name == f"tiny-{family}" and len(backend.checkpoint_hash) == 10
        assert all(len(tokenize(["a cat"])[0]) == 2 for tokenize, _ in backend.tokenizers().values())


def test_noise_schedule_is_scaled_linear_ddpm(backends):
    schedule = backends["sd1"].noise_schedule
    assert schedule.num_timesteps == 1000 and schedule.alphas_cumprod.dtype == torch.float32
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    expected = torch.cumprod(1 - betas, 0).float()
    torch.testing.assert_close(schedule.alphas_cumprod, expected, rtol=1e-5, atol=1e-7)


def test_seeded_and_deterministic():
    a, b, c = build_tiny_backend("sdxl", seed=0), build_tiny_backend("sdxl", seed=0), build_tiny_backend("sdxl", seed=1)
    pa, pb, pc = list(a.parameters()), list(b.parameters()), list(c.parameters())
    assert len(pa) == len(pb) and all(torch.equal(x, y) for x, y in zip(pa, pb))
    assert not all(torch.equal(x, y) for x, y in zip(pa, pc))
    assert a.checkpoint_hash == b.checkpoint_hash != c.checkpoint_hash


def test_building_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_backend("sd1", seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_unknown_family():
    with pytest.raises(ValueError, match="unknown model family 'sd3'"):
        build_tiny_backend("sd3")


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_denoise_and_images(backends, family):
    backend = backends[family]
    cond = backend.encode_text(["a cat", "a dog"], {})
    x = torch.randn(2, 4, 8, 8)
    out = backend.denoise(x, torch.tensor([0, 999]), cond)
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.equal(backend.denoise(x, torch.tensor(500), cond), backend.denoise(x, torch.tensor([500, 500]), cond))

    pixels = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    dist = backend.encode_images(pixels)
    assert isinstance(dist, LatentDistribution)
    assert dist.mean.shape == dist.std.shape == (2, 4, 8, 6) and (dist.std > 0).all()
    assert not dist.mean.requires_grad
    gen = torch.Generator().manual_seed(0)
    sample = dist.sample(backend.latent_scale, gen)
    assert sample.shape == (2, 4, 8, 6)
    decoded = backend.decode_latents(dist.mode(backend.latent_scale))
    assert decoded.shape == (2, 3, 64, 48) and decoded.min() >= -1 and decoded.max() <= 1


def test_bad_inputs(backends):
    backend = backends["sd1"]
    with pytest.raises(ValueError, match="not a multiple of 8"):
        backend.encode_images(torch.zeros(1, 3, 60, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        backend.encode_images(torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match="at least one prompt"):
        backend.encode_text([], {})
    cond = backend.encode_text(["a"], {})
    with pytest.raises(ValueError, match="batch"):
        backend.denoise(torch.zeros(2, 4, 8, 8), torch.tensor([1, 2]), cond)
    xl = backends["sdxl"]
    plain = xl.encode_text(["a"], {})
    plain.pooled = None
    with pytest.raises(ValueError, match="pooled"):
        xl.denoise(torch.zeros(1, 4, 8, 8), torch.tensor([1]), plain)


def test_sdxl_size_conditioning_changes_the_prediction(backends):
    from extension.backends import SizeConditioning

    xl = backends["sdxl"]
    x = torch.randn(1, 4, 8, 8)
    small = xl.encode_text(["a"], {}, [SizeConditioning((64, 64), (0, 0), (64, 64))])
    large = xl.encode_text(["a"], {}, [SizeConditioning((1024, 768), (32, 0), (64, 64))])
    assert not torch.allclose(xl.denoise(x, torch.tensor([400]), small), xl.denoise(x, torch.tensor([400]), large))


def test_gradient_checkpointing_gives_the_same_gradient(backends):
    backend = backends["sd1"]
    x = torch.randn(1, 4, 8, 8)
    grads = []
    for enabled in (False, True):
        backend.set_gradient_checkpointing(enabled)
        assert backend.unet.is_gradient_checkpointing == enabled
        vec = torch.randn(2, 32, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        with backend.frozen():
            cond = backend.encode_text(["a photo of emb"], {"emb": {"clip_l": vec}})
            backend.denoise(x, torch.tensor([300]), cond).square().mean().backward()
            assert all(p.grad is None for p in backend.parameters())
        grads.append(vec.grad)
    backend.set_gradient_checkpointing(False)
    torch.testing.assert_close(grads[0], grads[1])


def test_parameters_cover_every_module(backends):
    backend = backends["sdxl"]
    count = sum(1 for _ in backend.parameters())
    expected = sum(len(list(m.parameters())) for m in (backend.unet, backend.vae, *backend.text_encoders.values()))
    assert count == expected and set(backend.modules()) == {"unet", "vae", "text_encoder_clip_l", "text_encoder_clip_g"}
