"""diffusion_loss against diffusers' own DDPM scheduler (noising, eps and v targets)."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from extension.backends.base import Conditioning, NoiseSchedule
from extension.backends.tiny import scheduler_config
from extension.training.loss import derive_seed, diffusion_loss, diffusion_target, noisy_latents


class FixedPrediction:
    """A backend stand-in whose denoiser returns a fixed tensor and records its input."""

    def __init__(self, schedule: NoiseSchedule, prediction: torch.Tensor):
        self.noise_schedule = schedule
        self.prediction = prediction
        self.dtype = torch.float32
        self.seen = None

    def denoise(self, x_t, timesteps, cond):
        self.seen = (x_t, timesteps)
        return self.prediction


@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_noising_and_target_match_diffusers(family):
    scheduler = DDPMScheduler.from_config(scheduler_config(family))
    schedule = NoiseSchedule(scheduler.alphas_cumprod.float(), scheduler.config.prediction_type)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 4, 8, 8, generator=g)
    noise = torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([0, 421, 999])
    x_t, sqrt_a, sqrt_1ma = noisy_latents(schedule.alphas_cumprod, x0, noise, t)
    torch.testing.assert_close(x_t, scheduler.add_noise(x0, noise, t))
    target = diffusion_target(schedule.prediction_type, x0, noise, sqrt_a, sqrt_1ma)
    expected = scheduler.get_velocity(x0, noise, t) if family == "sd2" else noise
    torch.testing.assert_close(target, expected)

    prediction = torch.randn(3, 4, 8, 8, generator=g)
    backend = FixedPrediction(schedule, prediction)
    loss = diffusion_loss(backend, x0, Conditioning(torch.zeros(3, 77, 8)), noise, t)
    assert loss.shape == () and loss.dtype == torch.float32
    torch.testing.assert_close(loss, ((prediction - expected) ** 2).mean())
    torch.testing.assert_close(backend.seen[0], x_t)


def test_loss_weight_weights_every_latent_cell():
    scheduler = DDPMScheduler.from_config(scheduler_config("sd1"))
    schedule = NoiseSchedule(scheduler.alphas_cumprod.float(), "epsilon")
    noise = torch.ones(1, 4, 2, 2)
    backend = FixedPrediction(schedule, torch.zeros(1, 4, 2, 2))
    cond = Conditioning(torch.zeros(1, 77, 8))
    t = torch.tensor([10])
    x0 = torch.zeros(1, 4, 2, 2)
    assert float(diffusion_loss(backend, x0, cond, noise, t)) == pytest.approx(1.0)
    weight = torch.tensor([[[[2.0, 0.0], [1.0, 1.0]]]])  # mean 1
    backend.prediction = torch.zeros(1, 4, 2, 2)
    noise = torch.tensor([[[[1.0, 5.0], [1.0, 1.0]]]]).expand(1, 4, 2, 2)
    # the masked cell (err 25) does not count; the doubled cell counts twice
    assert float(diffusion_loss(backend, x0, cond, noise, t, weight)) == pytest.approx((2 + 0 + 1 + 1) / 4)


def test_unknown_prediction_type():
    with pytest.raises(ValueError, match="unknown prediction type"):
        diffusion_target("sample", torch.zeros(1), torch.zeros(1), torch.ones(1), torch.zeros(1))


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(0, 1, 2, "noise") == derive_seed(0, 1, 2, "noise")
    seeds = {derive_seed(0, s, m, p) for s in range(20) for m in range(3) for p in ("noise", "timestep")}
    assert len(seeds) == 120 and all(0 <= s < 2**63 for s in seeds)
