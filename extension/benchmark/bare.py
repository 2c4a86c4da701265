"""The bare cost of one optimizer step: the same micro-batches through text encoding and the
denoiser, forward and backward with gradients to the vectors only, and nothing else.

Everything that is not that work is done beforehand by :func:`prepare_batch`: the inputs are put
on the device and, on a :class:`~..backends.standalone.StandaloneBackend`, the prompts are
tokenised and chunked, so the timed part is the CLIP forward with the vectors injected, the
denoiser forward, the loss, and the backward pass. Other backends (the web UI's) encode from the
prompt text, so there tokenising is part of the bare cost too (:attr:`PreparedBatch.text_mode`).

The loss is computed here independently of :mod:`..training.loss`, so a test comparing the two
checks the trainer's objective as well as its speed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from ..backends.base import Backend, Conditioning, SizeConditioning, VectorSet

PRETOKENISED = "pre-tokenised"
FROM_TEXT = "from text"


@dataclass
class PreparedBatch:
    """One micro-batch with its randomness drawn and its inputs on the device."""

    prompts: list[str]
    latents: torch.Tensor  # (B, C, h, w) scaled latents, float32
    noise: torch.Tensor
    timesteps: torch.Tensor  # (B,) long
    loss_weight: torch.Tensor | None
    sizes: list[SizeConditioning] | None
    chunks: dict | None  # encoder key -> per-prompt chunk lists (pre-tokenised), or None
    time_ids: torch.Tensor | None  # SDXL micro-conditioning, made in advance

    @property
    def text_mode(self) -> str:
        return PRETOKENISED if self.chunks is not None else FROM_TEXT


def _encoder_specs(backend: Backend):
    """The standalone backend's encoder specs, or None for backends that only encode text."""
    specs = getattr(backend, "_specs", None)
    return specs() if callable(specs) else None


def prepare_batch(backend: Backend, batch, name: str, vectors: VectorSet) -> PreparedBatch:
    """Move a drawn micro-batch (a ``training.loss.MicroBatch``) to the device and tokenise it."""
    device = backend.device
    chunks = None
    time_ids = None
    specs = _encoder_specs(backend)
    if specs is not None:
        from ..backends.text_encoder import chunk_prompts, embedding_sizes, pad_chunks

        options = backend.text_options
        chunks = {
            key: chunk_prompts(
                spec, batch.prompts, embedding_sizes(key, spec.width, {name: vectors}), options
            )
            for key, spec in specs.items()
        }
        count = max(len(per_prompt[0]) for per_prompt in chunks.values())
        for key, spec in specs.items():
            pad_chunks(chunks[key], count, spec.special)
        if backend.family == "sdxl":
            time_ids = backend.time_ids(batch.sizes, len(batch.prompts))
    weight = batch.loss_weight.to(device) if batch.loss_weight is not None else None
    return PreparedBatch(
        prompts=list(batch.prompts),
        latents=batch.latents.to(device=device, dtype=torch.float32),
        noise=batch.noise.to(device=device, dtype=torch.float32),
        timesteps=batch.timesteps.to(device),
        loss_weight=weight,
        sizes=batch.sizes,
        chunks=chunks,
        time_ids=time_ids,
    )


def encode(backend: Backend, batch: PreparedBatch, name: str, vectors: VectorSet) -> Conditioning:
    """The text conditioning of ``batch`` with ``vectors`` injected for the embedding ``name``."""
    embeddings = {name: vectors}
    if batch.chunks is None:
        return backend.encode_text(batch.prompts, embeddings, sizes=batch.sizes)
    from ..backends.text_encoder import encode_prompts

    outputs: list[torch.Tensor] = []
    pooled = None
    for key, spec in _encoder_specs(backend).items():
        want_pooled = backend.family == "sdxl" and key == "clip_g"
        z, p = encode_prompts(spec, batch.chunks[key], embeddings, backend.text_options, pooled=want_pooled)
        outputs.append(z)
        if want_pooled:
            pooled = p
    cond = Conditioning(torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0])
    if backend.family == "sdxl":
        cond.pooled = pooled
        cond.extra["time_ids"] = batch.time_ids
    return cond


def bare_loss(
    backend: Backend, batch: PreparedBatch, name: str, vectors: VectorSet, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """The diffusion loss of one prepared micro-batch (0-d float32 on the device).

    ``alphas_cumprod`` is the noise schedule's, already on the device.
    """
    cond = encode(backend, batch, name, vectors)
    a = alphas_cumprod[batch.timesteps].view(-1, 1, 1, 1)
    signal, sigma = a.sqrt(), (1.0 - a).sqrt()
    x_t = signal * batch.latents + sigma * batch.noise
    if backend.noise_schedule.prediction_type == "v_prediction":
        target = signal * batch.noise - sigma * batch.latents
    else:
        target = batch.noise
    pred = backend.denoise(x_t.to(backend.dtype), batch.timesteps, cond)
    err = (pred.float() - target) ** 2
    if batch.loss_weight is not None:
        err = err * batch.loss_weight
    return err.mean()


def bare_step(
    backend: Backend,
    batches: Sequence[PreparedBatch],
    name: str,
    vectors: Mapping[str, torch.Tensor],
    alphas_cumprod: torch.Tensor,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> torch.Tensor:
    """Forward and backward every micro-batch (each loss divided by their count) into the
    vectors' ``.grad``; returns the mean loss as a detached device tensor (no host sync)."""
    total = None
    n = len(batches)
    for batch in batches:
        with autocast() if autocast is not None else contextlib.nullcontext():
            loss = bare_loss(backend, batch, name, vectors, alphas_cumprod) / n
        loss.backward()
        total = loss.detach() if total is None else total + loss.detach()
    assert total is not None, "bare_step needs at least one micro-batch"
    return total


