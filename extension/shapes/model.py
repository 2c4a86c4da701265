"""The tiny-shapes model: a small SD1-architecture model trained on :mod:`.draw`'s pictures.

The same classes as a full SD1 model (transformers ``CLIPTextModel`` with the real CLIP vocabulary,
diffusers ``UNet2DConditionModel`` and ``AutoencoderKL``, the SD1 DDPM schedule with eps
prediction, latents scaled by 0.18215), only narrow: 32 x 32 pixel pictures, 4 pixels per latent
cell (8 x 8 x 4 latents). The weights ship in the package as fp16 ``.safetensors``
(:data:`WEIGHTS`); ``tools/train_tiny_shapes.py`` reproduces them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from ..backends.tiny import scheduler_config, text_encoder_config

NAME = "tiny-shapes"
SIDE = 32  # picture side in pixels
LATENT_SCALE = 0.18215  # SD1's: the VAE is calibrated to it, as the web UI assumes for SD1 files
WEIGHTS = Path(__file__).resolve().parent.parent / "data" / "tiny_shapes" / "tiny-shapes.safetensors"
TEXT_WIDTH, TEXT_LAYERS = 32, 3
_PREFIXES = ("unet.", "vae.", "text_encoder.")


class MissingWeightsError(FileNotFoundError):
    """The shipped weights are absent; the message says how to rebuild them."""


def unet_config() -> dict[str, Any]:
    """Two levels (8 x 8 and 4 x 4 latents), cross-attention at both and in the middle block."""
    return {
        "sample_size": SIDE // 4,
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": 1,
        "block_out_channels": (32, 64),
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        "cross_attention_dim": TEXT_WIDTH,
        "attention_head_dim": 2,  # diffusers' name for the head count (the tiny models' 2)
        "norm_num_groups": 32,
        "use_linear_projection": False,
    }


def vae_config() -> dict[str, Any]:
    """Three levels: 32 x 32 pixels -> 8 x 8 x 4 latents."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 3,
        "up_block_types": ("UpDecoderBlock2D",) * 3,
        "block_out_channels": (32, 32, 64),  # multiples of 32: the ldm VAE the web UI builds has 32 norm groups
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": SIDE,
        "scaling_factor": LATENT_SCALE,
        "force_upcast": False,
    }


def new_components(seed: int) -> dict[str, torch.nn.Module]:
    """Freshly initialised, seeded ``unet``, ``vae`` and ``text_encoder`` (float32, CPU)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    from ..backends.tiny import spread_layer_norms

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # biased LayerNorms as in real CLIP, so "Original" emphasis never divides by ~0
        text_encoder = spread_layer_norms(CLIPTextModel(text_encoder_config(TEXT_WIDTH, TEXT_LAYERS, "quick_gelu")))
        torch.manual_seed(seed + 1)
        unet = UNet2DConditionModel(**unet_config())
        torch.manual_seed(seed + 2)
        vae = AutoencoderKL(**vae_config())
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder}


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k.removeprefix("text_model."): v for k, v in module.state_dict().items() if not k.endswith("position_ids")}


def save_weights(parts: dict[str, torch.nn.Module], path: Path, info: dict[str, Any] | None = None) -> Path:
    """Write the three modules' weights as fp16 ``.safetensors`` (keys prefixed ``unet.``, ``vae.``,
    ``text_encoder.``), atomically; ``info`` goes into the header metadata as JSON."""
    from safetensors.torch import save_file

    from ..training.outputs import atomic_write

    tensors = {
        f"{prefix}{key}": value.detach().to("cpu", torch.float16).contiguous()
        for prefix, name in zip(_PREFIXES, ("unet", "vae", "text_encoder"))
        for key, value in _state(parts[name]).items()
    }
    metadata = {"format": "pt", "ti_trainer.model": NAME, "ti_trainer.info": json.dumps(info or {}, sort_keys=True)}
    return atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_components(path: Path = WEIGHTS, dtype: torch.dtype = torch.float32) -> dict[str, torch.nn.Module]:
    """The modules stored by :func:`save_weights`, in ``dtype`` (CPU, eval mode)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import load_file
    from transformers import CLIPTextModel

    if not Path(path).is_file():
        raise MissingWeightsError(
            f"the tiny-shapes weights {path} are missing; rebuild them with: python tools/train_tiny_shapes.py"
        )
    tensors = load_file(str(path))
    with torch.device("meta"):
        parts = {
            "unet": UNet2DConditionModel(**unet_config()),
            "vae": AutoencoderKL(**vae_config()),
            "text_encoder": CLIPTextModel(text_encoder_config(TEXT_WIDTH, TEXT_LAYERS, "quick_gelu")),
        }
    for prefix, (name, module) in zip(_PREFIXES, parts.items()):
        state = {k[len(prefix) :]: v.to(dtype) for k, v in tensors.items() if k.startswith(prefix)}
        if name == "text_encoder" and hasattr(module, "text_model"):
            state = {f"text_model.{k}": v for k, v in state.items()}
        missing, unexpected = module.load_state_dict(state, strict=False, assign=True)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ValueError(f"{path}: the {name} weights do not fit (missing {missing[:3]}, unexpected {unexpected[:3]})")
        for buffer_name, buffer in list(module.named_buffers()):
            if buffer.is_meta:  # CLIP's position ids are not stored
                owner = module.get_submodule(buffer_name.rsplit(".", 1)[0])
                owner.position_ids = torch.arange(buffer.shape[-1]).expand(buffer.shape).clone()
        module.eval()
    return parts


def weights_hash(path: Path = WEIGHTS) -> str:
    """The first 10 hex digits of the weights file's SHA-256 (the web UI's short-hash style)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:10]


def build_shapes_backend(
    device: str | torch.device = "cpu",
    *,
    dtype: torch.dtype = torch.float32,
    prediction_type: str | None = None,
    text_options=None,
    path: Path = WEIGHTS,
    parts: dict[str, torch.nn.Module] | None = None,
):
    """A :class:`..backends.standalone.StandaloneBackend` (SD1) over the tiny-shapes weights at
    ``path`` (or over already built ``parts``)."""
    from ..backends.standalone import StandaloneBackend

    parts = parts or load_components(path, dtype)
    config = scheduler_config("sd1")
    if prediction_type:
        config["prediction_type"] = prediction_type
    return StandaloneBackend(
        "sd1",
        unet=parts["unet"],
        vae=parts["vae"],
        text_encoders={"clip_l": parts["text_encoder"]},
        scheduler_config=config,
        device=device,
        dtype=dtype,
        checkpoint_name=NAME,
        checkpoint_hash=weights_hash(path) if Path(path).is_file() else None,
        text_options=text_options,
    )
