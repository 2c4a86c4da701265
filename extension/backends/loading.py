"""Load a standalone backend from a tiny-model name, a diffusers folder or a single ``.safetensors`` file.

Everything works offline. A single-file checkpoint (the original ``ldm`` key layout the web UI
uses) is converted with diffusers' own key-mapping helpers, but the model configs are built here
from the checkpoint's tensor shapes and the released architectures' known constants, so nothing
is fetched from the Hugging Face hub (``from_single_file`` would).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .standalone import StandaloneBackend
from .text_encoder import TextOptions
from .tiny import TINY_HEAD_DIM, build_tiny_backend, scheduler_config

UNET = "model.diffusion_model."
VAE = "first_stage_model."
SD1_CLIP = "cond_stage_model.transformer."
SD2_CLIP = "cond_stage_model.model."
SDXL_CLIP_L = "conditioner.embedders.0.transformer."
SDXL_CLIP_G = "conditioner.embedders.1.model."
LATENT_SCALE = {"sd1": 0.18215, "sd2": 0.18215, "sdxl": 0.13025}
PREDICTION_TYPES = ("epsilon", "v_prediction")


class ModelLoadError(ValueError):
    """A model source that cannot be loaded; the message names the problem and the fix."""


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The weight dtype for training in ``precision`` on ``device``: the compute precision itself
    (auto: bfloat16 on GPUs that compute it natively, float16 on other GPUs, float32 on the CPU)."""
    from ..training.precision import weight_dtype_for

    return weight_dtype_for(precision, device)


def load_backend(
    source: str,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    prediction_type: str | None = None,
    text_options: TextOptions | None = None,
) -> StandaloneBackend:
    """Load ``source``: ``"tiny-sd1"``/``"tiny-sd2"``/``"tiny-sdxl"`` (optionally ``"tiny-sd1@<seed>"``),
    ``"random-sd15"``/``"random-sd2v"``/``"random-sdxl"`` (full size, random weights, optionally
    ``@<seed>``), a diffusers folder, or a single ``.safetensors`` checkpoint.

    ``prediction_type`` ("epsilon" or "v_prediction") overrides what the source says or implies.
    """
    dev = torch.device(device) if device is not None else default_device()
    if prediction_type is not None and prediction_type not in PREDICTION_TYPES:
        raise ModelLoadError(f"prediction type {prediction_type!r} is unknown; use one of {PREDICTION_TYPES}")
    tiny = re.fullmatch(r"tiny-(sd1|sd2|sdxl)(?:@(\d+))?", source.strip())
    if tiny:
        family, seed = tiny.group(1), int(tiny.group(2) or 0)
        return build_tiny_backend(
            family, seed, dev, dtype=dtype or torch.float32, prediction_type=prediction_type,
            text_options=text_options,
        )  # fmt: skip
    if source.strip() == "tiny-shapes":  # the shipped, trained coloured-shapes model (extension/shapes)
        from ..shapes.model import MissingWeightsError, build_shapes_backend

        try:
            return build_shapes_backend(
                dev, dtype=dtype or torch.float32, prediction_type=prediction_type, text_options=text_options
            )
        except MissingWeightsError as exc:
            raise ModelLoadError(str(exc)) from None
    from .full_size import build_random_backend, parse_random_model_name

    random_model = parse_random_model_name(source)
    if random_model:  # the released architectures at full size, seeded random weights
        arch, seed = random_model
        return build_random_backend(
            arch, seed, dev, dtype=dtype or default_dtype(dev), prediction_type=prediction_type,
            text_options=text_options,
        )  # fmt: skip
    path = Path(source).expanduser()
    if not path.exists():
        raise ModelLoadError(
            f"model {source!r} not found: give tiny-sd1, tiny-sd2, tiny-sdxl, random-sd15, random-sd2v, "
            "random-sdxl, a diffusers folder "
            "(with model_index.json) or a .safetensors checkpoint file"
        )
    dtype = dtype or default_dtype(dev)
    if path.is_dir():
        return load_diffusers_folder(path, device=dev, dtype=dtype, prediction_type=prediction_type, text_options=text_options)
    if path.suffix.lower() == ".safetensors":
        return load_single_file(path, device=dev, dtype=dtype, prediction_type=prediction_type, text_options=text_options)
    if path.suffix.lower() in (".ckpt", ".pt", ".pth", ".bin"):
        raise ModelLoadError(
            f"{path.name} is a pickled checkpoint, which can run code when loaded; TI Trainer reads only "
            ".safetensors: convert it (e.g. with the web UI's model converter extension) or use a diffusers folder"
        )
    raise ModelLoadError(f"{path} is neither a diffusers folder nor a .safetensors checkpoint")


# -- diffusers folders ---------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{path} is missing: the folder is not a complete diffusers model") from None
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc}); the download may be incomplete") from None


def detect_folder_family(folder: Path) -> str:
    """``sd1``/``sd2``/``sdxl`` from the UNet config (and the text encoder for non-standard widths)."""
    unet = _read_json(folder / "unet" / "config.json")
    if unet.get("addition_embed_type") == "text_time" or (folder / "text_encoder_2").is_dir():
        return "sdxl"
    context = unet.get("cross_attention_dim")
    if context == 768:
        return "sd1"
    if context == 1024:
        return "sd2"
    encoder = _read_json(folder / "text_encoder" / "config.json")
    # CLIP-L (SD1) uses quick_gelu, OpenCLIP ViT-H (SD2) gelu: decides for non-standard widths
    return "sd1" if encoder.get("hidden_act") == "quick_gelu" else "sd2"


def _scheduler_config(raw: Mapping[str, Any], family: str, prediction_type: str | None) -> dict[str, Any]:
    config = scheduler_config(family)
    for key in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type"):
        if raw.get(key) is not None:
            config[key] = raw[key]
    if prediction_type:
        config["prediction_type"] = prediction_type
    return config


def _transformers_dtype_kwargs(dtype: torch.dtype) -> dict[str, Any]:
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}


def load_diffusers_folder(
    folder: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    prediction_type: str | None = None,
    text_options: TextOptions | None = None,
) -> StandaloneBackend:
    """Load an SD1/SD2/SDXL diffusers folder (``unet``, ``vae``, ``text_encoder``[``_2``], ``scheduler``).

    The folder's tokenizer is not used: every family uses the CLIP BPE of :mod:`..tokenizer`.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(folder)
    family = detect_folder_family(folder)
    sched_file = folder / "scheduler" / "scheduler_config.json"
    raw_sched = _read_json(sched_file) if sched_file.is_file() else {}
    tf_kwargs = _transformers_dtype_kwargs(dtype)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype)
    vae_config = _read_json(folder / "vae" / "config.json")
    vae_dtype = torch.float32 if dtype == torch.float16 and vae_config.get("force_upcast") else dtype
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=vae_dtype)
    if family == "sdxl":
        encoders = {
            "clip_l": CLIPTextModel.from_pretrained(folder / "text_encoder", **tf_kwargs),
            "clip_g": CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2", **tf_kwargs),
        }
    else:
        key = "clip_l" if family == "sd1" else "clip_g"
        encoders = {key: CLIPTextModel.from_pretrained(folder / "text_encoder", **tf_kwargs)}
    return StandaloneBackend(
        family,
        unet=unet,
        vae=vae,
        text_encoders=encoders,
        scheduler_config=_scheduler_config(raw_sched, family, prediction_type),
        device=device,
        dtype=dtype,
        checkpoint_name=folder.resolve().name,
        checkpoint_hash=None,
        text_options=text_options,
    )


def save_diffusers(backend: StandaloneBackend, folder: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``backend``'s model as a diffusers folder (atomically: a temporary folder renamed into place)."""
    from diffusers import DDPMScheduler

    from ..temp_files import create_temp_dir, settle_tree_modes
    from ..tokenizer import tokenizer_files

    target = Path(folder)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; choose another folder or pass overwrite=True")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = create_temp_dir(target.parent, prefix=f".{target.name}-")  # umask mode, unlike mkdtemp
    try:
        backend.unet.save_pretrained(staging / "unet")
        backend.vae.save_pretrained(staging / "vae")
        DDPMScheduler.from_config(backend.scheduler_config).save_pretrained(staging / "scheduler")
        pipeline = "StableDiffusionXLPipeline" if backend.family == "sdxl" else "StableDiffusionPipeline"
        index: dict[str, Any] = {
            "_class_name": pipeline,
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "scheduler": ["diffusers", "DDPMScheduler"],
        }
        names = {"sd1": {"clip_l": ""}, "sd2": {"clip_g": ""}, "sdxl": {"clip_l": "", "clip_g": "_2"}}[backend.family]
        for key, suffix in names.items():
            model = backend.text_encoders[key]
            model.save_pretrained(staging / f"text_encoder{suffix}")
            index[f"text_encoder{suffix}"] = ["transformers", type(model).__name__]
            (staging / f"tokenizer{suffix}").mkdir()
            for name in ("vocab.json", "merges.txt"):
                shutil.copyfile(tokenizer_files() / name, staging / f"tokenizer{suffix}" / name)
            index[f"tokenizer{suffix}"] = ["transformers", "CLIPTokenizer"]
        if backend.family != "sdxl":
            index.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
        (staging / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", "utf-8")
        settle_tree_modes(staging)  # safetensors 0.8 writes 0600 files whatever the umask
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


# -- single-file (ldm layout) checkpoints -----------------------------------------------------------


def detect_checkpoint_family(state_dict: Mapping[str, Tensor]) -> str:
    """``sd1``/``sd2``/``sdxl`` from the keys of an ldm-layout checkpoint; clear errors otherwise."""
    if f"{UNET}input_blocks.0.0.weight" not in state_dict:
        raise ModelLoadError(
            "the file holds no Stable Diffusion UNet (no model.diffusion_model.* keys): it may be a LoRA, "
            "VAE or embedding; give a full SD1/SD2/SDXL checkpoint"
        )
    in_channels = state_dict[f"{UNET}input_blocks.0.0.weight"].shape[1]
    if in_channels != 4:
        raise ModelLoadError(
            f"the UNet takes {in_channels} input channels (an inpainting or instruct model); "
            "textual inversion here needs a plain text-to-image checkpoint"
        )
    if any(k.startswith(SDXL_CLIP_G) for k in state_dict):
        if not any(k.startswith(SDXL_CLIP_L) for k in state_dict):
            raise ModelLoadError("this is an SDXL refiner (no CLIP-L encoder); use an SDXL base checkpoint")
        return "sdxl"
    if any(k.startswith(SD2_CLIP) for k in state_dict):
        return "sd2"
    if any(k.startswith(SD1_CLIP) for k in state_dict):
        return "sd1"
    raise ModelLoadError("the checkpoint holds no known text encoder (cond_stage_model / conditioner); it cannot be used")


def _indices(state_dict: Mapping[str, Tensor], prefix: str) -> list[int]:
    found = set()
    for key in state_dict:
        if key.startswith(prefix):
            head = key[len(prefix) :].split(".", 1)[0]
            if head.isdigit():
                found.add(int(head))
    return sorted(found)


def _is_released_width(model_channels: int) -> bool:
    # the released SD1/SD2/SDXL UNets all have 320 base channels; anything else is read as the tiny layout
    return model_channels == 320


def unet_config_from_ldm(state_dict: Mapping[str, Tensor], family: str, pooled_width: int | None) -> dict[str, Any]:
    """A ``UNet2DConditionModel`` config for the ldm UNet in ``state_dict`` (shapes + known head layout)."""
    blocks = _indices(state_dict, f"{UNET}input_blocks.")
    downs = [i for i in blocks if f"{UNET}input_blocks.{i}.0.op.weight" in state_dict]
    per_level = (downs[0] - 1) if downs else len(blocks) - 1
    levels = len(downs) + 1
    first = [1 + level * (per_level + 1) for level in range(levels)]
    channels = [int(state_dict[f"{UNET}input_blocks.{i}.0.out_layers.3.weight"].shape[0]) for i in first]
    depth = [len(_indices(state_dict, f"{UNET}input_blocks.{i}.1.transformer_blocks.")) for i in first]
    attn_key = next(k for k in state_dict if k.startswith(UNET) and k.endswith("attn2.to_k.weight"))
    proj_key = next(k for k in state_dict if k.startswith(UNET) and k.endswith("proj_in.weight"))
    model_channels = int(state_dict[f"{UNET}input_blocks.0.0.weight"].shape[0])
    released = _is_released_width(model_channels)
    if not released:
        heads: Any = 2  # the tiny models' UNet head count
    elif family == "sd1":
        heads = 8
    else:
        heads = [c // 64 for c in channels]  # 64-wide heads: diffusers counts heads per level
    config: dict[str, Any] = {
        "sample_size": {"sd1": 64, "sd2": 96, "sdxl": 128}[family] if released else 8,
        "in_channels": int(state_dict[f"{UNET}input_blocks.0.0.weight"].shape[1]),
        "out_channels": int(state_dict[f"{UNET}out.2.weight"].shape[0]),
        "layers_per_block": per_level,
        "block_out_channels": channels,
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depth],
        "up_block_types": ["CrossAttnUpBlock2D" if d else "UpBlock2D" for d in reversed(depth)],
        "cross_attention_dim": int(state_dict[attn_key].shape[1]),
        "attention_head_dim": heads,
        "use_linear_projection": state_dict[proj_key].ndim == 2,
        "transformer_layers_per_block": [max(d, 1) for d in depth],
        "upcast_attention": family == "sd2",
    }
    if family == "sdxl":
        adm = int(state_dict[f"{UNET}label_emb.0.0.weight"].shape[1])
        if pooled_width is None or (adm - pooled_width) % 6:
            raise ModelLoadError(f"SDXL size conditioning of width {adm} does not fit the pooled text width {pooled_width}")
        config.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=(adm - pooled_width) // 6,
            projection_class_embeddings_input_dim=adm,
        )
    return config


def vae_config_from_ldm(state_dict: Mapping[str, Tensor], family: str) -> dict[str, Any]:
    """An ``AutoencoderKL`` config for the ldm VAE in ``state_dict``."""
    base = int(state_dict[f"{VAE}encoder.conv_in.weight"].shape[0])
    levels = _indices(state_dict, f"{VAE}encoder.down.")
    if not levels:
        raise ModelLoadError("the checkpoint holds no VAE (first_stage_model.*); bake a VAE into it first")
    channels = [int(state_dict[f"{VAE}encoder.down.{i}.block.0.conv2.weight"].shape[0]) for i in levels]
    count = len(levels)
    return {
        "in_channels": int(state_dict[f"{VAE}encoder.conv_in.weight"].shape[1]),
        "out_channels": int(state_dict[f"{VAE}decoder.conv_out.weight"].shape[0]),
        "down_block_types": ["DownEncoderBlock2D"] * count,
        "up_block_types": ["UpDecoderBlock2D"] * count,
        "block_out_channels": channels,
        "layers_per_block": len(_indices(state_dict, f"{VAE}encoder.down.0.block.")),
        "latent_channels": int(state_dict[f"{VAE}post_quant_conv.weight"].shape[0]),
        "norm_num_groups": math.gcd(32, base),
        "sample_size": 1024 if family == "sdxl" else 512,
        "scaling_factor": LATENT_SCALE[family],
        "force_upcast": family == "sdxl",
    }


def _clip_config(width: int, layers: int, intermediate: int, activation: str, projection: int | None):
    from transformers import CLIPTextConfig

    released = width % 64 == 0 and width >= 512
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=width,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=width // 64 if released else max(1, width // TINY_HEAD_DIM),
        max_position_embeddings=77,
        hidden_act=activation,
        projection_dim=projection or width,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407 if activation == "quick_gelu" else 0,
    )


def _materialize(model: nn.Module, state_dict: Mapping[str, Tensor], what: str) -> nn.Module:
    """Load ``state_dict`` into a meta-device ``model``; fills CLIP's position ids; errors on gaps."""
    missing, unexpected = model.load_state_dict(dict(state_dict), strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ModelLoadError(
            f"the checkpoint's {what} does not match its detected architecture "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]}); convert it to a diffusers folder and load that"
        )
    for name, buffer in list(model.named_buffers()):
        if buffer.is_meta:
            if not name.endswith("position_ids"):
                raise ModelLoadError(f"{what}: buffer {name} was not in the checkpoint")
            owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            owner.position_ids = torch.arange(buffer.shape[-1]).expand(buffer.shape).clone()
    return model


def _clip_l_from_ldm(state_dict: Mapping[str, Tensor], prefix: str) -> nn.Module:
    from transformers import CLIPTextModel

    sub = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    sub = {k.removeprefix("text_model."): v for k, v in sub.items() if not k.endswith("position_ids")}
    width = int(sub["embeddings.token_embedding.weight"].shape[1])
    layers = len(_indices(sub, "encoder.layers."))
    intermediate = int(sub["encoder.layers.0.mlp.fc1.weight"].shape[0])
    with torch.device("meta"):
        model = CLIPTextModel(_clip_config(width, layers, intermediate, "quick_gelu", None))
    inner_prefix = "" if not hasattr(model, "text_model") else "text_model."
    return _materialize(model, {inner_prefix + k: v for k, v in sub.items()}, "CLIP-L text encoder")


def _open_clip_from_ldm(state_dict: Mapping[str, Tensor], prefix: str, *, with_projection: bool) -> nn.Module:
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    width = int(state_dict[f"{prefix}token_embedding.weight"].shape[1])
    layers = len(_indices(state_dict, f"{prefix}transformer.resblocks."))
    if prefix == SD2_CLIP and layers == 24:
        layers = 23  # diffusers drops ViT-H's last block (SD2 uses the penultimate one), like its hub config
    intermediate = int(state_dict[f"{prefix}transformer.resblocks.0.mlp.c_fc.weight"].shape[0])
    projection = int(state_dict[f"{prefix}text_projection"].shape[1]) if with_projection else None
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    with torch.device("meta"):
        model = cls(_clip_config(width, layers, intermediate, "gelu", projection))
    converted = convert_open_clip_checkpoint(model, state_dict, prefix=prefix)
    if not with_projection:
        converted.pop("text_projection.weight", None)
    if not hasattr(model, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    return _materialize(model, converted, "OpenCLIP text encoder")


def _prediction_from_sidecar(path: Path) -> str | None:
    """The web UI's ``<checkpoint>.yaml`` next to the file: ``parameterization: "v"`` means v-prediction."""
    for sidecar in (path.with_suffix(".yaml"), path.with_suffix(".yml")):
        if sidecar.is_file():
            text = sidecar.read_text("utf-8", errors="replace")
            return "v_prediction" if re.search(r"parameterization:\s*['\"]?v['\"]?\s*$", text, re.M) else "epsilon"
    return None


def probe_v_prediction(unet: nn.Module, context_width: int) -> bool:
    """Guess whether a released-size SD2 UNet predicts v rather than eps, from its output at t = 999.

    At the last timestep the input is almost pure noise, so an eps model returns roughly its input
    while a v model returns roughly its negative: for a constant 0.5 input the mean of
    ``output - input`` is near 0 for eps and clearly negative for v.
    """
    param = next(unet.parameters())
    x = torch.full((1, 4, 8, 8), 0.5, device=param.device, dtype=param.dtype)
    context = torch.full((1, 2, context_width), 0.5, device=param.device, dtype=param.dtype)
    with torch.no_grad():
        out = unet(x, torch.tensor([999], device=param.device), encoder_hidden_states=context).sample
    return float((out.float() - x.float()).mean()) < -1.0  # the web UI's threshold for the same test


def load_single_file(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    prediction_type: str | None = None,
    text_options: TextOptions | None = None,
) -> StandaloneBackend:
    """Load an SD1/SD2/SDXL ``.safetensors`` checkpoint in the original (ldm) layout, offline.

    SD2 checkpoints do not say whether they predict v (768-v) or eps (512-base): the order of
    precedence is ``prediction_type``, a web-UI style ``<name>.yaml`` next to the file, a ``v_pred``
    key in the file, then (SD2 only) a probe of the UNet's output.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        state_dict = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(f"cannot read {path} as safetensors ({exc}); the file may be truncated") from None
    family = detect_checkpoint_family(state_dict)

    if family == "sd1":
        encoders = {"clip_l": _clip_l_from_ldm(state_dict, SD1_CLIP)}
    elif family == "sd2":
        encoders = {"clip_g": _open_clip_from_ldm(state_dict, SD2_CLIP, with_projection=False)}
    else:
        encoders = {
            "clip_l": _clip_l_from_ldm(state_dict, SDXL_CLIP_L),
            "clip_g": _open_clip_from_ldm(state_dict, SDXL_CLIP_G, with_projection=True),
        }
    pooled = int(encoders["clip_g"].config.projection_dim) if family == "sdxl" else None

    unet_config = unet_config_from_ldm(state_dict, family, pooled)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config)
    _materialize(unet, convert_ldm_unet_checkpoint(state_dict, unet_config), "UNet")
    vae_config = vae_config_from_ldm(state_dict, family)
    with torch.device("meta"):
        vae = AutoencoderKL(**vae_config)
    _materialize(vae, convert_ldm_vae_checkpoint(state_dict, vae_config), "VAE")
    del state_dict

    prediction = prediction_type or _prediction_from_sidecar(path)
    if prediction is None:
        with path.open("rb") as fh:  # the safetensors header (JSON) lists every key
            header = fh.read(min(int.from_bytes(fh.read(8), "little"), 100_000_000))
        if b'"v_pred"' in header:
            prediction = "v_prediction"
    if prediction is None and family == "sd2" and _is_released_width(unet_config["block_out_channels"][0]):
        prediction = "v_prediction" if probe_v_prediction(unet.float(), unet_config["cross_attention_dim"]) else "epsilon"
    config = scheduler_config(family)
    config["prediction_type"] = prediction or ("v_prediction" if family == "sd2" else "epsilon")
    return SingleFileBackend(
        family,
        path=path,
        unet=unet,
        vae=vae,
        text_encoders=encoders,
        scheduler_config=config,
        device=device,
        dtype=dtype,
        checkpoint_name=path.stem,
        text_options=text_options,
    )


class SingleFileBackend(StandaloneBackend):
    """A backend loaded from one checkpoint file; its hash (the web UI's short hash) is computed on first use."""

    def __init__(self, family: str, *, path: Path, **kwargs):
        self.path = Path(path)
        super().__init__(family, **kwargs)

    @property
    def checkpoint_hash(self) -> str | None:
        if self._hash is None:
            digest = hashlib.sha256()
            with self.path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            self._hash = digest.hexdigest()[:10]  # the web UI's checkpoint shorthash
        return self._hash

    @checkpoint_hash.setter
    def checkpoint_hash(self, value: str | None) -> None:
        self._hash = value

