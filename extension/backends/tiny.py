"""Tiny, randomly initialised, seeded models of SD1, SD2 (v-prediction) and SDXL.

Built offline in well under a second from config with the real libraries (diffusers UNet and VAE,
transformers CLIP text models), with the real CLIP vocabulary size so the real BPE ids fit. They
have the architecture of their family, only narrow: 64x64 pixels -> 8x8 latents. They serve the
tests and the demo; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

FAMILIES = ("sd1", "sd2", "sdxl")

VOCAB_SIZE = 49408
START_ID, END_ID = 49406, 49407
TINY_HEAD_DIM = 16  # CLIP attention head width of the tiny encoders (the real ones use 64)

# encoder key -> (width, layers, activation); CLIP-L uses quick_gelu, the OpenCLIP encoders gelu
_ENCODERS: dict[str, dict[str, tuple[int, int, str]]] = {
    "sd1": {"clip_l": (32, 3, "quick_gelu")},
    "sd2": {"clip_g": (48, 3, "gelu")},
    "sdxl": {"clip_l": (32, 3, "quick_gelu"), "clip_g": (48, 3, "gelu")},
}
_LATENT_SCALE = {"sd1": 0.18215, "sd2": 0.18215, "sdxl": 0.13025}
SDXL_TIME_EMBED_DIM = 8  # addition_time_embed_dim (256 in the real SDXL)


def scheduler_config(family: str) -> dict[str, Any]:
    """The DDPM training schedule of the family (the same for all three, bar SD2's v-prediction)."""
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "v_prediction" if family == "sd2" else "epsilon",
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "timestep_spacing": "leading",
    }


def text_encoder_config(width: int, layers: int, activation: str):
    """A transformers ``CLIPTextConfig`` for a narrow CLIP text encoder with the real vocabulary."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=width,
        intermediate_size=width * 4,
        num_hidden_layers=layers,
        num_attention_heads=max(1, width // TINY_HEAD_DIM),
        max_position_embeddings=77,
        hidden_act=activation,
        projection_dim=width,
        bos_token_id=START_ID,
        eos_token_id=END_ID,
        pad_token_id=END_ID if activation == "quick_gelu" else 0,
    )


def unet_config(family: str, context_width: int, pooled_width: int | None = None) -> dict[str, Any]:
    """A small ``UNet2DConditionModel`` config shaped like the family's (SDXL: text_time conditioning)."""
    config: dict[str, Any] = {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": 1,
        "block_out_channels": (32, 64),
        "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
        "cross_attention_dim": context_width,
        "attention_head_dim": 2,
        "norm_num_groups": 32,
        "use_linear_projection": family != "sd1",
    }
    if family == "sdxl":
        if pooled_width is None:
            raise ValueError("an SDXL UNet needs the pooled text width")
        config.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=SDXL_TIME_EMBED_DIM,
            projection_class_embeddings_input_dim=pooled_width + 6 * SDXL_TIME_EMBED_DIM,
        )
    return config


def vae_config(family: str) -> dict[str, Any]:
    """A small ``AutoencoderKL`` config: 4 blocks (3 downsamplings -> 8 pixels per latent cell), 4 channels."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "block_out_channels": (8, 16, 32, 32),
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 8,
        "sample_size": 64,
        "scaling_factor": _LATENT_SCALE[family],
        "force_upcast": family == "sdxl",
    }


def tiny_components(family: str, seed: int = 0) -> dict[str, Any]:
    """The seeded modules of a tiny model: ``unet``, ``vae``, ``text_encoders`` (key -> model), ``scheduler_config``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    with torch.random.fork_rng(devices=[]):
        encoders: dict[str, torch.nn.Module] = {}
        for i, (key, (width, layers, act)) in enumerate(_ENCODERS[family].items()):
            torch.manual_seed(seed * 1000 + 1 + i)
            with_projection = family == "sdxl" and key == "clip_g"
            config = text_encoder_config(width, layers, act)
            cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
            encoders[key] = spread_layer_norms(cls(config).eval())
        context = sum(w for w, _, _ in _ENCODERS[family].values())
        pooled = _ENCODERS[family]["clip_g"][0] if family == "sdxl" else None
        torch.manual_seed(seed * 1000 + 10)
        unet = UNet2DConditionModel(**unet_config(family, context, pooled)).eval()
        torch.manual_seed(seed * 1000 + 20)
        vae = AutoencoderKL(**vae_config(family)).eval()
    return {"unet": unet, "vae": vae, "text_encoders": encoders, "scheduler_config": scheduler_config(family)}


def spread_layer_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Random LayerNorm affine parameters (fresh ones are exactly 1 and 0).

    With identity LayerNorms every output token has zero channel mean, so the mean of a chunk is ~0
    and the web UI's "Original" emphasis (which divides by that mean) blows up. Real CLIP weights
    have a biased final LayerNorm; this gives the tiny encoders the same property.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.1)
                module.bias.normal_(0.05, 0.1)
    return model


def tiny_hash(family: str, seed: int) -> str:
    """A stable 10-hex-digit stand-in for the checkpoint hash of a tiny model."""
    return hashlib.sha256(f"ti-trainer tiny-{family} seed {seed}".encode()).hexdigest()[:10]


def build_tiny_backend(
    family: str = "sd1",
    seed: int = 0,
    device: str | torch.device = "cpu",
    *,
    dtype: torch.dtype = torch.float32,
    prediction_type: str | None = None,
    text_options=None,
):
    """A :class:`StandaloneBackend` over a tiny seeded model of ``family`` ("sd1", "sd2" or "sdxl")."""
    from .standalone import StandaloneBackend

    return StandaloneBackend.from_parts(
        family, tiny_components(family, seed), prediction_type=prediction_type, device=device, dtype=dtype,
        checkpoint_name=f"tiny-{family}", checkpoint_hash=tiny_hash(family, seed), text_options=text_options,
    )  # fmt: skip
