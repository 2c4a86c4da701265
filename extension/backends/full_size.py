"""The released Stable Diffusion architectures at full size, with seeded random weights.

``random-sd15``, ``random-sd2v`` and ``random-sdxl`` are the published diffusers configs of
SD 1.5 (``runwayml/stable-diffusion-v1-5``: UNet 860M, CLIP ViT-L/14 text encoder 123M, VAE 84M),
SD 2.1-v (``stabilityai/stable-diffusion-2-1``: v-prediction, OpenCLIP ViT-H/14 text encoder with
its last block dropped, as diffusers ships it) and SDXL base 1.0
(``stabilityai/stable-diffusion-xl-base-1.0``: UNet 2.6B, CLIP ViT-L + OpenCLIP ViT-bigG with
projection). The configs are written out below, so nothing is fetched; the weights are seeded
random values (:mod:`.seeded_init`), built directly in the target dtype on the target device.
They are for measuring speed and memory at the real sizes and for checking that our loaders,
exporter and trainer handle the real key layouts and shapes; they generate noise, not images.

SD 2.1-v: a checkpoint file does not say that it predicts v. The web UI (and our loader) tell
768-v from 512-base by running the UNet once at t=999 on a constant input and calling it v when
``mean(output - input) < -1``. Random weights answer either way depending on the seed, so the
output convolution's bias of ``random-sd2v`` (a constant added to every output value) is set so
that this probe reads exactly :data:`V_PROBE_READING`: both say "v", with a wide margin. ComfyUI
and ``huggingface_guess`` ask the weights instead: v when the bias of the first norm of the last
output block's transformer (ldm ``output_blocks.11.1.transformer_blocks.0.norm1.bias``) has a standard
deviation above 0.09, as in the released 768-v files; a fresh norm's bias is all zeros, so
``random-sd2v`` gets a seeded spread there (:func:`mark_v_prediction`). (Forge calls that test without
the UNet's key prefix, so it loads every SD2 file without a ``.yaml`` beside it as eps; our Forge
backend refuses to train such a file when its weights say v: :func:`..forge.families.sd2_v_loaded_as_eps`.)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .seeded_init import materialize_seeded, tensor_seed
from .tiny import scheduler_config

V_PROBE_READING = -2.0  # what the v-prediction probe reads on random-sd2v (v below -1)

_DOWN3 = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
_UP3 = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]

# --- the published configs (config.json of each repository, metadata keys left out) -------------

SD15_UNET: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": _DOWN3,
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": _UP3,
}

SD21_UNET: dict[str, Any] = {
    **SD15_UNET,
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "dual_cross_attention": False,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "sample_size": 96,
    "upcast_attention": True,
    "use_linear_projection": True,
}

SDXL_UNET: dict[str, Any] = {
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "class_embed_type": None,
    "class_embeddings_concat": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_dim": 2048,
    "cross_attention_norm": None,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_attention_heads": None,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "resnet_time_scale_shift": "default",
    "sample_size": 128,
    "time_cond_proj_dim": None,
    "time_embedding_act_fn": None,
    "time_embedding_dim": None,
    "time_embedding_type": "positional",
    "timestep_post_act": None,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "upcast_attention": None,
    "use_linear_projection": True,
}

SD15_VAE: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
SD21_VAE: dict[str, Any] = {**SD15_VAE, "sample_size": 768}
SDXL_VAE: dict[str, Any] = {**SD15_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}

CLIP_VIT_L: dict[str, Any] = {  # SD 1.5 text_encoder, SDXL text_encoder
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "vocab_size": 49408,
}
OPEN_CLIP_VIT_H: dict[str, Any] = {  # SD 2.1 text_encoder: 23 of ViT-H's 24 blocks
    **CLIP_VIT_L,
    "hidden_act": "gelu",
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 23,
    "projection_dim": 512,
}
OPEN_CLIP_VIT_BIGG: dict[str, Any] = {  # SDXL text_encoder_2 (CLIPTextModelWithProjection)
    **CLIP_VIT_L,
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "projection_dim": 1280,
}


@dataclass(frozen=True)
class Architecture:
    """One released model: its family, published configs and prediction type."""

    key: str  # "sd15" | "sd2v" | "sdxl"
    family: str  # our family name: "sd1" | "sd2" | "sdxl"
    title: str
    repository: str  # where the configs are published
    unet: Mapping[str, Any]
    vae: Mapping[str, Any]
    text_encoders: Mapping[str, Mapping[str, Any]]  # encoder key -> CLIPTextConfig values
    prediction_type: str
    v_probe_reading: float | None = None  # random-sd2v: see the module docstring

    @property
    def model_name(self) -> str:
        return f"random-{self.key}"


ARCHITECTURES: dict[str, Architecture] = {
    "sd15": Architecture(
        "sd15", "sd1", "Stable Diffusion 1.5", "runwayml/stable-diffusion-v1-5",
        SD15_UNET, SD15_VAE, {"clip_l": CLIP_VIT_L}, "epsilon",
    ),
    "sd2v": Architecture(
        "sd2v", "sd2", "Stable Diffusion 2.1-v (768)", "stabilityai/stable-diffusion-2-1",
        SD21_UNET, SD21_VAE, {"clip_g": OPEN_CLIP_VIT_H}, "v_prediction", v_probe_reading=V_PROBE_READING,
    ),
    "sdxl": Architecture(
        "sdxl", "sdxl", "Stable Diffusion XL base 1.0", "stabilityai/stable-diffusion-xl-base-1.0",
        SDXL_UNET, SDXL_VAE, {"clip_l": CLIP_VIT_L, "clip_g": OPEN_CLIP_VIT_BIGG}, "epsilon",
    ),
}  # fmt: skip
RANDOM_MODEL_NAMES = tuple(a.model_name for a in ARCHITECTURES.values())
_NAME = re.compile(r"random-(sd15|sd2v|sdxl)(?:@(\d+))?")


def parse_random_model_name(source: str) -> tuple[Architecture, int] | None:
    """``"random-sd15"`` / ``"random-sdxl@7"`` -> (architecture, seed); None for anything else."""
    match = _NAME.fullmatch(source.strip())
    if not match:
        return None
    return ARCHITECTURES[match.group(1)], int(match.group(2) or 0)


def random_hash(arch: Architecture, seed: int) -> str:
    """A stable 10-hex-digit stand-in for the checkpoint hash of a random model."""
    return hashlib.sha256(f"ti-trainer {arch.model_name} seed {seed}".encode()).hexdigest()[:10]


def text_encoder_config(values: Mapping[str, Any]):
    """A transformers ``CLIPTextConfig`` from published values."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(**values)


def _vae_dtype(vae: torch.nn.Module, dtype: torch.dtype) -> torch.dtype:
    # as StandaloneBackend places it: float32 for fp16 weights when the config says force_upcast
    # (diffusers' default, so also SD 1.5's VAE, whose published config does not mention it)
    return torch.float32 if dtype == torch.float16 and vae.config.force_upcast else dtype


def v_probe_reading(unet: torch.nn.Module) -> float:
    """The web UI's SD2 v-prediction test: ``mean(unet(x) - x)`` at t=999 for x = 0.5 on 8x8 latents
    and a 2-token context of 0.5 (its own threshold: v below -1)."""
    param = next(unet.parameters())
    x = torch.full((1, 4, 8, 8), 0.5, device=param.device, dtype=param.dtype)
    context = torch.full((1, 2, unet.config.cross_attention_dim), 0.5, device=param.device, dtype=param.dtype)
    with torch.no_grad():
        out = unet(x, torch.tensor([999], device=param.device), encoder_hidden_states=context).sample
    return float((out.float() - x.float()).mean())


def calibrate_v_probe(unet: torch.nn.Module, reading: float) -> None:
    """Set the output bias so that :func:`v_probe_reading` gives ``reading`` (the bias shifts every output)."""
    with torch.no_grad():
        unet.conv_out.bias.zero_()
        unet.conv_out.bias.fill_(reading - v_probe_reading(unet))


V_MARKER_STD = 0.2  # the released 768-v checkpoints' spread there is well above Forge's 0.09


def v_marker(unet: torch.nn.Module) -> torch.nn.Parameter:
    """The norm bias Forge reads to tell v from eps: the last up block's last transformer's ``norm1``."""
    return unet.up_blocks[-1].attentions[-1].transformer_blocks[0].norm1.bias


def mark_v_prediction(unet: torch.nn.Module, seed: int) -> None:
    """Give :func:`v_marker` a seeded spread of :data:`V_MARKER_STD`, so Forge detects v-prediction."""
    bias = v_marker(unet)
    generator = torch.Generator().manual_seed(tensor_seed(seed, "v-marker", "norm1.bias"))
    with torch.no_grad():
        bias.copy_((torch.randn(bias.shape, generator=generator) * V_MARKER_STD).to(bias))


def meta_modules(arch: Architecture) -> dict[str, Any]:
    """``arch``'s modules on the meta device (shapes only, no memory): ``unet``, ``vae``, ``text_encoders``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    with torch.device("meta"):
        encoders = {
            key: (
                CLIPTextModelWithProjection if arch.family == "sdxl" and key == "clip_g" else CLIPTextModel
            )(text_encoder_config(values))
            for key, values in arch.text_encoders.items()
        }
        return {
            "unet": UNet2DConditionModel(**arch.unet),
            "vae": AutoencoderKL(**arch.vae),
            "text_encoders": encoders,
        }


def seeded_unet(
    arch: Architecture,
    unet: torch.nn.Module | None = None,
    seed: int = 0,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.nn.Module:
    """``arch``'s UNet (a meta-device one given, or a new one) with its seeded weights."""
    if unet is None:
        from diffusers import UNet2DConditionModel

        with torch.device("meta"):
            unet = UNet2DConditionModel(**arch.unet)
    materialize_seeded(unet, seed=seed, tag=f"{arch.model_name}/unet", device=device, dtype=dtype)
    if arch.v_probe_reading is not None:
        mark_v_prediction(unet, seed)  # first: the probe reading depends on every weight
        calibrate_v_probe(unet, arch.v_probe_reading)
    return unet


def full_size_components(
    arch: Architecture,
    seed: int = 0,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """The seeded modules of ``arch``: ``unet``, ``vae``, ``text_encoders`` (key -> model), ``scheduler_config``."""
    tag = arch.model_name
    parts = meta_modules(arch)
    for key, model in parts["text_encoders"].items():
        materialize_seeded(
            model, seed=seed, tag=f"{tag}/{key}", device=device, dtype=dtype, spread_norms=True
        )
    seeded_unet(arch, parts["unet"], seed, device=device, dtype=dtype)
    vae = parts["vae"]
    materialize_seeded(vae, seed=seed, tag=f"{tag}/vae", device=device, dtype=_vae_dtype(vae, dtype))
    schedule = scheduler_config(arch.family)
    schedule["prediction_type"] = arch.prediction_type
    return {**parts, "scheduler_config": schedule}


def build_random_backend(
    arch: Architecture,
    seed: int = 0,
    device: str | torch.device = "cpu",
    *,
    dtype: torch.dtype = torch.float32,
    prediction_type: str | None = None,
    text_options=None,
):
    """A :class:`StandaloneBackend` over the full-size ``arch`` with seeded random weights."""
    from .standalone import StandaloneBackend

    return StandaloneBackend.from_parts(
        arch.family, full_size_components(arch, seed, device=device, dtype=dtype),
        prediction_type=prediction_type, device=device, dtype=dtype,
        checkpoint_name=arch.model_name if seed == 0 else f"{arch.model_name}@{seed}",
        checkpoint_hash=random_hash(arch, seed), text_options=text_options,
    )  # fmt: skip
