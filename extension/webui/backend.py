"""The web UI backend: :class:`~..backends.base.Backend` over ``modules.shared.sd_model``.

No second copy of the model is made and nothing is reloaded: text goes through the web UI's own
hijacked text encoders (so emphasis, BREAK, chunking and embedding injection are txt2img's), our
trainable vectors are injected by registering a temporary host ``Embedding`` whose ``vec`` *is*
our tensor, latents come from the loaded VAE, the loss inputs from ``apply_model``, previews from
the host's txt2img processing. Everything the trainer changes on the host (parameter flags,
attention optimization, VAE placement, temporary embeddings, text settings) is put back when
:meth:`frozen` (or :meth:`text_settings`) exits, and again by :meth:`restore`.

Training computes in the precision the trainer chose: text encoding and the denoiser run under the
trainer's own autocast, never the web UI's (``devices.autocast()`` and the host's hijacked
``apply_model`` would impose fp16 on CUDA); previews keep the web UI's own processing. Training
always sees the checkpoint's own weights: whatever LoRA or hypernetwork the last generation (or a
preview prompt) left active is taken off before the first step and after every preview.

Only importable inside the web UI (``modules.*``); the host-free logic is in :mod:`.glue`.
"""

from __future__ import annotations

import contextlib
import sys
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
from . import glue
from .glue import HostModelError


def _host():
    from modules import devices, sd_hijack, shared

    return shared, devices, sd_hijack


def _token_table(embedder) -> torch.nn.Embedding:
    """The plain token-embedding table under one of the host's hijacked text encoders."""
    inner = embedder.wrapped
    if hasattr(inner, "transformer"):  # transformers CLIP (SD1, SDXL clip_l)
        module = inner.transformer.text_model.embeddings.token_embedding
    else:  # OpenCLIP (SD2, SDXL clip_g)
        module = inner.model.token_embedding
    while not isinstance(module, torch.nn.Embedding) and hasattr(module, "wrapped"):
        module = module.wrapped
    return module


class HostBackend:
    """The web UI's loaded SD1 / SD2 / SDXL model, seen by the trainer.

    ``preview_sampler`` / ``preview_scheduler`` name the host sampler used for previews (the
    request does not carry one). Construct it while the model to train is loaded; a model switch
    in the web UI makes a new backend necessary (:attr:`is_current` turns false).
    """

    preview_sampler = "DPM++ 2M"
    preview_scheduler = "Automatic"

    def __init__(self, sd_model=None):
        shared, devices, sd_hijack = _host()
        model = sd_model if sd_model is not None else shared.sd_model
        if model is None:
            raise HostModelError("no model is loaded in the web UI; pick a checkpoint first")
        if glue.is_forge(sys.modules):
            raise HostModelError(glue.FORGE_MESSAGE)
        self.model = model
        self.hijack = sd_hijack.model_hijack
        self.family = glue.model_family(
            is_sdxl=bool(getattr(model, "is_sdxl", False)),
            is_sd2=bool(getattr(model, "is_sd2", False)),
            is_sd1=bool(getattr(model, "is_sd1", False)),
            has_conditioner=hasattr(model, "conditioner"),
        )
        self.is_sgm = hasattr(model, "conditioner")
        if not self.is_sgm:
            problem = glue.unsupported_conditioning(
                getattr(model.model, "conditioning_key", None),
                getattr(model, "cond_stage_key", None),
                getattr(model, "depth_model", None) is not None,
            )
            if problem:
                raise HostModelError(
                    f"cannot train on the loaded model: {problem}; load a text-to-image checkpoint"
                )
        self._embedders = self._text_embedders()
        keys = glue.encoder_keys([type(e).__name__ for e in self._embedders], self.family)
        self._embedder_by_key = dict(zip(keys, self._embedders))

        self.device = torch.device(devices.device)
        # what the UNet's weights are stored in (--no-half: float32), not what the web UI casts to
        self.dtype = glue.weights_dtype(model.model.diffusion_model.parameters())
        self.fp32_hint = glue.FP32_HINT
        self.vae_nan_hint = glue.vae_nan_hint(glue.weights_dtype(model.first_stage_model.parameters()))
        self.encoder_widths = {
            k: int(_token_table(e).weight.shape[1]) for k, e in self._embedder_by_key.items()
        }
        self.latent_scale = float(model.scale_factor)
        self.latent_channels = int(getattr(model, "latent_channels", 4))
        self.vae_scale_factor = glue.vae_scale_factor(model.first_stage_model)
        self.noise_schedule = NoiseSchedule(
            glue.training_alphas_cumprod(
                model.alphas_cumprod, getattr(model, "alphas_cumprod_original", None)
            ),
            glue.prediction_type(model.parameterization),
        )
        info = getattr(model, "sd_checkpoint_info", None)
        self.checkpoint_name = getattr(info, "model_name", None)
        self.checkpoint_hash = getattr(info, "shorthash", None)

        self._registered: dict[str, object] = {}  # name -> our temporary host Embedding
        self._displaced: dict[str, object | None] = {}  # name -> the host's entry before ours
        self._image_cond: dict[tuple[int, int], torch.Tensor] = {}
        self._requires_grad: list[tuple[torch.nn.Parameter, bool]] | None = None
        self._attention_switched = False
        self._checkpointed: list[torch.nn.Module] = []
        self._vae_unloaded = False
        self._training = False

    # -- description ------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"HostBackend({self.family}, {self.checkpoint_name or 'unnamed'}, {self.noise_schedule.prediction_type})"

    @property
    def is_current(self) -> bool:
        """False once the web UI has loaded another model than the one this backend wraps."""
        shared, _, _ = _host()
        return shared.sd_model is self.model

    @property
    def default_size(self) -> int:
        """The native image side in pixels (512 for SD1, 768 for SD2-v, 1024 for SDXL)."""
        if self.family == "sdxl":
            return 1024
        return 768 if self.family == "sd2" and self.noise_schedule.prediction_type == "v_prediction" else 512

    def _text_embedders(self) -> list:
        if self.is_sgm:
            return [
                e for e in self.model.conditioner.embedders if type(e).__name__ in glue.ENCODER_KEY_BY_CLASS
            ]
        return [self.model.cond_stage_model]

    def training_problems(self) -> list[str]:
        """Why training cannot start in the current web UI session (empty when it can)."""
        shared, _, _ = _host()
        problems = []
        low = glue.low_vram_problem(
            lowvram=bool(getattr(shared.cmd_opts, "lowvram", False)),
            medvram=bool(getattr(shared.cmd_opts, "medvram", False)),
            medvram_sdxl=bool(getattr(shared.cmd_opts, "medvram_sdxl", False)),
            is_sdxl=self.family == "sdxl",
        )
        if low:
            problems.append(low)
        weights = glue.weights_dtype_problem(self.dtype, self.device.type)
        if weights:
            problems.append(weights)
        if not self.is_current:
            problems.append(
                "the web UI has loaded another checkpoint since this run was set up; start it again"
            )
        return problems

    # -- tokens ------------------------------------------------------------------------------------

    def tokenizers(self) -> dict[str, tuple[object, object]]:
        """Per encoder key: the host encoder's tokenize callable and its special token ids."""
        result = {}
        for key, e in self._embedder_by_key.items():
            special = SpecialTokens(start=e.id_start, end=e.id_end, pad=e.id_pad, comma=e.comma_token)
            result[key] = (e.tokenize, special)
        return result

    def token_embeddings(self, text: str) -> dict[str, torch.Tensor]:
        """The input token embeddings of ``text`` per encoder: ``(n_tokens, width)`` float32 on the CPU."""
        out = {}
        for key, e in self._embedder_by_key.items():
            ids = e.tokenize([text])[0]
            table = _token_table(e).weight
            out[key] = table.detach()[torch.tensor(ids, dtype=torch.long, device=table.device)].float().cpu()
        return out

    # -- our vectors in the host's embedding database --------------------------------------------

    def _inject(self, embeddings: Mapping[str, VectorSet]) -> None:
        """Make each ``name -> vectors`` the host's embedding ``name`` (its ``vec`` is our tensor)."""
        from modules.textual_inversion.textual_inversion import Embedding as HostEmbedding

        db = self.hijack.embedding_db
        for name, vectors in embeddings.items():
            vec = glue.host_vec(self.family, vectors)
            emb = self._registered.get(name)
            if emb is None:
                emb = HostEmbedding(vec, name)
                self._registered[name] = emb
            if name not in self._displaced:
                current = db.word_embeddings.get(name)
                self._displaced[name] = None if current is emb else current
            emb.vec = vec
            emb.vectors, emb.shape = glue.vec_rows_and_width(vec)
            # The host may have reloaded its folder since (it then drops foreign entries): re-register.
            if db.word_embeddings.get(name) is not emb:
                db.register_embedding_by_name(emb, self.model, name)

    def release_embeddings(self) -> None:
        """Give every name we took over back to the host entry it had before (or remove it)."""
        db = self.hijack.embedding_db
        for name, previous in self._displaced.items():
            ours = self._registered.get(name)
            if db.word_embeddings.get(name) is ours:
                db.register_embedding_by_name(previous, self.model, name)
        self._displaced.clear()
        self._registered.clear()

    # -- text --------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def text_settings(self, emphasis: str, clip_skip: int) -> Iterator[None]:
        """The web UI's "Emphasis mode" and "Clip skip" settings set to the run's values inside (the
        host's text encoders read them on every call); the user's values are back afterwards."""
        shared, _, _ = _host()
        from modules import sd_emphasis

        values = glue.host_text_values(emphasis, clip_skip, [o.name for o in sd_emphasis.options])
        with glue.overridden(shared.opts.data, values):
            yield

    def encode_text(
        self,
        prompts: Sequence[str],
        embeddings: Mapping[str, VectorSet],
        sizes: Sequence[SizeConditioning] | None = None,
    ) -> Conditioning:
        """Encode prompts through the host's own text encoders with ``embeddings`` injected, in the
        caller's precision (no autocast of the web UI's own)."""
        prompts = list(prompts)
        if not prompts:
            raise ValueError("encode_text needs at least one prompt")
        self._inject(embeddings)
        with self._emphasis_for(prompts):
            if not self.is_sgm:
                return Conditioning(self.model.cond_stage_model(prompts))
            return self._encode_sdxl(prompts, sizes)

    def _emphasis_for(self, prompts: list[str]) -> contextlib.AbstractContextManager:
        """The host's emphasis setting as :func:`.glue.encoding_emphasis` chooses for ``prompts``
        (unweighted prompts skip "Original"'s 0/0 on a zero-mean encoder output)."""
        shared, _, _ = _host()
        from modules import prompt_parser

        current = shared.opts.emphasis
        mode = glue.encoding_emphasis(current, [prompt_parser.parse_prompt_attention(p) for p in prompts])
        if mode == current:
            return contextlib.nullcontext()
        return glue.overridden(shared.opts.data, {glue.HOST_TEXT_OPTIONS["emphasis"]: mode})

    def _encode_sdxl(self, prompts: list[str], sizes: Sequence[SizeConditioning] | None) -> Conditioning:
        """What SDXL's conditioner computes, with gradients (it runs frozen embedders under no_grad)."""
        shared, devices, _ = _host()
        crop = (int(shared.opts.sdxl_crop_top), int(shared.opts.sdxl_crop_left))
        rows = glue.sdxl_size_batch(sizes, len(prompts), default_side=self.default_size, crop=crop)
        batch: dict[str, object] = {"txt": prompts}
        for key, value in rows.items():
            batch[key] = torch.tensor(value, device=devices.device, dtype=devices.dtype)
        outputs, pooled = [], None
        for embedder in self.model.conditioner.embedders:
            key = getattr(embedder, "input_key", None)
            if key not in batch:
                raise HostModelError(
                    f"the loaded SDXL model's conditioner needs {key!r}, which TI Trainer does not supply "
                    "(an SDXL refiner?); load an SDXL base checkpoint"
                )
            out = embedder(batch[key])
            parts = list(out) if isinstance(out, list | tuple) else [out]
            if type(embedder).__name__ == "FrozenOpenCLIPEmbedder2WithCustomWords" and len(parts) > 1:
                pooled = parts[1]
            outputs.extend(parts)
        merged = glue.merge_embedder_outputs(outputs)
        return Conditioning(merged["crossattn"], pooled=pooled, extra={"vector": merged["vector"]})

    # -- images ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _vae_on_device(self) -> Iterator[None]:
        """The VAE on the compute device inside (it may have been unloaded to the CPU for training)."""
        _, devices, _ = _host()
        if not self._vae_unloaded:
            yield
            return
        self.model.first_stage_model.to(devices.device)
        try:
            yield
        finally:
            self.model.first_stage_model.to(devices.cpu)

    def _maybe_unload_vae(self) -> None:
        shared, devices, _ = _host()
        if self._training and not self._vae_unloaded and shared.opts.unload_models_when_training:
            self.model.first_stage_model.to(devices.cpu)
            self._vae_unloaded = True
            devices.torch_gc()

    def encode_images(self, pixels: torch.Tensor) -> LatentDistribution:
        """Encode ``(B, 3, H, W)`` images in ``[-1, 1]`` into the VAE posterior (unscaled, float32 CPU)."""
        _, devices, _ = _host()
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(pixels.shape)}")
        f = self.vae_scale_factor
        if pixels.shape[2] % f or pixels.shape[3] % f:
            raise ValueError(
                f"image size {tuple(pixels.shape[2:])} is not a multiple of {f}; resize or crop it"
            )
        with torch.no_grad(), self._vae_on_device(), devices.autocast():
            x = pixels.to(devices.device, devices.dtype_vae)
            if self.is_sgm:
                # sgm's encode_first_stage returns a scaled *sample*; the posterior is one layer down
                fs = self.model.first_stage_model
                dist = glue.vae_posterior(fs.quant_conv(fs.encoder(x)).float())
            else:
                posterior = self.model.encode_first_stage(x)
                if not hasattr(posterior, "std"):
                    raise HostModelError(
                        "the loaded model's VAE does not return a Gaussian posterior; use a KL VAE"
                    )
                dist = LatentDistribution(posterior.mean.float(), posterior.std.float())
        return LatentDistribution(dist.mean.cpu(), dist.std.expand_as(dist.mean).cpu())

    def _image_conditioning(self, x_t: torch.Tensor) -> torch.Tensor:
        """The inpainting models' ``c_concat`` for a fully masked image, as txt2img and the web UI's
        trainer use it (computed once per latent size, like the web UI's trainer does per run)."""
        from modules import processing

        h, w = int(x_t.shape[2]), int(x_t.shape[3])
        cached = self._image_cond.get((h, w))
        if cached is None:
            # the conditioning encodes through a sampled VAE posterior: a fixed seed (without
            # touching the caller's random state) keeps c_concat, and so every loss, reproducible
            devices = [x_t.device] if x_t.device.type == "cuda" else []
            with torch.no_grad(), self._vae_on_device(), torch.random.fork_rng(devices=devices):
                torch.manual_seed(0)
                probe = x_t[:1].detach()
                cached = processing.txt2img_image_conditioning(self.model, probe, w * 8, h * 8)
            self._image_cond[(h, w)] = cached
        return cached.to(x_t.dtype).expand(x_t.shape[0], -1, -1, -1)

    # -- the denoiser ------------------------------------------------------------------------------

    def denoise(self, x_t: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The host denoiser's raw prediction (eps or v) at the discrete ``timesteps``, in the caller's
        precision: the UNet is called below the web UI's hijacked ``apply_model`` (ldm) /
        ``OpenAIWrapper.forward`` (sgm), which would enter ``devices.autocast()``."""
        _, devices, _ = _host()
        if cond.crossattn.shape[0] != x_t.shape[0]:
            raise ValueError(
                f"conditioning batch {cond.crossattn.shape[0]} differs from latent batch {x_t.shape[0]}"
            )
        self._maybe_unload_vae()  # latents are cached by the time the first loss is computed
        x = x_t.to(devices.device, self.dtype)
        t = torch.as_tensor(timesteps, device=devices.device).long()
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        crossattn = cond.crossattn.to(devices.device, self.dtype)
        if not self.is_sgm:  # ldm's DiffusionWrapper: what LatentDiffusion.apply_model calls
            c: dict[str, object] = {"c_crossattn": [crossattn]}
            if self.model.model.conditioning_key == "hybrid":
                c["c_concat"] = [self._image_conditioning(x)]
            return self.model.model(x, t, **c)
        if "vector" not in cond.extra:
            raise ValueError("SDXL conditioning needs its 'vector' (pooled text + sizes); use encode_text")
        if getattr(self.model, "is_sdxl_inpaint", False):
            x = torch.cat([x, self._image_conditioning(x)], dim=1)
        # what sgm's OpenAIWrapper.forward does
        vector = cond.extra["vector"].to(devices.device, self.dtype)
        return self.model.model.diffusion_model(x, timesteps=t, context=crossattn, y=vector)

    # -- previews ----------------------------------------------------------------------------------

    def sample_preview(self, request: PreviewRequest, embeddings: Mapping[str, VectorSet]):
        """Render one image through the host's txt2img processing with ``embeddings`` registered."""
        from modules import processing

        shared, _, _ = _host()
        self._inject(embeddings)
        p = processing.StableDiffusionProcessingTxt2Img(
            sd_model=self.model,
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
        p.do_not_reload_embeddings = True  # a folder rescan would drop our temporary embedding
        # Fresh condition caches: the class-wide ones would return stale vectors for the same prompt.
        p.cached_c, p.cached_uc = [None, None], [None, None]
        saved = glue.save_fields(shared.state)
        try:
            # the web UI's own precision for its own processing, whatever the caller's autocast
            with torch.no_grad(), torch.autocast(self.device.type, enabled=False), self._vae_on_device():
                processed = processing.process_images(p)
        finally:
            p.close()
            glue.restore_fields(shared.state, saved)
            self.use_checkpoint_weights()  # a <lora:...> of the preview prompt stays merged otherwise
        if not processed.images:
            raise RuntimeError("the preview was not rendered (the job was interrupted)")
        return processed.images[0]

    # -- training session --------------------------------------------------------------------------

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """Every parameter of the loaded model."""
        return self.model.parameters()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """A training session: every parameter frozen, a gradient-safe attention on, the VAE unloaded
        after caching when the host setting says so; all of it (and our temporary embeddings)
        restored on exit. Refuses up front under --lowvram / --medvram."""
        problems = self.training_problems()
        if problems:
            raise HostModelError(" ".join(problems))
        params = list(self.model.parameters())
        self._requires_grad = [(p, p.requires_grad) for p in params]
        try:
            for p in params:
                p.requires_grad_(False)
            self.use_checkpoint_weights()
            self._switch_attention()
            self._training = True
            yield
        finally:
            self.restore()

    def use_checkpoint_weights(self) -> int:
        """Take off whatever extra networks the last generation left in the model: the active
        hypernetworks, and the LoRAs the built-in Lora extension merged into the weights (restored
        from its own backups). Returns the number of layers restored."""
        from modules.hypernetworks import hypernetwork

        hypernetwork.load_hypernetworks([])
        lora = glue.lora_module(sys.modules)
        if lora is None:
            return 0
        return glue.restore_checkpoint_weights(
            self.model,
            clear_networks=lambda: lora.load_networks([]),
            apply_weights=lora.network_apply_weights,
        )

    def _switch_attention(self) -> None:
        from modules import sd_hijack, sd_hijack_optimizations  # noqa: F401  (fills the optimizer list)

        current = sd_hijack.current_optimizer
        available = [o.name for o in sd_hijack.optimizers if o.is_available()]
        target = glue.training_attention(getattr(current, "name", None), available)
        if target is None:
            return
        titles = {o.name: o.title() for o in sd_hijack.optimizers}
        print(f"TI Trainer: switching cross-attention to {target} for training (gradient-checked)")
        self.hijack.apply_optimizations(titles.get(target, target))
        self._attention_switched = True

    def restore(self) -> None:
        """Undo everything a training session changed on the host (idempotent)."""
        _, devices, _ = _host()
        self._training = False
        self.release_embeddings()
        self.set_gradient_checkpointing(False)
        if self._requires_grad is not None:
            for p, flag in self._requires_grad:
                p.requires_grad_(flag)
            self._requires_grad = None
        if self._attention_switched:
            self.hijack.apply_optimizations()  # back to the user's setting
            self._attention_switched = False
        if self._vae_unloaded:
            self.model.first_stage_model.to(devices.device)
            self._vae_unloaded = False
        self._image_cond.clear()

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute the UNet's transformer and residual blocks in the backward pass (or stop)."""
        glue.disable_checkpointing(self._checkpointed)
        self._checkpointed = []
        if enabled:
            self._checkpointed = glue.enable_checkpointing(self.model.model.diffusion_model)


__all__ = ["HostBackend", "HostModelError"]
