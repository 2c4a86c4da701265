"""Write a loaded model as one ``.safetensors`` checkpoint in the original (ldm / sgm) key layout.

That is the layout the web UI (and every tool that reads "checkpoints") loads: the UNet under
``model.diffusion_model.``, the VAE under ``first_stage_model.``, CLIP ViT-L as a transformers
model under ``cond_stage_model.transformer.`` (SD1) or ``conditioner.embedders.0.transformer.``
(SDXL), and the OpenCLIP encoders in open_clip's own layout under ``cond_stage_model.model.`` (SD2)
or ``conditioner.embedders.1.model.`` (SDXL). The mapping here is the reverse of the one our
single-file loader applies (diffusers' ldm -> diffusers helpers); :func:`verify_round_trip` runs
those helpers on the result, so a written file is known to load back to the very same tensors.

Two things have no diffusers counterpart and are written as the original files have them:
SD2's OpenCLIP ViT-H has 24 blocks but diffusers keeps 23 (SD2 uses the penultimate block's
output, so the web UI never runs the last one): the 24th is written as zeros; and the OpenCLIP
``text_projection`` of SD2 (unused for conditioning) is written as the identity.

How the web UI picks the architecture of such a file: SD1 by default, SDXL from the
``conditioner.embedders.1.model.ln_final.weight`` key, SD2 from the width of
``cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight``, and SD2 768-v versus
512-base by running the UNet once (``random-sd2v`` is calibrated to pass that probe, see
:mod:`.full_size`); a ``<name>.yaml`` beside the file overrides all of it. No ``.yaml`` is written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from .loading import SD1_CLIP, SD2_CLIP, SDXL_CLIP_G, SDXL_CLIP_L, UNET, VAE
from .standalone import VIT_H_TRUNCATED_LAYERS, StandaloneBackend

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
VIT_H_BLOCKS = 24
OPEN_CLIP_LOGIT_SCALE = math.log(100.0)  # trained CLIP's (clamped) logit scale; unused for conditioning

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}  # fmt: skip
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}  # fmt: skip
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


class ExportError(ValueError):
    """The model cannot be written in the ldm layout; the message says why."""


# -- UNet ------------------------------------------------------------------------------------------


def _resnet_key(rest: str) -> str:
    head, _, leaf = rest.partition(".")
    if head not in _RESNET:
        raise ExportError(f"unknown UNet resnet parameter {rest!r}")
    return f"{_RESNET[head]}.{leaf}"


def unet_key(key: str, layers_per_block: int, up_has_attention: Mapping[int, bool]) -> str:
    """The ldm name (without ``model.diffusion_model.``) of a diffusers ``UNet2DConditionModel`` key."""
    module, _, leaf = key.rpartition(".")
    if module in _UNET_TOP:
        return f"{_UNET_TOP[module]}.{leaf}"
    parts = key.split(".", 4)
    per = layers_per_block
    if parts[0] in ("down_blocks", "up_blocks") and len(parts) == 5:
        block, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), parts[4]
        if parts[0] == "down_blocks":
            index = 1 + block * (per + 1) + j
            if kind == "resnets":
                return f"input_blocks.{index}.0.{_resnet_key(rest)}"
            if kind == "attentions":
                return f"input_blocks.{index}.1.{rest}"
            if kind == "downsamplers":
                return f"input_blocks.{(block + 1) * (per + 1)}.0.op.{rest.removeprefix('conv.')}"
        else:
            index = block * (per + 1) + j
            if kind == "resnets":
                return f"output_blocks.{index}.0.{_resnet_key(rest)}"
            if kind == "attentions":
                return f"output_blocks.{index}.1.{rest}"
            if kind == "upsamplers":
                slot = 2 if up_has_attention[block] else 1
                return f"output_blocks.{block * (per + 1) + per}.{slot}.{rest}"
    if parts[0] == "mid_block":
        kind, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
        if kind == "resnets":
            return f"middle_block.{2 * j}.{_resnet_key(rest)}"
        if kind == "attentions":
            return f"middle_block.1.{rest}"
    raise ExportError(f"the UNet parameter {key!r} has no place in the ldm layout")


def unet_to_ldm(unet: nn.Module) -> dict[str, Tensor]:
    """The UNet's tensors under their ldm names (no prefix)."""
    depth = unet.config.layers_per_block
    depths = set(depth) if isinstance(depth, (list, tuple)) else {depth}
    if len(depths) != 1:
        raise ExportError(f"a UNet with different block depths per level ({depth}) has no ldm layout")
    per = int(depths.pop())
    up_attention = {i: bool(getattr(b, "attentions", None)) for i, b in enumerate(unet.up_blocks)}
    return {unet_key(k, per, up_attention): v for k, v in unet.state_dict().items()}


# -- VAE -------------------------------------------------------------------------------------------


def vae_key(key: str, levels: int) -> str:
    """The ldm name (without ``first_stage_model.``) of a diffusers ``AutoencoderKL`` key."""
    parts = key.split(".")
    side = parts[0]
    if len(parts) == 2 or parts[1] in ("conv_in", "conv_out"):
        return key
    if parts[1] == "conv_norm_out":
        return f"{side}.norm_out.{parts[2]}"
    if parts[1] in ("down_blocks", "up_blocks"):
        level = int(parts[2]) if side == "encoder" else levels - 1 - int(parts[2])
        group = "down" if side == "encoder" else "up"
        if parts[3] == "resnets":
            rest = ".".join(parts[5:]).replace("conv_shortcut", "nin_shortcut")
            return f"{side}.{group}.{level}.block.{parts[4]}.{rest}"
        if parts[3] in ("downsamplers", "upsamplers"):
            return f"{side}.{group}.{level}.{parts[3][:-2]}.{'.'.join(parts[5:])}"
    if parts[1] == "mid_block":
        if parts[2] == "resnets":
            return f"{side}.mid.block_{int(parts[3]) + 1}.{'.'.join(parts[4:])}"
        if parts[2] == "attentions":
            module, leaf = ".".join(parts[4:-1]), parts[-1]
            if module in _VAE_ATTENTION:
                return f"{side}.mid.attn_1.{_VAE_ATTENTION[module]}.{leaf}"
    raise ExportError(f"the VAE parameter {key!r} has no place in the ldm layout")


def vae_to_ldm(vae: nn.Module) -> dict[str, Tensor]:
    """The VAE's tensors under their ldm names; attention projections become 1x1 convolutions."""
    levels = len(vae.config.block_out_channels)
    out = {}
    for key, value in vae.state_dict().items():
        name = vae_key(key, levels)
        if ".mid.attn_1." in name and value.ndim == 2:  # q, k, v, proj_out weights
            value = value[:, :, None, None]
        out[name] = value
    return out


# -- text encoders ---------------------------------------------------------------------------------


def _text_state(model: nn.Module) -> dict[str, Tensor]:
    """A transformers CLIP text model's tensors without the ``text_model.`` level (4.x and 5.x)."""
    return {k.removeprefix("text_model."): v for k, v in model.state_dict().items()}


def clip_l_to_ldm(model: nn.Module) -> dict[str, Tensor]:
    """CLIP ViT-L in the layout of the original checkpoints (transformers 4.x names, position ids)."""
    sd = {k: v for k, v in _text_state(model).items() if not k.endswith("position_ids")}
    if "text_projection.weight" in sd:
        raise ExportError("the CLIP-L text encoder has a projection, which the ldm layout does not hold")
    out = {f"text_model.{k}": v for k, v in sd.items()}
    rows = int(sd["embeddings.position_embedding.weight"].shape[0])
    out["text_model.embeddings.position_ids"] = torch.arange(rows, dtype=torch.int64).unsqueeze(0)
    return out


def open_clip_to_ldm(model: nn.Module, *, blocks: int | None = None) -> dict[str, Tensor]:
    """An OpenCLIP text tower in open_clip's layout; ``blocks`` pads missing final blocks with zeros."""
    sd = {k: v for k, v in _text_state(model).items() if not k.endswith("position_ids")}
    width = int(sd["embeddings.token_embedding.weight"].shape[1])
    like = sd["embeddings.token_embedding.weight"]
    projection = sd.get("text_projection.weight")
    out = {
        "token_embedding.weight": like,
        "positional_embedding": sd["embeddings.position_embedding.weight"],
        "ln_final.weight": sd["final_layer_norm.weight"],
        "ln_final.bias": sd["final_layer_norm.bias"],
        "text_projection": projection.T.contiguous()
        if projection is not None
        else torch.eye(width, dtype=like.dtype),
        "logit_scale": torch.tensor(OPEN_CLIP_LOGIT_SCALE, dtype=like.dtype),
    }
    layers = int(model.config.num_hidden_layers)
    for i in range(layers):
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat(
                [sd[src + f"self_attn.{p}_proj.{kind}"] for p in "qkv"]
            )
            out[dst + f"attn.out_proj.{kind}"] = sd[src + f"self_attn.out_proj.{kind}"]
            out[dst + f"ln_1.{kind}"] = sd[src + f"layer_norm1.{kind}"]
            out[dst + f"ln_2.{kind}"] = sd[src + f"layer_norm2.{kind}"]
            out[dst + f"mlp.c_fc.{kind}"] = sd[src + f"mlp.fc1.{kind}"]
            out[dst + f"mlp.c_proj.{kind}"] = sd[src + f"mlp.fc2.{kind}"]
    template = {k.split(".", 3)[3]: v for k, v in out.items() if k.startswith("transformer.resblocks.0.")}
    for i in range(layers, blocks or layers):  # never run (see the module docstring)
        out.update({f"transformer.resblocks.{i}.{k}": torch.zeros_like(v) for k, v in template.items()})
    return out


# -- the whole checkpoint --------------------------------------------------------------------------


def _prefixed(prefix: str, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {prefix + k: v for k, v in tensors.items()}


def ldm_tensors(
    family: str, unet: nn.Module, vae: nn.Module, text_encoders: Mapping[str, nn.Module]
) -> dict[str, Tensor]:
    """Every tensor of the model under its ldm name, as the modules hold them (meta tensors too)."""
    sd = {**_prefixed(UNET, unet_to_ldm(unet)), **_prefixed(VAE, vae_to_ldm(vae))}
    if family == "sd1":
        sd.update(_prefixed(SD1_CLIP, clip_l_to_ldm(text_encoders["clip_l"])))
    elif family == "sd2":
        layers = int(text_encoders["clip_g"].config.num_hidden_layers)
        blocks = VIT_H_BLOCKS if layers == VIT_H_TRUNCATED_LAYERS else layers
        sd.update(_prefixed(SD2_CLIP, open_clip_to_ldm(text_encoders["clip_g"], blocks=blocks)))
    else:
        sd.update(_prefixed(SDXL_CLIP_L, clip_l_to_ldm(text_encoders["clip_l"])))
        sd.update(_prefixed(SDXL_CLIP_G, open_clip_to_ldm(text_encoders["clip_g"])))
    return sd


def ldm_state_dict(backend: StandaloneBackend, dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """Every tensor of ``backend``'s model under its ldm name, contiguous on the CPU, floats in ``dtype``."""
    sd = ldm_tensors(backend.family, backend.unet, backend.vae, backend.text_encoders)
    return {k: _cpu(v, dtype) for k, v in sd.items()}


def _cpu(tensor: Tensor, dtype: torch.dtype | None) -> Tensor:
    target = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
    return tensor.detach().to("cpu", target).contiguous()


def verify_round_trip(ldm: Mapping[str, Tensor], backend: StandaloneBackend) -> None:
    """Check that our single-file loader's conversion of ``ldm`` gives back every tensor of ``backend``
    (compared in ``ldm``'s dtype); raise :class:`ExportError` naming the first difference."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    from .loading import detect_checkpoint_family, unet_config_from_ldm, vae_config_from_ldm

    family = detect_checkpoint_family(ldm)
    if family != backend.family:
        raise ExportError(f"the written keys read as {family}, not {backend.family}")
    enc = backend.text_encoders
    pooled = int(enc["clip_g"].config.projection_dim) if family == "sdxl" else None
    _compare(
        "UNet", convert_ldm_unet_checkpoint(ldm, unet_config_from_ldm(ldm, family, pooled)), backend.unet
    )
    _compare("VAE", convert_ldm_vae_checkpoint(ldm, vae_config_from_ldm(ldm, family)), backend.vae)
    for key, model in enc.items():
        if key == "clip_l":
            prefix = SD1_CLIP if family == "sd1" else SDXL_CLIP_L
            loaded = {k[len(prefix) :]: v for k, v in ldm.items() if k.startswith(prefix)}
        else:
            prefix = SD2_CLIP if family == "sd2" else SDXL_CLIP_G
            loaded = convert_open_clip_checkpoint(model, dict(ldm), prefix=prefix)
            if family == "sd2":
                loaded.pop("text_projection.weight", None)
        _compare(f"{key} text encoder", loaded, model)


def _compare(what: str, loaded: Mapping[str, Tensor], model: nn.Module) -> None:
    def strip(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {k.removeprefix("text_model."): v for k, v in sd.items() if not k.endswith("position_ids")}

    got, want = strip(loaded), strip(model.state_dict())
    if got.keys() != want.keys():
        missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
        raise ExportError(f"{what}: the loader would miss {missing[:3]} and find extra {extra[:3]}")
    for key, value in want.items():
        if got[key].shape != value.shape or not torch.equal(got[key], _cpu(value, got[key].dtype)):
            raise ExportError(f"{what}: {key} would not load back unchanged")


def save_single_file(
    backend: StandaloneBackend,
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float16,
    overwrite: bool = False,
    verify: bool = True,
) -> Path:
    """Write ``backend``'s model to ``path`` (``.safetensors``) in the ldm layout, floats in ``dtype``.

    The file is written atomically; an existing file is replaced only with ``overwrite``. With
    ``verify`` the tensors are first checked to load back unchanged (:func:`verify_round_trip`).
    """
    from safetensors.torch import save_file

    from ..training.outputs import atomic_write

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ExportError(
            f"{path.name}: a checkpoint is written as .safetensors; name the file <name>.safetensors"
        )
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it or choose another name")
    tensors = ldm_state_dict(backend, dtype)
    if verify:
        verify_round_trip(tensors, backend)
    # one key: safetensors writes the metadata in hash order, so more keys would make the bytes vary
    metadata = {"ti_trainer.model": str(backend.checkpoint_name)}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
