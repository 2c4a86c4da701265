"""Write tiny-shapes as a web-UI checkpoint: ``<name>.safetensors`` (ldm layout), ``<name>.yaml`` and
``<name>-clip/`` (the text encoder's config and the CLIP tokenizer files).

The web UI builds an SD1 model from a ``.yaml`` beside the checkpoint when there is one; ours
describes the narrow architecture (the stock SD1 config would expect 320-channel UNets and 768-wide
CLIP), and its ``FrozenCLIPEmbedder`` reads the text encoder's shape and the tokenizer from the
``-clip`` folder (by absolute path) instead of the Hugging Face hub. The tensors are written by
:func:`..backends.ldm_export.save_single_file`, which checks that they load back unchanged.

Usage: ``python -m extension.shapes.checkpoint OUT.safetensors [--overwrite]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from .model import LATENT_SCALE, SIDE, TEXT_WIDTH, unet_config, vae_config

_YAML = """\
# tiny-shapes (TI Trainer): SD1 architecture, narrow. Written by python -m extension.shapes.checkpoint.
model:
  base_learning_rate: 1.0e-04
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    linear_start: 0.00085
    linear_end: 0.012
    num_timesteps_cond: 1
    log_every_t: 200
    timesteps: 1000
    first_stage_key: jpg
    cond_stage_key: txt
    image_size: {latent}
    channels: 4
    cond_stage_trainable: false
    conditioning_key: crossattn
    monitor: val/loss_simple_ema
    scale_factor: {scale}
    use_ema: false
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        image_size: {latent}
        in_channels: 4
        out_channels: 4
        model_channels: {model_channels}
        attention_resolutions: {attention}
        num_res_blocks: {res_blocks}
        channel_mult: {unet_mult}
        num_heads: {heads}
        use_spatial_transformer: true
        transformer_depth: 1
        context_dim: {context}
        use_checkpoint: false
        legacy: false
    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: 4
        monitor: val/rec_loss
        ddconfig:
          double_z: true
          z_channels: 4
          resolution: {side}
          in_channels: 3
          out_ch: 3
          ch: {vae_channels}
          ch_mult: {vae_mult}
          num_res_blocks: {vae_res_blocks}
          attn_resolutions: []
          dropout: 0.0
        lossconfig:
          target: torch.nn.Identity
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
      params:
        version: {clip}
"""


def ldm_yaml(clip_folder: Path) -> str:
    """The web UI (ldm) config of tiny-shapes, its text encoder read from ``clip_folder``."""
    unet, vae = unet_config(), vae_config()
    levels = unet["block_out_channels"]
    attention = [2**i for i, kind in enumerate(unet["down_block_types"]) if kind.startswith("CrossAttn")]
    channels = vae["block_out_channels"]
    return _YAML.format(
        latent=SIDE // 2 ** (len(channels) - 1),
        scale=LATENT_SCALE,
        model_channels=levels[0],
        attention=json.dumps(attention),
        res_blocks=unet["layers_per_block"],
        unet_mult=json.dumps([c // levels[0] for c in levels]),
        heads=unet["attention_head_dim"],
        context=TEXT_WIDTH,
        side=SIDE,
        vae_channels=channels[0],
        vae_mult=json.dumps([c // channels[0] for c in channels]),
        vae_res_blocks=vae["layers_per_block"],
        clip=json.dumps(str(clip_folder.resolve())),
    )


def write_clip_folder(folder: Path, text_encoder) -> Path:
    """``config.json`` of ``text_encoder`` and the CLIP tokenizer files, as ``from_pretrained`` reads them."""
    from ..tokenizer import tokenizer_files

    folder.mkdir(parents=True, exist_ok=True)
    text_encoder.config.to_json_file(str(folder / "config.json"))
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(tokenizer_files() / name, folder / name)
    special = {"unk_token": "<|endoftext|>", "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>"}  # fmt: skip
    settings = {**special, "model_max_length": 77, "do_lower_case": True, "tokenizer_class": "CLIPTokenizer"}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=1), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=1), encoding="utf-8")
    return folder


def export_checkpoint(out: Path, *, overwrite: bool = False) -> list[Path]:
    """Write the checkpoint, its ``.yaml`` and its ``-clip`` folder; returns the paths written."""
    import torch

    from ..backends.ldm_export import save_single_file
    from ..training.outputs import atomic_write
    from .model import build_shapes_backend

    out = Path(out)
    yaml_path, clip = out.with_suffix(".yaml"), out.with_name(out.stem + "-clip")
    taken = [p for p in (out, yaml_path, clip) if p.exists()]
    if taken and not overwrite:
        raise FileExistsError(f"{taken[0]} already exists; pass --overwrite to replace it or choose another name")
    backend = build_shapes_backend("cpu", dtype=torch.float32)
    save_single_file(backend, out, dtype=torch.float16, overwrite=overwrite)
    write_clip_folder(clip, backend.text_encoders["clip_l"])
    atomic_write(yaml_path, lambda tmp: tmp.write_text(ldm_yaml(clip), encoding="utf-8"))
    return [out, yaml_path, clip]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write tiny-shapes as a web UI checkpoint (+ .yaml, -clip folder).")
    parser.add_argument("out", type=Path, help="the .safetensors file to write, e.g. models/Stable-diffusion/tiny-shapes.safetensors")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    if args.out.suffix.lower() != ".safetensors":
        print(f"error: {args.out.name} must end in .safetensors", file=sys.stderr)
        return 2
    return write_and_report(lambda: export_checkpoint(args.out, overwrite=args.overwrite))


def write_and_report(write: Callable[[], list[Path]]) -> int:
    """Run ``write``; print each path it wrote (exit status 0), or its problem in one line (2)."""
    try:
        written = write()
    except (FileExistsError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
