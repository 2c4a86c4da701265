"""The denoising loss of textual inversion (the same objective the web UI trains with)."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

import torch

from ..backends.base import Backend, Conditioning, SizeConditioning, VectorSet


@functools.lru_cache(maxsize=8)
def _on_device(alphas_cumprod: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The float32 schedule on ``device``, copied once rather than on every micro-batch."""
    return alphas_cumprod.to(device=device, dtype=torch.float32)


def noisy_latents(
    alphas_cumprod: torch.Tensor, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x_t = sqrt(a) x0 + sqrt(1-a) noise`` and the broadcastable ``sqrt(a)``, ``sqrt(1-a)``."""
    a = _on_device(alphas_cumprod, latents.device)[timesteps.to(latents.device)]
    sqrt_a = a.sqrt().view(-1, 1, 1, 1)
    sqrt_1ma = (1.0 - a).sqrt().view(-1, 1, 1, 1)
    x0 = latents.float()
    x_t = sqrt_a * x0 + sqrt_1ma * noise.float()
    return x_t, sqrt_a, sqrt_1ma


def diffusion_target(
    prediction_type: str, latents: torch.Tensor, noise: torch.Tensor, sqrt_a: torch.Tensor, sqrt_1ma: torch.Tensor
) -> torch.Tensor:
    """What the denoiser should predict: the noise (eps) or the velocity v."""
    if prediction_type == "epsilon":
        return noise.float()
    if prediction_type == "v_prediction":
        return sqrt_a * noise.float() - sqrt_1ma * latents.float()
    raise ValueError(f"unknown prediction type {prediction_type!r}; expected 'epsilon' or 'v_prediction'")


def diffusion_loss(
    backend: Backend,
    latents: torch.Tensor,
    cond: Conditioning,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    loss_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error of the denoiser's prediction at ``timesteps`` (a 0-d float32 tensor).

    ``latents`` are scaled latents ``(B, C, h, w)``; ``noise`` has the same shape; ``loss_weight``
    (``(B, 1, h, w)``, mean 1) weights every latent cell when given.
    """
    schedule = backend.noise_schedule
    x_t, sqrt_a, sqrt_1ma = noisy_latents(schedule.alphas_cumprod, latents, noise, timesteps)
    target = diffusion_target(schedule.prediction_type, latents, noise, sqrt_a, sqrt_1ma)
    pred = backend.denoise(x_t.to(backend.dtype), timesteps.to(latents.device), cond)
    err = (pred.float() - target) ** 2
    if loss_weight is not None:
        err = err * loss_weight.to(device=err.device, dtype=err.dtype)
    return err.mean()


# ---------------------------------------------------------------------------- micro-batches


@dataclass
class MicroBatch:
    """Everything one forward pass needs, with its randomness already drawn."""

    prompts: list[str]
    latents: torch.Tensor  # (B, C, h, w) scaled latents
    noise: torch.Tensor  # same shape
    timesteps: torch.Tensor  # (B,) long
    loss_weight: torch.Tensor | None = None  # (B, 1, h, w)
    sizes: list[SizeConditioning] | None = None

    def __len__(self) -> int:
        return len(self.prompts)


def micro_batch_loss(
    backend: Backend, name: str, vectors: VectorSet, batch: MicroBatch, device: torch.device | None = None
) -> torch.Tensor:
    """The diffusion loss of one micro-batch with ``vectors`` injected for the embedding ``name``."""
    device = device or backend.device
    cond = backend.encode_text(batch.prompts, {name: vectors}, sizes=batch.sizes)
    def move(t: torch.Tensor) -> torch.Tensor:
        return t.to(device, non_blocking=True)  # asynchronous from pinned memory on CUDA

    weight = move(batch.loss_weight) if batch.loss_weight is not None else None
    return diffusion_loss(backend, move(batch.latents), cond, move(batch.noise), move(batch.timesteps), weight)


# ---------------------------------------------------------------------------- validation


@dataclass
class ValidationSet:
    """Fixed micro-batches (prompts, latents, noise and timesteps drawn once) for a held-out loss
    that is comparable from step to step."""

    batches: list[MicroBatch] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.batches)

    @classmethod
    def build(
        cls,
        dataset,
        backend: Backend,
        *,
        n_images: int,
        timesteps_per_image: int,
        batch_size: int,
        seed: int,
    ) -> ValidationSet:
        """``n_images`` images of ``dataset`` (a ``TrainingDataset``), each at
        ``timesteps_per_image`` evenly spread timesteps, with noise from a fixed seed."""
        indices = list(range(min(n_images, len(dataset))))
        t_count = backend.noise_schedule.num_timesteps
        k = max(1, timesteps_per_image)
        spread = [min(t_count - 1, int((j + 0.5) * t_count / k)) for j in range(k)]
        examples = [(i, t) for i in indices for t in spread]
        gen = torch.Generator().manual_seed(derive_seed(seed, "validation"))
        batches = []
        for start in range(0, len(examples), batch_size):
            part = examples[start : start + batch_size]
            idx = [i for i, _ in part]
            prompts = dataset.prompts(idx, gen)
            latents = dataset.latents(idx, gen).float()
            noise = torch.randn(latents.shape, generator=gen)
            weights = dataset.loss_weights(idx)
            sizes = dataset.sizes(idx) if backend.family == "sdxl" else None
            timesteps = torch.tensor([t for _, t in part], dtype=torch.long)
            batches.append(MicroBatch(prompts, latents, noise, timesteps, weights, sizes))
        return cls(batches)

    def loss(self, backend: Backend, name: str, vectors: VectorSet, autocast=None) -> float:
        """The mean loss over the set (no gradients)."""
        from contextlib import nullcontext

        total = torch.zeros((), dtype=torch.float32, device=backend.device)
        count = 0
        with torch.no_grad():
            for batch in self.batches:
                with autocast() if autocast is not None else nullcontext():
                    loss = micro_batch_loss(backend, name, vectors, batch)
                total += loss.float() * len(batch)
                count += len(batch)
        return float(total / max(count, 1))


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (stable across runs and platforms)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
