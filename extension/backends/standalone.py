"""The standalone backend: SD1 / SD2 / SDXL on diffusers + transformers modules.

Implements :class:`.base.Backend`. Text encoding follows the web UI (see :mod:`.text_encoder`);
the denoiser is the diffusers UNet; previews come from :mod:`.sampling`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from .base import Conditioning, LatentDistribution, NoiseSchedule, PreviewRequest, SizeConditioning, VectorSet
from .text_encoder import (
    ChunkCache,
    EncoderSpec,
    TextOptions,
    chunk_prompts,
    embedding_sizes,
    encode_prompts,
    pad_chunks,
)

FAMILIES = ("sd1", "sd2", "sdxl")
ENCODER_KEYS = {"sd1": ("clip_l",), "sd2": ("clip_g",), "sdxl": ("clip_l", "clip_g")}
VIT_H_TRUNCATED_LAYERS = 23  # diffusers' SD2 text encoder already drops OpenCLIP ViT-H's last block


class StandaloneBackend:
    """A loaded model family on diffusers/transformers modules, seen by the trainer."""

    fp32_hint = "load the model in float32 (python -m extension ... --precision fp32), or choose fp16 / bf16"
    vae_nan_hint = "the VAE overflowed; load the model with --precision fp32"

    def __init__(
        self,
        family: str,
        *,
        unet: nn.Module,
        vae: nn.Module,
        text_encoders: Mapping[str, nn.Module],
        scheduler_config: Mapping[str, Any],
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        checkpoint_name: str | None = None,
        checkpoint_hash: str | None = None,
        text_options: TextOptions | None = None,
    ):
        if family not in FAMILIES:
            raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
        missing = [k for k in ENCODER_KEYS[family] if k not in text_encoders]
        if missing:
            raise ValueError(f"a {family} model needs text encoders {ENCODER_KEYS[family]}, missing {missing}")
        self.family = family
        self.device = torch.device(device)
        self.dtype = dtype
        self.unet = unet
        self.vae = vae
        self.text_encoders = {k: text_encoders[k] for k in ENCODER_KEYS[family]}
        self.scheduler_config = dict(scheduler_config)
        self.checkpoint_name = checkpoint_name
        self.checkpoint_hash = checkpoint_hash
        self.text_options = text_options or TextOptions()
        self._chunk_cache = ChunkCache()

        # fp16 VAEs that overflow (SDXL's) are kept in float32, as diffusers' force_upcast says
        upcast = dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
        self.vae_dtype = torch.float32 if upcast else dtype
        for module in (unet, *self.text_encoders.values()):
            _place(module, self.device, dtype)
        _place(vae, self.device, self.vae_dtype)

        self.latent_scale = float(vae.config.scaling_factor)
        self.latent_channels = int(vae.config.latent_channels)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.noise_schedule = _noise_schedule(self.scheduler_config)
        from ..tokenizer import clip_tokenizer, open_clip_tokenizer

        self._tokenizers = {
            key: clip_tokenizer() if key == "clip_l" else open_clip_tokenizer() for key in self.text_encoders
        }

    @classmethod
    def from_parts(
        cls, family: str, parts: Mapping[str, Any], *, prediction_type: str | None = None, **kwargs: Any
    ) -> StandaloneBackend:
        """A backend over built ``parts`` (``unet``, ``vae``, ``text_encoders``, ``scheduler_config``),
        with ``prediction_type`` overriding the scheduler's; ``kwargs`` go to the constructor."""
        config = dict(parts["scheduler_config"])
        if prediction_type:
            config["prediction_type"] = prediction_type
        return cls(
            family, unet=parts["unet"], vae=parts["vae"], text_encoders=parts["text_encoders"],
            scheduler_config=config, **kwargs,
        )  # fmt: skip

    # -- description ------------------------------------------------------------------------------

    @property
    def encoder_widths(self) -> dict[str, int]:
        return {key: spec.width for key, spec in self._specs().items()}

    @property
    def default_size(self) -> int:
        """The native image side in pixels (512 for SD1, 1024 for SDXL, 64 for the tiny models)."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    def __repr__(self) -> str:
        return (
            f"StandaloneBackend({self.family}, {self.checkpoint_name or 'unnamed'}, "
            f"{self.noise_schedule.prediction_type}, {self.device}, {self.dtype})"
        )

    def _specs(self) -> dict[str, EncoderSpec]:
        opts = self.text_options
        specs = {}
        for key, model in self.text_encoders.items():
            tok = self._tokenizers[key]
            if self.family == "sd1":
                skip, norm = opts.clip_skip, True
            elif self.family == "sd2":
                # the web UI's SD2 config: penultimate block, then ln_final; CLIP skip ignored
                layers = int(model.config.num_hidden_layers)
                skip, norm = (1 if layers == VIT_H_TRUNCATED_LAYERS else 2), True
            elif key == "clip_l":
                skip, norm = (opts.clip_skip if opts.sdxl_clip_l_skip else 2), False
            else:
                skip, norm = 2, False
            specs[key] = EncoderSpec(key, model, tok.encode_batch, tok.special, skip, norm)
        return specs

    def tokenizers(self) -> dict[str, tuple[Any, object]]:
        """Per encoder key: the tokenize callable and its ``SpecialTokens``."""
        return {key: (tok.encode_batch, tok.special) for key, tok in self._tokenizers.items()}

    def token_embeddings(self, text: str) -> dict[str, Tensor]:
        """The input token embeddings of ``text`` (no start/end), per encoder: ``(n_tokens, width)``, float32 on the CPU."""
        result = {}
        for key, spec in self._specs().items():
            ids = spec.tokenize([text])[0]
            table = spec.token_embedding.weight
            result[key] = table.detach()[torch.tensor(ids, dtype=torch.long, device=table.device)].float().cpu()
        return result

    # -- text ------------------------------------------------------------------------------------

    def encode_text(
        self,
        prompts: Sequence[str],
        embeddings: Mapping[str, VectorSet],
        sizes: Sequence[SizeConditioning] | None = None,
    ) -> Conditioning:
        """Encode prompts with ``embeddings`` (name -> vectors per encoder) injected where their names occur."""
        prompts = list(prompts)
        if not prompts:
            raise ValueError("encode_text needs at least one prompt")
        specs = self._specs()
        chunked = {
            key: chunk_prompts(
                spec, prompts, embedding_sizes(key, spec.width, embeddings), self.text_options, self._chunk_cache
            )
            for key, spec in specs.items()
        }
        # SDXL: the two tokenizers can disagree (open_clip unescapes HTML), so align the chunk counts
        count = max(len(per_prompt[0]) for per_prompt in chunked.values())
        for key, spec in specs.items():
            pad_chunks(chunked[key], count, spec.special)

        outputs, pooled = [], None
        for key, spec in specs.items():
            want_pooled = self.family == "sdxl" and key == "clip_g"
            z, p = encode_prompts(spec, chunked[key], embeddings, self.text_options, pooled=want_pooled)
            outputs.append(z)
            pooled = p if want_pooled else pooled
        cond = Conditioning(torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0])
        if self.family == "sdxl":
            cond.pooled = pooled
            cond.extra["time_ids"] = self.time_ids(sizes, len(prompts))
        return cond

    def time_ids(self, sizes: Sequence[SizeConditioning] | None, batch: int) -> Tensor:
        """SDXL micro-conditioning ``(B, 6)``: original (h, w), crop (top, left), target (h, w)."""
        if sizes is None:
            side = self.default_size
            sizes = [SizeConditioning((side, side), (0, 0), (side, side))] * batch
        if len(sizes) != batch:
            raise ValueError(f"got {len(sizes)} size conditionings for {batch} prompts; give one per prompt")
        rows = [[*s.original_size, *s.crop_top_left, *s.target_size] for s in sizes]
        return torch.tensor(rows, dtype=torch.float32, device=self.device)

    # -- images and the denoiser -------------------------------------------------------------------

    def encode_images(self, pixels: Tensor) -> LatentDistribution:
        """Encode ``(B, 3, H, W)`` images in ``[-1, 1]`` into the VAE posterior (unscaled, float32)."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(pixels.shape)}")
        f = self.vae_scale_factor
        if pixels.shape[2] % f or pixels.shape[3] % f:
            raise ValueError(f"image size {tuple(pixels.shape[2:])} is not a multiple of {f}; resize or crop it")
        with torch.no_grad():
            dist = self.vae.encode(pixels.to(self.device, self.vae_dtype)).latent_dist
        return LatentDistribution(dist.mean.float(), dist.std.float())

    def decode_latents(self, latents: Tensor) -> Tensor:
        """Decode *scaled* latents to ``(B, 3, H, W)`` pixels in ``[-1, 1]`` (float32)."""
        with torch.no_grad():
            x = latents.to(self.device, self.vae_dtype) / self.latent_scale
            return self.vae.decode(x).sample.float().clamp(-1, 1)

    def denoise(self, x_t: Tensor, timesteps: Tensor, cond: Conditioning) -> Tensor:
        """The UNet's raw prediction (eps or v), in ``x_t``'s dtype."""
        if cond.crossattn.shape[0] != x_t.shape[0]:
            raise ValueError(f"conditioning batch {cond.crossattn.shape[0]} differs from latent batch {x_t.shape[0]}")
        t = torch.as_tensor(timesteps, device=self.device)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        kwargs = {}
        if self.family == "sdxl":
            if cond.pooled is None or "time_ids" not in cond.extra:
                raise ValueError("SDXL conditioning needs the pooled text embedding and time_ids; use encode_text")
            kwargs["added_cond_kwargs"] = {
                "text_embeds": cond.pooled.to(self.device, self.dtype),
                "time_ids": cond.extra["time_ids"].to(self.device, self.dtype),
            }
        out = self.unet(
            x_t.to(self.device, self.dtype),
            t,
            encoder_hidden_states=cond.crossattn.to(self.device, self.dtype),
            return_dict=False,
            **kwargs,
        )[0]
        return out.to(x_t.dtype)

    def sample_preview(self, request: PreviewRequest, embeddings: Mapping[str, VectorSet]):
        """Render one preview image (a ``PIL.Image``) with the given embeddings active."""
        from .sampling import sample_preview

        return sample_preview(self, request, embeddings)

    # -- parameters --------------------------------------------------------------------------------

    def modules(self) -> dict[str, nn.Module]:
        """The frozen model's modules by role (``unet``, ``vae``, ``text_encoder_<key>``)."""
        mods: dict[str, nn.Module] = {"unet": self.unet, "vae": self.vae}
        mods.update({f"text_encoder_{k}": m for k, m in self.text_encoders.items()})
        return mods

    def parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter of the frozen model."""
        return itertools.chain.from_iterable(m.parameters() for m in self.modules().values())

    @contextmanager
    def frozen(self):
        """Every model parameter has ``requires_grad=False`` inside; the previous flags come back after."""
        params = list(self.parameters())
        flags = [p.requires_grad for p in params]
        try:
            for p in params:
                p.requires_grad_(False)
            yield
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)

    @contextmanager
    def text_settings(self, emphasis: str, clip_skip: int) -> Iterator[None]:
        """Text encoding uses ``emphasis`` and ``clip_skip`` inside; the previous options come back after."""
        old = self.text_options
        self.text_options = dataclasses.replace(old, emphasis=emphasis, clip_skip=clip_skip)
        try:
            yield
        finally:
            self.text_options = old

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Turn activation checkpointing of the UNet on or off.

        diffusers 0.27-0.31 checkpoint only modules in training mode, so the UNet is put in training
        mode while checkpointing is on (the SD UNet has no dropout and no batch statistics, so the mode
        changes nothing else) and back in eval mode after.
        """
        if enabled:
            self.unet.enable_gradient_checkpointing()
            self.unet.train()
        else:
            self.unet.disable_gradient_checkpointing()
            self.unet.eval()


def _place(module: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move to ``device``; cast only floating tensors that differ (diffusers warns on no-op casts)."""
    module.to(device)
    if any(p.dtype != dtype for p in module.parameters() if p.is_floating_point()):
        module.to(dtype)
    module.eval()


def _noise_schedule(config: Mapping[str, Any]) -> NoiseSchedule:
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(dict(config))
    prediction = scheduler.config.prediction_type
    if prediction not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction type {prediction!r} is not supported; TI Trainer handles epsilon and v_prediction")
    return NoiseSchedule(scheduler.alphas_cumprod.detach().float().cpu().clone(), prediction)


__all__ = ["PreviewRequest", "StandaloneBackend"]
