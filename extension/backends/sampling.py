"""Preview sampling for the standalone backend: deterministic DDIM (eta 0) with classifier-free guidance.

The prompt takes the web UI's full syntax: extra-network tags are removed, ``AND`` parts are
combined composable-diffusion style (``uncond + Σ w·cfg·(cond_part − uncond)``, spec §4.4), and
every part and the negative prompt follow their prompt-editing schedule step by step (§3.7).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from ..prompt.extra_networks import strip_extra_networks
from .base import Conditioning, PreviewRequest, SizeConditioning, VectorSet


@dataclass
class ScheduledConditioning:
    """The conditioning of every text of one prompt's editing schedule, encoded as one batch."""

    end_steps: list[int]
    cond: Conditioning

    def at(self, call: int) -> Conditioning:
        """The entry used at denoiser call ``call`` (0-based): the first with ``call <= end_step``, else the first."""
        index = next((i for i, end in enumerate(self.end_steps) if call <= end), 0)
        return _row(self.cond, index)


def _row(cond: Conditioning, i: int) -> Conditioning:
    return Conditioning(
        cond.crossattn[i : i + 1],
        None if cond.pooled is None else cond.pooled[i : i + 1],
        {k: v[i : i + 1] for k, v in cond.extra.items()},
    )


def _pad_tokens(z: Tensor, length: int) -> Tensor:
    """Pad ``(1, T, C)`` to ``length`` tokens by repeating the last token vector (the web UI's rule)."""
    missing = length - z.shape[1]
    return z if missing <= 0 else torch.cat([z, z[:, -1:].expand(-1, missing, -1)], dim=1)


def stack_conditionings(conds: list[Conditioning]) -> Conditioning:
    """One batch from single-row conditionings of possibly different token lengths."""
    length = max(c.crossattn.shape[1] for c in conds)
    crossattn = torch.cat([_pad_tokens(c.crossattn, length) for c in conds])
    pooled = None if conds[0].pooled is None else torch.cat([c.pooled for c in conds])
    extra = {k: torch.cat([c.extra[k] for c in conds]) for k in conds[0].extra}
    return Conditioning(crossattn, pooled, extra)


def encode_schedule(
    backend, text: str, steps: int, embeddings: Mapping[str, VectorSet], size: SizeConditioning
) -> ScheduledConditioning:
    """Encode the prompt-editing schedule of ``text`` (all its texts in one batch, as the web UI does)."""
    from ..prompt.scheduling import schedule_prompt

    schedule = [(int(end), str(t)) for end, t in schedule_prompt(text, steps)]
    texts = [t for _, t in schedule]
    cond = backend.encode_text(texts, embeddings, [size] * len(texts))
    return ScheduledConditioning([end for end, _ in schedule], cond)


def prompt_parts(prompt: str) -> list[tuple[str, float]]:
    """The ``AND`` parts ``(text, weight)`` of a positive prompt after removing extra-network tags."""
    from ..prompt.composition import split_and

    return [(str(text), float(weight)) for text, weight in split_and(strip_extra_networks(prompt))]


def sample_preview(
    backend,
    request: PreviewRequest,
    embeddings: Mapping[str, VectorSet],
    *,
    progress: Callable[[int, int], None] | None = None,
):
    """Render ``request`` with ``backend`` (a :class:`.standalone.StandaloneBackend`); returns a ``PIL.Image``."""
    from diffusers import DDIMScheduler
    from PIL import Image

    factor = backend.vae_scale_factor
    if request.width <= 0 or request.height <= 0 or request.width % factor or request.height % factor:
        raise ValueError(
            f"preview size {request.width}x{request.height} must be positive multiples of {factor}; change it"
        )
    if request.steps < 1:
        raise ValueError(f"preview steps must be at least 1, got {request.steps}")
    seed = request.seed if request.seed >= 0 else random.randrange(2**32)
    vectors = {name: {k: v.detach() for k, v in vs.items()} for name, vs in embeddings.items()}
    size = SizeConditioning((request.height, request.width), (0, 0), (request.height, request.width))
    steps = request.steps

    with torch.no_grad():
        parts = prompt_parts(request.prompt)
        unique = list(dict.fromkeys(text for text, _ in parts))
        encoded = {text: encode_schedule(backend, text, steps, vectors, size) for text in unique}
        negative_text = strip_extra_networks(request.negative_prompt)
        negative = encode_schedule(backend, negative_text, steps, vectors, size)
        if backend.family == "sdxl" and negative_text == "":
            # the web UI feeds SDXL zeros for an empty negative prompt instead of encoding it
            negative.cond.crossattn = torch.zeros_like(negative.cond.crossattn)
            negative.cond.pooled = torch.zeros_like(negative.cond.pooled)

        scheduler = DDIMScheduler.from_config(backend.scheduler_config)
        scheduler.set_timesteps(steps, device=backend.device)
        generator = torch.Generator("cpu").manual_seed(seed)
        shape = (1, backend.latent_channels, request.height // factor, request.width // factor)
        x = torch.randn(shape, generator=generator, dtype=torch.float32).to(backend.device)
        x = x * scheduler.init_noise_sigma

        for call, t in enumerate(scheduler.timesteps):
            cond = stack_conditionings([negative.at(call)] + [encoded[text].at(call) for text, _ in parts])
            x_in = scheduler.scale_model_input(x, t).expand(len(parts) + 1, -1, -1, -1)
            out = backend.denoise(x_in, t, cond).float()
            uncond = out[:1]
            guided = uncond
            for i, (_, weight) in enumerate(parts):
                guided = guided + weight * request.cfg_scale * (out[i + 1 : i + 2] - uncond)
            x = scheduler.step(guided, t, x).prev_sample
            if progress is not None:
                progress(call + 1, steps)

        pixels = backend.decode_latents(x)[0]
    array = ((pixels + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")
