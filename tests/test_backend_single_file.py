"""Single-file (ldm layout) checkpoints: a tiny model exported to the web UI's key layout loads back.

The export below (diffusers -> ldm key names) is written for these tests only; loading uses
diffusers' own ldm -> diffusers helpers, so a round trip that reproduces the model's outputs
checks that our configs and the two mappings agree.
"""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import save_file

from extension.backends import ModelLoadError, load_backend
from extension.backends.loading import SingleFileBackend, detect_checkpoint_family
from extension.backends.tiny import build_tiny_backend

RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
          ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny matrices: extra threads only add overhead (a lot of it on a busy 2-core machine)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _resnet(rest: str) -> str:
    for new, old in RESNET:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    raise AssertionError(rest)


def unet_to_ldm(unet) -> dict[str, torch.Tensor]:
    per = unet.config.layers_per_block
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
    has_attn = {i: hasattr(b, "attentions") for i, b in enumerate(unet.up_blocks)}
    out = {}
    for key, value in unet.state_dict().items():
        module, _, leaf = key.rpartition(".")
        if module in fixed:
            new = f"{fixed[module]}.{leaf}"
        elif m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)", key):
            b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            if kind == "resnets":
                new = f"input_blocks.{1 + b * (per + 1) + j}.0.{_resnet(rest)}"
            elif kind == "attentions":
                new = f"input_blocks.{1 + b * (per + 1) + j}.1.{rest}"
            else:
                new = f"input_blocks.{1 + b * (per + 1) + per}.0.op.{rest.removeprefix('conv.')}"
        elif m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key):
            kind, j, rest = m[1], int(m[2]), m[3]
            new = f"middle_block.{2 * j}.{_resnet(rest)}" if kind == "resnets" else f"middle_block.1.{rest}"
        elif m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)", key):
            b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            if kind == "resnets":
                new = f"output_blocks.{b * (per + 1) + j}.0.{_resnet(rest)}"
            elif kind == "attentions":
                new = f"output_blocks.{b * (per + 1) + j}.1.{rest}"
            else:
                slot = 2 if has_attn[b] else 1
                new = f"output_blocks.{b * (per + 1) + per}.{slot}.{rest}"
        else:
            raise AssertionError(f"unmapped UNet key {key}")
        out["model.diffusion_model." + new] = value.clone()
    return out


def vae_to_ldm(vae) -> dict[str, torch.Tensor]:
    levels = len(vae.config.block_out_channels)
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, value in vae.state_dict().items():
        new = key.replace("conv_norm_out", "norm_out")
        if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            new = f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)", key):
            new = f"encoder.down.{m[1]}.downsample.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            new = f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", key):
            new = f"decoder.up.{levels - 1 - int(m[1])}.upsample.{m[2]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", key):
            new = f"{m[1]}.mid.attn_1.{attn[m[2]]}.{m[3]}"
            if m[2] != "group_norm" and m[3] == "weight":
                value = value[:, :, None, None]  # ldm uses 1x1 convolutions
        out["first_stage_model." + new] = value.clone()
    return out


def clip_l_to_ldm(model, prefix: str) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    return {prefix + "text_model." + k.removeprefix("text_model."): v.clone() for k, v in sd.items()}


def open_clip_to_ldm(model, prefix: str) -> dict[str, torch.Tensor]:
    sd = {k.removeprefix("text_model."): v for k, v in model.state_dict().items()}
    width = sd["embeddings.token_embedding.weight"].shape[1]
    out = {
        "token_embedding.weight": sd["embeddings.token_embedding.weight"],
        "positional_embedding": sd["embeddings.position_embedding.weight"],
        "ln_final.weight": sd["final_layer_norm.weight"],
        "ln_final.bias": sd["final_layer_norm.bias"],
        # SD2's encoder has no projection in diffusers; open_clip always has one
        "text_projection": sd["text_projection.weight"].T if "text_projection.weight" in sd else torch.eye(width),
    }
    layers = {int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")}
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat([sd[src + f"self_attn.{p}_proj.{kind}"] for p in "qkv"])
            out[dst + f"attn.out_proj.{kind}"] = sd[src + f"self_attn.out_proj.{kind}"]
            out[dst + f"ln_1.{kind}"] = sd[src + f"layer_norm1.{kind}"]
            out[dst + f"ln_2.{kind}"] = sd[src + f"layer_norm2.{kind}"]
            out[dst + f"mlp.c_fc.{kind}"] = sd[src + f"mlp.fc1.{kind}"]
            out[dst + f"mlp.c_proj.{kind}"] = sd[src + f"mlp.fc2.{kind}"]
    return {prefix + k: v.clone().contiguous() for k, v in out.items()}


def export_ldm(backend) -> dict[str, torch.Tensor]:
    sd = {**unet_to_ldm(backend.unet), **vae_to_ldm(backend.vae)}
    enc = backend.text_encoders
    if backend.family == "sd1":
        sd.update(clip_l_to_ldm(enc["clip_l"], "cond_stage_model.transformer."))
    elif backend.family == "sd2":
        sd.update(open_clip_to_ldm(enc["clip_g"], "cond_stage_model.model."))
    else:
        sd.update(clip_l_to_ldm(enc["clip_l"], "conditioner.embedders.0.transformer."))
        sd.update(open_clip_to_ldm(enc["clip_g"], "conditioner.embedders.1.model."))
    return {k: v.contiguous() for k, v in sd.items()}


_EXPORTS: dict[str, tuple] = {}


def _export(family: str, tmp_path_factory):
    if family not in _EXPORTS:
        backend = build_tiny_backend(family, seed=3)
        path = tmp_path_factory.mktemp("ckpt") / f"tiny-{family}.safetensors"
        save_file(export_ldm(backend), str(path))
        _EXPORTS[family] = backend, path
    return _EXPORTS[family]


@pytest.fixture(scope="module", params=["sd1", "sd2", "sdxl"])
def exported(request, tmp_path_factory):
    return _export(request.param, tmp_path_factory)


def test_single_file_round_trip(exported):
    original, path = exported
    loaded = load_backend(str(path), device="cpu")
    assert isinstance(loaded, SingleFileBackend)
    assert loaded.family == original.family
    assert loaded.encoder_widths == original.encoder_widths
    assert loaded.noise_schedule.prediction_type == original.noise_schedule.prediction_type
    assert torch.equal(loaded.noise_schedule.alphas_cumprod, original.noise_schedule.alphas_cumprod)
    assert loaded.latent_scale == original.latent_scale
    assert loaded.checkpoint_name == path.stem

    gen = torch.Generator().manual_seed(1)
    embeddings = {"thing": {k: torch.randn(2, w, generator=gen) for k, w in original.encoder_widths.items()}}
    prompts = ["a photo of thing, (red:1.2) BREAK on grass"]
    c1, c2 = original.encode_text(prompts, embeddings), loaded.encode_text(prompts, embeddings)
    torch.testing.assert_close(c2.crossattn, c1.crossattn, rtol=1e-5, atol=1e-5)
    if original.family == "sdxl":
        torch.testing.assert_close(c2.pooled, c1.pooled, rtol=1e-5, atol=1e-5)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([321])
    torch.testing.assert_close(loaded.denoise(x, t, c1), original.denoise(x, t, c1), rtol=1e-4, atol=1e-5)
    pixels = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    d1, d2 = original.encode_images(pixels), loaded.encode_images(pixels)
    torch.testing.assert_close(d2.mean, d1.mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(d2.std, d1.std, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loaded.decode_latents(d1.mode(1.0)), original.decode_latents(d1.mode(1.0)), rtol=1e-4, atol=1e-4)


def test_single_file_hash_is_web_ui_shorthash(exported):
    import hashlib

    _, path = exported
    loaded = load_backend(str(path), device="cpu")
    assert loaded.checkpoint_hash == hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def test_sd2_prediction_type_override_and_sidecar(tmp_path, tmp_path_factory):
    _, path = _export("sd2", tmp_path_factory)
    assert load_backend(str(path)).noise_schedule.prediction_type == "v_prediction"  # tiny SD2 default
    assert load_backend(str(path), prediction_type="epsilon").noise_schedule.prediction_type == "epsilon"
    copy = tmp_path / "model.safetensors"
    copy.write_bytes(path.read_bytes())
    (tmp_path / "model.yaml").write_text('model:\n  params:\n    parameterization: "eps"\n')
    assert load_backend(str(copy)).noise_schedule.prediction_type == "epsilon"
    (tmp_path / "model.yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    assert load_backend(str(copy)).noise_schedule.prediction_type == "v_prediction"


def test_family_detection_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="no Stable Diffusion UNet"):
        detect_checkpoint_family({"lora_unet_x.weight": torch.zeros(1)})
    inpaint = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 9, 3, 3)}
    with pytest.raises(ModelLoadError, match="inpainting"):
        detect_checkpoint_family(inpaint)
    refiner = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(384, 4, 3, 3),
               "conditioner.embedders.1.model.ln_final.weight": torch.zeros(1)}
    with pytest.raises(ModelLoadError, match="refiner"):
        detect_checkpoint_family(refiner)
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_backend(str(bad))
