"""Train the tiny-shapes model from scratch on :mod:`.draw`'s pictures (seen combinations only).

Two phases, both seeded: the VAE learns to reconstruct pictures of shapes in any hue (pixel MSE
+ L1 + a small KL term), then its decoder alone goes on learning; the VAE is rescaled so that its latents times SD1's 0.18215 have unit spread; the UNet and the
text encoder then learn together to denoise those latents from varied captions (10 % empty, for
classifier-free guidance), with min-SNR loss weighting and an EMA of the weights. Held-out pairs
(:data:`.draw.HELD_OUT`) are in neither phase's pictures nor captions.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .draw import any_hue, caption, draw_shape, jittered, random_spec
from .model import LATENT_SCALE, SIDE

Log = Callable[[str], None]
CONTEXT_TOKENS = 77


@dataclass(frozen=True)
class Plan:
    """Everything that decides the result (with the seed and the thread count)."""

    seed: int = 0
    pictures: int = 6000  # the pool of drawn pictures both phases learn from
    vae_steps: int = 600  # the whole VAE
    vae_batch: int = 32
    vae_lr: float = 2e-3
    vae_kl: float = 1e-6
    decoder_steps: int = 1500  # then the decoder alone, on the frozen encoder's latents
    decoder_lr: float = 1e-3
    steps: int = 2800  # denoiser steps
    batch: int = 64
    lr: float = 1e-3
    warmup: int = 100
    uncond: float = 0.1  # share of empty captions
    ema: float = 0.998
    min_snr: float = 5.0


# -- data --------------------------------------------------------------------------------------


def draw_pool(count: int, seed: int, colours: str = "jittered") -> tuple[Tensor, list]:
    """``count`` seen-combination pictures as ``(N, 3, SIDE, SIDE)`` float in [-1, 1], and their specs.

    ``colours``: "jittered" (the named colour, hue within 8 degrees: the denoiser's pictures) or
    "any" (any hue but those of held-out pairs: the VAE's, so that colour is one continuous code).
    """
    rng = random.Random(seed)
    specs = [random_spec(rng) for _ in range(count)]
    fills = [jittered(s.colour, rng) if colours == "jittered" else any_hue(s.shape, rng) for s in specs]
    arrays = np.stack([np.asarray(draw_shape(spec, SIDE, fill)) for spec, fill in zip(specs, fills)])
    pixels = torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 127.5 - 1
    return pixels, specs


class Tokens:
    """CLIP BPE ids of captions as the web UI feeds SD1: start, up to 75 tokens, end-token padding to 77."""

    def __init__(self):
        from ..tokenizer import clip_tokenizer

        self._tok = clip_tokenizer()
        self._cache: dict[str, list[int]] = {}

    def __call__(self, texts: Sequence[str]) -> Tensor:
        rows = []
        for text in texts:
            if text not in self._cache:
                ids = self._tok.encode_batch([text])[0][: CONTEXT_TOKENS - 2]
                start, end = self._tok.special.start, self._tok.special.end
                self._cache[text] = [start, *ids] + [end] * (CONTEXT_TOKENS - 1 - len(ids))
            rows.append(self._cache[text])
        return torch.tensor(rows, dtype=torch.long)


def encode(text_encoder: nn.Module, ids: Tensor) -> Tensor:
    """SD1 conditioning: the final (layer-normed) hidden states."""
    return text_encoder(input_ids=ids).last_hidden_state


# -- VAE ---------------------------------------------------------------------------------------


def _reconstruction_loss(recon: Tensor, x: Tensor) -> Tensor:
    return (recon - x).pow(2).mean() + 0.5 * (recon - x).abs().mean()


def train_vae(vae: nn.Module, pixels: Tensor, plan: Plan, log: Log) -> None:
    """Reconstruction training (MSE + ``plan.vae_kl`` x KL), cosine learning rate."""
    gen = torch.Generator().manual_seed(plan.seed + 10)
    opt = torch.optim.AdamW(vae.parameters(), lr=plan.vae_lr, weight_decay=0.0)
    vae.train()
    start, total = time.monotonic(), 0.0
    for step in range(plan.vae_steps):
        _set_lr(opt, plan.vae_lr, step, plan.vae_steps, plan.warmup)
        x = pixels[torch.randint(len(pixels), (plan.vae_batch,), generator=gen)]
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        recon = vae.decode(z).sample
        loss = _reconstruction_loss(recon, x) + plan.vae_kl * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        total += loss.item()
        if (step + 1) % 100 == 0:
            log(f"vae step {step + 1}/{plan.vae_steps}: loss {total / 100:.5f} ({time.monotonic() - start:.0f} s)")
            total = 0.0
    vae.eval()


def finetune_decoder(vae: nn.Module, pixels: Tensor, posterior: tuple[Tensor, Tensor], plan: Plan, log: Log) -> None:
    """Train only the decoder side (``post_quant_conv`` and ``decoder``) on samples of the frozen
    encoder's ``posterior`` (mean, std): sharper pictures, the latent space the UNet learns unchanged."""
    gen = torch.Generator().manual_seed(plan.seed + 30)
    params = [*vae.post_quant_conv.parameters(), *vae.decoder.parameters()]
    opt = torch.optim.AdamW(params, lr=plan.decoder_lr, weight_decay=0.0)
    mean, std = posterior
    vae.decoder.train()
    start, total = time.monotonic(), 0.0
    for step in range(plan.decoder_steps):
        _set_lr(opt, plan.decoder_lr, step, plan.decoder_steps, plan.warmup)
        index = torch.randint(len(pixels), (plan.vae_batch,), generator=gen)
        z = mean[index] + std[index] * torch.randn(mean[index].shape, generator=gen)
        loss = _reconstruction_loss(vae.decode(z).sample, pixels[index])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        total += loss.item()
        if (step + 1) % 100 == 0:
            log(f"decoder step {step + 1}/{plan.decoder_steps}: loss {total / 100:.5f} ({time.monotonic() - start:.0f} s)")
            total = 0.0
    vae.eval()


@torch.no_grad()
def posterior_of(vae: nn.Module, pixels: Tensor, batch: int = 256) -> tuple[Tensor, Tensor]:
    """The mean and standard deviation of the posterior of each picture, unscaled."""
    parts = [vae.encode(pixels[i : i + batch]).latent_dist for i in range(0, len(pixels), batch)]
    return torch.cat([p.mean for p in parts]), torch.cat([p.std for p in parts])


@torch.no_grad()
def encode_pool(vae: nn.Module, pixels: Tensor, batch: int = 256) -> Tensor:
    """The posterior means of ``pixels``, unscaled."""
    return torch.cat([vae.encode(pixels[i : i + batch]).latent_dist.mean for i in range(0, len(pixels), batch)])


@torch.no_grad()
def calibrate_latents(vae: nn.Module, pixels: Tensor) -> float:
    """Rescale the VAE's latent space (exactly: encoder output up, decoder input down) so that its
    latents times :data:`LATENT_SCALE` have standard deviation 1; returns the factor applied."""
    factor = float(1.0 / (LATENT_SCALE * encode_pool(vae, pixels).std()))
    channels = vae.config.latent_channels
    quant, post = vae.quant_conv, vae.post_quant_conv
    quant.weight[:channels] *= factor
    quant.bias[:channels] *= factor
    quant.bias[channels:] += 2 * math.log(factor)  # log-variance of the scaled posterior
    post.weight /= factor
    return factor


# -- denoiser ----------------------------------------------------------------------------------


def train_denoiser(
    unet: nn.Module, text_encoder: nn.Module, latents: Tensor, specs: list, plan: Plan, log: Log
) -> tuple[nn.Module, nn.Module]:
    """Train ``unet`` and ``text_encoder`` on scaled ``latents`` with captions drawn from ``specs``;
    returns their EMA copies."""
    from diffusers import DDPMScheduler

    from ..backends.tiny import scheduler_config

    alphas = DDPMScheduler.from_config(scheduler_config("sd1")).alphas_cumprod.float()
    tokens, rng = Tokens(), random.Random(plan.seed + 20)
    gen = torch.Generator().manual_seed(plan.seed + 21)
    params = [*unet.parameters(), *text_encoder.parameters()]
    opt = torch.optim.AdamW(params, lr=plan.lr, betas=(0.9, 0.99), weight_decay=0.01)
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    ema_params = [*ema_unet.parameters(), *ema_text.parameters()]
    unet.train()
    text_encoder.train()
    start, total = time.monotonic(), 0.0
    for step in range(plan.steps):
        _set_lr(opt, plan.lr, step, plan.steps, plan.warmup)
        index = torch.randint(len(latents), (plan.batch,), generator=gen)
        texts = [caption(specs[i], rng) if rng.random() >= plan.uncond else "" for i in index.tolist()]
        x0 = latents[index]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, len(alphas), (plan.batch,), generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = unet(x_t, t, encoder_hidden_states=encode(text_encoder, tokens(texts))).sample
        snr = alphas[t] / (1 - alphas[t])
        weight = snr.clamp(max=plan.min_snr) / snr  # min-SNR-gamma for eps prediction
        loss = (weight * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(plan.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1 - decay)
        total += loss.item()
        if (step + 1) % 100 == 0:
            log(f"unet step {step + 1}/{plan.steps}: loss {total / 100:.5f} ({time.monotonic() - start:.0f} s)")
            total = 0.0
    unet.eval()
    text_encoder.eval()
    return ema_unet, ema_text


def _set_lr(opt: torch.optim.Optimizer, peak: float, step: int, steps: int, warmup: int) -> None:
    """Linear warm-up, then cosine decay to a tenth of ``peak``."""
    if step < warmup:
        lr = peak * (step + 1) / warmup
    else:
        progress = (step - warmup) / max(1, steps - warmup)
        lr = peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    for group in opt.param_groups:
        group["lr"] = lr


# -- sampling ----------------------------------------------------------------------------------


@torch.no_grad()
def sample(parts: dict[str, nn.Module], prompts: Sequence[str], seeds: Sequence[int], *,
           steps: int = 20, cfg: float = 5.0) -> list:  # fmt: skip
    """Batched DDIM (eta 0) with classifier-free guidance: one ``PIL.Image`` per (prompt, seed)."""
    from diffusers import DDIMScheduler
    from PIL import Image

    from ..backends.tiny import scheduler_config

    tokens = Tokens()
    cond = encode(parts["text_encoder"], tokens(prompts))
    uncond = encode(parts["text_encoder"], tokens([""])).expand_as(cond)
    scheduler = DDIMScheduler.from_config(scheduler_config("sd1"))
    scheduler.set_timesteps(steps)
    x = torch.cat([torch.randn((1, 4, SIDE // 4, SIDE // 4), generator=torch.Generator().manual_seed(s)) for s in seeds])
    context = torch.cat([uncond, cond])
    for t in scheduler.timesteps:
        out = parts["unet"](torch.cat([x, x]), t, encoder_hidden_states=context).sample
        guided = out[: len(x)] + cfg * (out[len(x) :] - out[: len(x)])
        x = scheduler.step(guided, t, x).prev_sample
    pixels = parts["vae"].decode(x / LATENT_SCALE).sample.clamp(-1, 1)
    arrays = ((pixels + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a, "RGB") for a in arrays]
