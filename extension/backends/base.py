"""The backend interface: everything the trainer needs from a model family, and nothing more.

The trainer (``extension.training``) is host-agnostic. It talks to a model only through
:class:`Backend`. Two implementations exist: the standalone one on diffusers/transformers models
(``backends.standalone``) and the web UI one over ``modules.shared.sd_model`` (``extension/webui/backend.py``).

Trainable vectors are always passed as a mapping *encoder key -> tensor (n, width)*; the keys are
the backend's :attr:`Backend.encoder_widths` keys: ``{"clip_l": 768}`` for SD1,
``{"clip_g": 1024}`` for SD2 (OpenCLIP ViT-H), ``{"clip_l": 768, "clip_g": 1280}`` for SDXL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

Tokenize = Callable[[list[str]], list[list[int]]]
VectorSet = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class NoiseSchedule:
    """The discrete diffusion schedule of the denoiser."""

    alphas_cumprod: torch.Tensor  # (T,) float32, on the CPU
    prediction_type: str  # "epsilon" or "v_prediction"

    @property
    def num_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])


FAMILY_NAMES = {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL"}


def describe_model(backend: Backend) -> str:
    """One line naming what a run trains on: family, what the denoiser predicts and the checkpoint,
    e.g. "SD2, v-prediction, 512-v-ema.safetensors" (a wrong prediction type trains the wrong target)."""
    predicts = {"epsilon": "eps-prediction", "v_prediction": "v-prediction"}
    kind = backend.noise_schedule.prediction_type
    parts = [FAMILY_NAMES.get(backend.family, backend.family), predicts.get(kind, kind)]
    return ", ".join([*parts, backend.checkpoint_name] if backend.checkpoint_name else parts)


@dataclass(frozen=True)
class SizeConditioning:
    """SDXL micro-conditioning of one image: original size, crop offset, target size (h, w)."""

    original_size: tuple[int, int]
    crop_top_left: tuple[int, int]
    target_size: tuple[int, int]


@dataclass
class Conditioning:
    """Text conditioning for a batch, ready for :meth:`Backend.denoise`.

    ``crossattn`` is ``(B, 77*k, C)``; SDXL also fills ``pooled`` ``(B, 1280)`` and ``extra``
    (e.g. the time ids / size embeddings). The trainer treats it as opaque.
    """

    crossattn: torch.Tensor
    pooled: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class LatentDistribution:
    """The VAE posterior of a batch of images, *before* the latent scale factor is applied."""

    mean: torch.Tensor
    std: torch.Tensor

    def sample(self, scale: float, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype)
        return (self.mean + self.std * noise.to(self.mean.device)) * scale

    def mode(self, scale: float) -> torch.Tensor:
        return self.mean * scale


@dataclass(frozen=True)
class PreviewRequest:
    """What to render for a preview image."""

    prompt: str
    negative_prompt: str = ""
    steps: int = 20
    cfg_scale: float = 7.0
    seed: int = -1
    width: int = 512
    height: int = 512
    sampler: str = ""  # host sampler name; "" = the backend's default


@runtime_checkable
class Backend(Protocol):
    """A loaded model family, seen by the trainer."""

    family: str  # "sd1", "sd2" or "sdxl"
    device: torch.device
    dtype: torch.dtype  # the compute dtype of the frozen model
    encoder_widths: dict[str, int]  # encoder key -> token-embedding width
    latent_scale: float
    latent_channels: int
    vae_scale_factor: int  # pixels per latent cell (8)
    noise_schedule: NoiseSchedule
    checkpoint_hash: str | None
    checkpoint_name: str | None
    # how the user gets float32 weights (e.g. "start the web UI with --no-half"), for precision fp32
    fp32_hint: str
    # how the user avoids non-finite VAE latents (e.g. "start the web UI with --no-half-vae")
    vae_nan_hint: str

    def tokenizers(self) -> dict[str, tuple[Tokenize, object]]:
        """Per encoder key: the tokenize callable and its ``SpecialTokens``."""
        ...

    def token_embeddings(self, text: str) -> dict[str, torch.Tensor]:
        """The input token embeddings of ``text`` (no start/end), per encoder: ``(n_tokens, width)``."""
        ...

    def encode_text(
        self,
        prompts: Sequence[str],
        embeddings: Mapping[str, VectorSet],
        sizes: Sequence[SizeConditioning] | None = None,
    ) -> Conditioning:
        """Encode prompts with ``embeddings`` (name -> vectors) injected where their names occur.

        Gradients flow to the injected vectors only; emphasis, BREAK and chunking follow the web UI.
        """
        ...

    def encode_images(self, pixels: torch.Tensor) -> LatentDistribution:
        """Encode ``(B, 3, H, W)`` images in ``[-1, 1]`` into the VAE posterior (unscaled)."""
        ...

    def denoise(self, x_t: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The denoiser's raw prediction (eps or v, as :attr:`noise_schedule` says)."""
        ...

    def sample_preview(self, request: PreviewRequest, embeddings: Mapping[str, VectorSet]):
        """Render one preview image (a ``PIL.Image``) with the given embeddings active."""
        ...

    def frozen(self) -> AbstractContextManager[None]:
        """Context in which every model parameter has ``requires_grad=False`` (restored after)."""
        ...

    def text_settings(self, emphasis: str, clip_skip: int) -> AbstractContextManager[None]:
        """Context in which text encoding uses this emphasis mode and CLIP skip (restored after)."""
        ...

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Turn activation checkpointing of the denoiser on or off."""
        ...

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """Every parameter of the frozen model (used to check that none receives a gradient)."""
        ...
