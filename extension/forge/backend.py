"""The Forge backend: :class:`~..backends.base.Backend` over Forge's own model engine.

Training runs on the engine's ``forge_objects_original`` (the checkpoint's weights, no LoRA of the
last generation), text goes through the engine's own ``ClassicTextProcessingEngine`` objects
(emphasis, BREAK, chunking and embedding injection as in txt2img) with our trainable vectors
registered as an embedding whose ``vec`` *is* the trainable tensor, latents come from its VAE, the
loss input from its UNet, previews from Forge's txt2img processing. The host-free parts (tensor
fixes, family selection, SDXL vector) live in :mod:`.tensors`, :mod:`.families` and
:mod:`.conditioning`; everything changed on Forge is put back when :meth:`ForgeBackend.frozen` exits.

Only importable inside Forge (``backend.*``, ``modules.*``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator, Mapping, Sequence

import torch

from ..backends.base import (
    Conditioning,
    LatentDistribution,
    NoiseSchedule,
    PreviewRequest,
    SizeConditioning,
    VectorSet,
)
from ..prompt.chunking import SpecialTokens
from ..webui import glue
from . import conditioning, families, tensors
from .families import ForgeModelError


def _host():
    from backend import memory_management
    from modules import shared

    return shared, memory_management


def _token_table(text_engine) -> torch.nn.Module:
    """The token-embedding table under Forge's textual-inversion wrapper of one text engine."""
    module = text_engine.text_encoder.transformer.text_model.embeddings.token_embedding
    return getattr(module, "wrapped", module)


def forget_cached_conditioning() -> None:
    """Drop txt2img's cached conditioning: Forge keys it on the prompt text, not on the vectors of
    the embeddings in it, so a retrained or re-imported embedding would otherwise go unused."""
    from modules import processing

    glue.forget_cached_conditioning(processing.StableDiffusionProcessing)


def forge_vec(family: str, vectors: VectorSet):
    """Our vectors as Forge's ``Embedding.vec``: one tensor (SD1/SD2) or the SDXL dict."""
    return glue.host_vec(family, vectors)


class ForgeBackend:
    """Forge's loaded SD1 / SD2 / SDXL engine, seen by the trainer."""

    preview_sampler = "DPM++ 2M"
    preview_scheduler = "Automatic"
    fp32_hint = "start Forge with --all-in-fp32"
    vae_nan_hint = "start Forge with --vae-in-fp32"

    def __init__(self, engine=None):
        shared, _ = _host()
        engine = engine if engine is not None else shared.sd_model
        spec = families.engine_family(
            type(engine).__name__, is_inpaint=bool(getattr(engine, "is_inpaint", False))
        )
        self.engine = engine
        self.family = spec.family
        self.default_size = spec.default_size
        objects = engine.forge_objects_original
        self.unet_patcher, self.clip, self.vae = objects.unet, objects.clip, objects.vae
        self.kmodel = self.unet_patcher.model
        self.unet = self.kmodel.diffusion_model
        self.text_engines = {key: getattr(engine, attr) for attr, key in spec.text_engines.items()}

        predictor = self.kmodel.predictor
        alphas = getattr(predictor, "alphas_cumprod", None)
        prediction = families.prediction_type(
            str(getattr(predictor, "prediction_type", "")), alphas is not None
        )
        self.noise_schedule = NoiseSchedule(alphas.detach().float().cpu().clone(), prediction)
        self.device = torch.device(self.unet_patcher.load_device)
        self.dtype = self.kmodel.computation_dtype
        self.encoder_widths = {k: int(_token_table(e).weight.shape[1]) for k, e in self.text_engines.items()}
        first_stage = self.vae.first_stage_model
        self.latent_scale = float(first_stage.scaling_factor)
        self.latent_channels = int(getattr(first_stage.config, "latent_channels", 4))
        self.vae_scale_factor = 8
        info = getattr(engine, "sd_checkpoint_info", None)
        self.checkpoint_name = getattr(info, "model_name", None)
        self.checkpoint_hash = getattr(info, "shorthash", None)

        self._registered: dict[str, object] = {}
        self._displaced: dict[tuple[str, str], object | None] = {}
        self._hooks: list = []
        self._requires_grad: list[dict[str, bool]] | None = None
        self._attention: object | None = None
        self._checkpointed: list[torch.nn.Module] = []

    def __repr__(self) -> str:
        return f"ForgeBackend({self.family}, {self.checkpoint_name or 'unnamed'}, {self.noise_schedule.prediction_type})"

    @property
    def is_current(self) -> bool:
        """False once Forge has loaded another model than the one this backend wraps."""
        shared, _ = _host()
        return shared.sd_model is self.engine

    def training_problems(self) -> list[str]:
        """Why training cannot start now (empty when it can); checked after the models are loaded."""
        _, memory_management = _host()
        problems = []
        patchers = (self.unet_patcher, self.clip.patcher)
        swapped = any(
            getattr(loaded, "model_accelerated", False) and any(loaded.model is p for p in patchers)
            for loaded in memory_management.current_loaded_models
        )
        swap = families.swap_problem(swapped)
        if swap:
            problems.append(swap)
        if not self.is_current:
            problems.append("Forge has loaded another checkpoint since this run was set up; start it again")
        wrong_target = families.sd2_v_loaded_as_eps(
            self.family, self.noise_schedule.prediction_type, self._v_marker_std(), self._yaml_beside()
        )
        if wrong_target:
            problems.append(wrong_target)
        return problems

    def _v_marker_std(self) -> float | None:
        for name, param in self.unet.named_parameters():
            if name.endswith(families.V_MARKER):
                return float(param.detach().float().std(unbiased=False))
        return None

    def _yaml_beside(self) -> bool:
        filename = getattr(getattr(self.engine, "sd_checkpoint_info", None), "filename", None)
        return bool(filename) and os.path.isfile(os.path.splitext(filename)[0] + ".yaml")

    # -- tokens ------------------------------------------------------------------------------------

    def tokenizers(self) -> dict[str, tuple[object, object]]:
        """Per encoder key: the text engine's tokenize callable and its special token ids."""
        return {
            key: (
                e.tokenize,
                SpecialTokens(start=e.id_start, end=e.id_end, pad=e.id_pad, comma=e.comma_token),
            )
            for key, e in self.text_engines.items()
        }

    def token_embeddings(self, text: str) -> dict[str, torch.Tensor]:
        """The input token embeddings of ``text`` per encoder: ``(n_tokens, width)`` float32 on the CPU."""
        out = {}
        for key, e in self.text_engines.items():
            ids = e.tokenize([text])[0]
            table = _token_table(e).weight
            out[key] = table.detach()[torch.tensor(ids, dtype=torch.long, device=table.device)].float().cpu()
        return out

    # -- our vectors in each text engine's embedding database --------------------------------------

    def _inject(self, embeddings: Mapping[str, VectorSet]) -> None:
        from backend.text_processing.textual_inversion import Embedding

        for name, vectors in embeddings.items():
            vec = forge_vec(self.family, vectors)
            emb = self._registered.get(name)
            if emb is None:
                emb = self._registered[name] = Embedding(vec, name)
            emb.vec = vec
            emb.vectors, emb.shape = glue.vec_rows_and_width(vec)
            for key, e in self.text_engines.items():
                db = e.embeddings
                if (key, name) not in self._displaced:
                    current = db.word_embeddings.get(name)
                    self._displaced[(key, name)] = None if current is emb else current
                if db.word_embeddings.get(name) is not emb:
                    db.register_embedding_by_name(emb, name)

    def release_embeddings(self) -> None:
        """Give every name we took over back to the entry it had before (or remove it)."""
        for (key, name), previous in self._displaced.items():
            db = self.text_engines[key].embeddings
            if db.word_embeddings.get(name) is self._registered.get(name):
                db.register_embedding_by_name(previous, name)
        self._displaced.clear()
        self._registered.clear()

    # -- text --------------------------------------------------------------------------------------

    def encode_text(
        self,
        prompts: Sequence[str],
        embeddings: Mapping[str, VectorSet],
        sizes: Sequence[SizeConditioning] | None = None,
    ) -> Conditioning:
        """Encode prompts through Forge's text engines with ``embeddings`` injected (with gradients)."""
        from backend.text_processing import classic_engine

        shared, _ = _host()
        prompts = list(prompts)
        if not prompts:
            raise ValueError("encode_text needs at least one prompt")
        self._inject(embeddings)
        saved = classic_engine.last_extra_generation_params
        classic_engine.last_extra_generation_params = {}  # the engines note used embeddings for txt2img's infotext
        try:
            if self.family != "sdxl":
                (text_engine,) = self.text_engines.values()
                return Conditioning(text_engine(prompts))
            cond_l = self.text_engines["clip_l"](prompts)
            cond_g, pooled = self.text_engines["clip_g"](prompts)
        finally:
            classic_engine.last_extra_generation_params = saved
        if sizes is None:
            crop = (int(shared.opts.sdxl_crop_top), int(shared.opts.sdxl_crop_left))
            sizes = conditioning.default_sizes(len(prompts), self.default_size, crop)
        vector = conditioning.sdxl_vector(pooled, sizes, self.engine.embedder)
        return Conditioning(torch.cat([cond_l, cond_g], dim=2), pooled=pooled, extra={"vector": vector})

    @contextlib.contextmanager
    def text_settings(self, emphasis: str, clip_skip: int) -> Iterator[None]:
        """Text encoding with this emphasis mode and CLIP skip (Forge reads ``opts.emphasis`` and each
        engine's ``clip_skip`` on every call); both put back afterwards."""
        shared, _ = _host()
        old_emphasis = shared.opts.data.get("emphasis")
        old_skips = {key: e.clip_skip for key, e in self.text_engines.items()}
        shared.opts.data["emphasis"] = emphasis
        for e in self.text_engines.values():
            e.clip_skip = int(clip_skip)
        try:
            yield
        finally:
            shared.opts.data["emphasis"] = old_emphasis
            for key, e in self.text_engines.items():
                e.clip_skip = old_skips[key]

    # -- images ------------------------------------------------------------------------------------

    def encode_images(self, pixels: torch.Tensor) -> LatentDistribution:
        """Encode ``(B, 3, H, W)`` images in ``[-1, 1]`` into the VAE posterior (unscaled, float32 CPU)."""
        _, memory_management = _host()
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(pixels.shape)}")
        f = self.vae_scale_factor
        if pixels.shape[2] % f or pixels.shape[3] % f:
            raise ValueError(
                f"image size {tuple(pixels.shape[2:])} is not a multiple of {f}; resize or crop it"
            )
        memory_management.load_model_gpu(self.vae.patcher)
        first_stage = self.vae.first_stage_model
        with torch.no_grad():
            x = pixels.to(self.vae.device, self.vae.vae_dtype)
            posterior = first_stage.encode(x, regulation=lambda p: p)
            mean, std = posterior.mean.float(), posterior.std.float()
        return LatentDistribution(mean.cpu(), std.expand_as(mean).cpu())

    # -- the denoiser ------------------------------------------------------------------------------

    def denoise(self, x_t: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The UNet's raw prediction (eps or v) at the discrete ``timesteps``."""
        if cond.crossattn.shape[0] != x_t.shape[0]:
            raise ValueError(
                f"conditioning batch {cond.crossattn.shape[0]} differs from latent batch {x_t.shape[0]}"
            )
        x = x_t.to(self.device, self.dtype)
        t = torch.as_tensor(timesteps, device=self.device).float()
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        extra: dict[str, torch.Tensor] = {}
        if self.family == "sdxl":
            if "vector" not in cond.extra:
                raise ValueError(
                    "SDXL conditioning needs its 'vector' (pooled text + sizes); use encode_text"
                )
            extra["y"] = cond.extra["vector"].to(self.device, self.dtype)
        context = cond.crossattn.to(self.device, self.dtype)
        return self.unet(x, t, context=context, transformer_options={}, **extra)

    # -- previews ----------------------------------------------------------------------------------

    def sample_preview(self, request: PreviewRequest, embeddings: Mapping[str, VectorSet]):
        """Render one image through Forge's txt2img processing with ``embeddings`` registered."""
        from modules import processing

        shared, _ = _host()
        self._inject(embeddings)
        p = processing.StableDiffusionProcessingTxt2Img(
            sd_model=self.engine,
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            steps=request.steps,
            cfg_scale=request.cfg_scale,
            seed=request.seed,
            width=request.width,
            height=request.height,
            sampler_name=getattr(request, "sampler", "") or self.preview_sampler,
            scheduler=self.preview_scheduler,
            do_not_save_samples=True,
            do_not_save_grid=True,
        )
        # condition caches key on the prompt text, not on our vectors' values
        p.cached_c, p.cached_uc = [None, None, None], [None, None, None]
        forget_cached_conditioning()
        saved = glue.save_fields(shared.state)
        try:
            processed = processing.process_images(p)
        finally:
            p.close()
            glue.restore_fields(shared.state, saved)
            if self._requires_grad is not None:  # Forge may have moved weights under inference mode
                tensors.make_trainable(self._trained_modules())
        if not processed.images:
            raise RuntimeError("the preview was not rendered (the job was interrupted)")
        return processed.images[0]

    # -- training session --------------------------------------------------------------------------

    def _trained_modules(self) -> list[torch.nn.Module]:
        return [self.clip.cond_stage_model, self.unet]

    def _weight_modules(self) -> list[torch.nn.Module]:
        return [self.clip.cond_stage_model, self.unet, self.vae.first_stage_model]

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """Every parameter of the engine's text encoders, UNet and VAE."""
        return itertools.chain.from_iterable(m.parameters() for m in self._weight_modules())

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """A training session on the checkpoint's own weights: models loaded, LoRAs of the last
        generation unmerged, weights made trainable-through and frozen, the in-place guard on,
        gradient-safe attention; all of it (and our temporary embeddings) undone on exit."""
        _, memory_management = _host()
        memory_management.load_models_gpu([self.clip.patcher, self.unet_patcher, self.vae.patcher])
        problems = self.training_problems()
        if problems:
            raise ForgeModelError(" ".join(problems))
        try:
            self.unet_patcher.refresh_loras()  # back to the checkpoint's weights
            self.clip.patcher.refresh_loras()
            self._requires_grad = tensors.requires_grad_flags(self._weight_modules())
            tensors.make_trainable(self._trained_modules())
            for p in self.parameters():
                p.requires_grad_(False)
            self._hooks = tensors.guard_inplace(self.unet)
            self._switch_attention()
            yield
        finally:
            self.restore()

    def _switch_attention(self) -> None:
        from backend import attention
        from backend.nn import unet

        current = unet.attention_function
        target = families.training_attention(getattr(current, "__name__", ""))
        if target is not None:
            print(f"TI Trainer: using {target} instead of {current.__name__} for training (gradient-checked)")
            self._attention = current
            unet.attention_function = getattr(attention, target)

    def restore(self) -> None:
        """Undo everything a training session changed on Forge (idempotent)."""
        self.release_embeddings()
        self.set_gradient_checkpointing(False)
        tensors.remove_hooks(self._hooks)
        self._hooks = []
        if self._attention is not None:
            from backend.nn import unet

            unet.attention_function = self._attention
            self._attention = None
        if self._requires_grad is not None:
            # by name: make_trainable put copies where Forge's inference tensors were
            tensors.restore_requires_grad(self._weight_modules(), self._requires_grad)
            self._requires_grad = None

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute the UNet's transformer and residual blocks in the backward pass (or stop)."""
        glue.disable_checkpointing(self._checkpointed)
        self._checkpointed = []
        if enabled:
            self._checkpointed = glue.enable_checkpointing(self.unet)


__all__ = ["ForgeBackend", "ForgeModelError"]
