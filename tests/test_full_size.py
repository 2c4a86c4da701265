"""The full-size random models: the released architectures, seeded weights, and single-file checkpoints
in the original key layout that our loader rebuilds to the published configs and the same tensors.

SD 1.5 goes through a real fp16 file (2.1 GB); all three architectures through the loader's
configs and conversions on the meta device (every tensor's name and shape); SD 2.1-v's UNet with
real weights through the v-prediction probe. The tensor mapping itself (SD2's 24th block included)
is checked value by value on narrow models in test_ldm_export.py.
"""

from __future__ import annotations

import gc
import json
import struct

import pytest
import torch

from extension.backends import load_backend
from extension.backends.full_size import (
    ARCHITECTURES,
    RANDOM_MODEL_NAMES,
    meta_modules,
    parse_random_model_name,
    seeded_unet,
)
from extension.backends.ldm_export import ldm_tensors, save_single_file, unet_to_ldm
from extension.backends.loading import (
    SD2_CLIP,
    SDXL_CLIP_G,
    SDXL_CLIP_L,
    _clip_l_from_ldm,
    _open_clip_from_ldm,
    detect_checkpoint_family,
    load_single_file,
    probe_v_prediction,
    unet_config_from_ldm,
    vae_config_from_ldm,
)
from extension.backends.seeded_init import SeededInitError, materialize_seeded
from extension.backends.tiny import unet_config

# Parameter counts of the released models (as published for the diffusers repositories).
RELEASED_PARAMETERS = {
    "sd15": {"unet": 859_520_964, "vae": 83_653_863, "clip_l": 123_060_480},
    "sd2v": {"unet": 865_910_724, "vae": 83_653_863, "clip_g": 340_387_840},
    "sdxl": {"unet": 2_567_463_684, "vae": 83_653_863, "clip_l": 123_060_480, "clip_g": 694_659_840},
}
# Published config values that the single-file loader sets differently, and why that is harmless.
LOADER_DIFFERS = {
    ("sdxl", "unet", "upcast_attention"),  # published None, loader False: the same behaviour
    ("sd2v", "vae", "sample_size"),  # 768 vs 512: used only for tiled decoding
}
# The text encoders' published fields that define the architecture (the others are token ids our
# tokenizer decides, and training-only settings such as dropout).
TEXT_ARCHITECTURE = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "hidden_act", "max_position_embeddings", "vocab_size", "layer_norm_eps")  # fmt: skip


@pytest.fixture(autouse=True)
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # full-size matrices: both cores help (conftest sets 1 for the tiny models)
    yield
    torch.set_num_threads(before)
    gc.collect()


def _counts(modules: dict) -> dict[str, int]:
    flat = {"unet": modules["unet"], "vae": modules["vae"], **modules["text_encoders"]}
    return {name: sum(p.numel() for p in m.parameters()) for name, m in flat.items()}


def _normalised(value):
    return list(value) if isinstance(value, tuple) else value


def _check_configs(key: str, component: str, published: dict, loaded) -> None:
    for name, value in published.items():
        if (key, component, name) in LOADER_DIFFERS:
            continue
        got = loaded.get(name) if isinstance(loaded, dict) else getattr(loaded, name)
        assert _normalised(got) == _normalised(value), f"{key} {component}.{name}: {got!r} != {value!r}"


def _check_text_config(arch, name: str, config) -> None:
    fields = TEXT_ARCHITECTURE + (("projection_dim",) if arch.family == "sdxl" and name == "clip_g" else ())
    published = arch.text_encoders[name]
    _check_configs(arch.key, name, {f: published[f] for f in fields}, config)


def _shapes(model) -> dict[str, tuple]:
    return {
        k.removeprefix("text_model."): tuple(v.shape)
        for k, v in model.state_dict().items()
        if not k.endswith("position_ids")
    }


# ---------------------------------------------------------------------------- names and weights


def test_random_model_names():
    assert RANDOM_MODEL_NAMES == ("random-sd15", "random-sd2v", "random-sdxl")
    arch, seed = parse_random_model_name(" random-sdxl@12 ")
    assert (arch.family, arch.key, seed) == ("sdxl", "sdxl", 12)
    assert parse_random_model_name("random-sd15")[1] == 0
    assert parse_random_model_name("random-sd2v")[0].prediction_type == "v_prediction"
    for other in ("random-sd3", "random-sd15@x", "tiny-sd1", "./random-sd15.safetensors"):
        assert parse_random_model_name(other) is None


@pytest.mark.parametrize("key", list(ARCHITECTURES))
def test_published_configs_have_the_released_parameter_counts(key):
    assert _counts(meta_modules(ARCHITECTURES[key])) == RELEASED_PARAMETERS[key]


def _small_unet():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**unet_config("sd1", 32))


def test_seeded_weights_repeat_and_do_not_depend_on_the_dtype():
    a = materialize_seeded(_small_unet(), seed=1, tag="t")
    b = materialize_seeded(_small_unet(), seed=1, tag="t")
    half = materialize_seeded(_small_unet(), seed=1, tag="t", dtype=torch.float16)
    other = materialize_seeded(_small_unet(), seed=2, tag="t")
    for (name, pa), pb, ph, po in zip(
        a.named_parameters(), b.parameters(), half.parameters(), other.parameters()
    ):
        assert torch.equal(pa, pb), name
        assert ph.dtype == torch.float16 and torch.equal(pa.half(), ph), name
        if name.endswith("weight") and pa.ndim > 1:
            assert not torch.equal(pa, po), name
            # LeCun normal: the variance of a layer's output equals its input's
            assert abs(float(pa.detach().float().var()) * pa[0].numel() - 1.0) < 0.35, name


def test_seeded_init_refuses_tensors_it_does_not_know():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(3))

    with torch.device("meta"):
        odd = Odd()
    with pytest.raises(SeededInitError, match="scale"):
        materialize_seeded(odd, seed=0, tag="t")


# ---------------------------------------------------------------------------- the ldm layout, by shapes


@pytest.mark.parametrize("key", list(ARCHITECTURES))
def test_loader_rebuilds_published_configs_and_shapes_from_the_ldm_layout(key):
    """What ``load_single_file`` does with a file's tensors, on meta tensors: every architecture."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    arch = ARCHITECTURES[key]
    parts = meta_modules(arch)
    ldm = ldm_tensors(arch.family, parts["unet"], parts["vae"], parts["text_encoders"])
    assert detect_checkpoint_family(ldm) == arch.family

    if arch.family == "sd1":
        encoders = {"clip_l": _clip_l_from_ldm(ldm, "cond_stage_model.transformer.")}
    elif arch.family == "sd2":
        encoders = {"clip_g": _open_clip_from_ldm(ldm, SD2_CLIP, with_projection=False)}
    else:
        encoders = {
            "clip_l": _clip_l_from_ldm(ldm, SDXL_CLIP_L),
            "clip_g": _open_clip_from_ldm(ldm, SDXL_CLIP_G, with_projection=True),
        }
    for name, model in encoders.items():
        _check_text_config(arch, name, model.config)
        assert _shapes(model) == _shapes(parts["text_encoders"][name]), name

    pooled = int(encoders["clip_g"].config.projection_dim) if arch.family == "sdxl" else None
    config = unet_config_from_ldm(ldm, arch.family, pooled)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    _check_configs(key, "unet", arch.unet, unet.config)
    converted = convert_ldm_unet_checkpoint(ldm, config)
    assert {k: tuple(v.shape) for k, v in converted.items()} == _shapes(parts["unet"]) == _shapes(unet)

    config = vae_config_from_ldm(ldm, arch.family)
    with torch.device("meta"):
        vae = AutoencoderKL(**config)
    _check_configs(key, "vae", arch.vae, vae.config)
    converted = convert_ldm_vae_checkpoint(ldm, config)
    assert {k: tuple(v.shape) for k, v in converted.items()} == _shapes(parts["vae"]) == _shapes(vae)


def test_ldm_layout_is_what_the_web_ui_detects():
    """The keys and shapes the web UI's config guesser reads (SD2 by the width of the first attention)."""
    layouts = {}
    for key, arch in ARCHITECTURES.items():
        parts = meta_modules(arch)
        layouts[key] = ldm_tensors(arch.family, parts["unet"], parts["vae"], parts["text_encoders"])
    sd15, sd2, sdxl = layouts["sd15"], layouts["sd2v"], layouts["sdxl"]
    assert "cond_stage_model.transformer.text_model.embeddings.position_ids" in sd15
    assert sd2["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"].shape == (3072, 1024)
    assert "cond_stage_model.model.transformer.resblocks.23.mlp.c_proj.weight" in sd2  # ViT-H's 24 blocks
    assert sdxl["conditioner.embedders.1.model.ln_final.weight"].shape == (1280,)
    assert sdxl["conditioner.embedders.1.model.text_projection"].shape == (1280, 1280)
    assert sdxl["model.diffusion_model.label_emb.0.0.weight"].shape == (1280, 2816)
    for layout in layouts.values():
        assert layout["model.diffusion_model.input_blocks.0.0.weight"].shape[1] == 4  # not inpainting
    # the counts of the released single-file checkpoints (DDPM schedule buffers aside)
    assert (len(sd15), len(sd2), len(sdxl)) == (1131, 1228, 2515)


# ---------------------------------------------------------------------------- real tensors


@pytest.mark.slow
def test_sd15_single_file_round_trip_fp16(tmp_path):
    """random-sd15 -> fp16 .safetensors -> our single-file loader: the same tensors, the published configs."""
    arch = ARCHITECTURES["sd15"]
    original = load_backend("random-sd15", device="cpu", dtype=torch.float16)
    assert original.default_size == 512 and original.checkpoint_name == "random-sd15"
    path = save_single_file(original, tmp_path / "random-sd15.safetensors", dtype=torch.float16)

    with path.open("rb") as fh:
        header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
    dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    assert dtypes == {"F16", "I64"}  # I64: CLIP's position ids, as in the released file
    assert header["__metadata__"]["ti_trainer.model"] == "random-sd15"

    loaded = load_single_file(path, dtype=torch.float16)
    assert loaded.family == "sd1" and loaded.noise_schedule.prediction_type == "epsilon"
    for name, model in original.modules().items():
        want = {k.removeprefix("text_model."): v for k, v in model.state_dict().items()}
        got = {k.removeprefix("text_model."): v for k, v in loaded.modules()[name].state_dict().items()}
        assert got.keys() == want.keys(), name
        for k, v in want.items():
            if k.endswith("position_ids"):
                assert torch.equal(got[k], v), k
            else:
                assert got[k].dtype == torch.float16 and torch.equal(got[k], v.half()), f"{name} {k}"
    _check_configs("sd15", "unet", arch.unet, loaded.unet.config)
    _check_configs("sd15", "vae", arch.vae, loaded.vae.config)
    _check_text_config(arch, "clip_l", loaded.text_encoders["clip_l"].config)
    assert (
        _counts({"unet": loaded.unet, "vae": loaded.vae, "text_encoders": loaded.text_encoders})
        == (RELEASED_PARAMETERS["sd15"])
    )


@pytest.mark.slow
def test_sd2v_file_layout_reads_as_v_prediction():
    """random-sd2v's UNet, through the ldm layout and the loader's conversion, passes the v probe
    (ours, which is the web UI's test)."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    arch = ARCHITECTURES["sd2v"]
    ldm = {"model.diffusion_model." + k: v for k, v in unet_to_ldm(seeded_unet(arch, seed=5)).items()}
    config = unet_config_from_ldm(ldm, "sd2", None)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    _check_configs("sd2v", "unet", arch.unet, unet.config)
    unet.load_state_dict(convert_ldm_unet_checkpoint(ldm, config), assign=True)
    assert probe_v_prediction(unet, 1024)  # reads V_PROBE_READING (-2): v below -1
