"""Writing a model as one ldm-layout checkpoint (``export-checkpoint``): on narrow models, every tensor
comes back unchanged through our single-file loader, in all three families."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from extension.backends.full_size import calibrate_v_probe, v_probe_reading
from extension.backends.ldm_export import ExportError, ldm_state_dict, save_single_file, verify_round_trip
from extension.backends.loading import load_single_file
from extension.backends.standalone import StandaloneBackend
from extension.backends.tiny import build_tiny_backend, text_encoder_config, tiny_components
from extension.cli import main


def _same_tensors(original, loaded, dtype=None) -> None:
    for name, model in original.modules().items():
        want = {k.removeprefix("text_model."): v for k, v in model.state_dict().items()}
        got = {k.removeprefix("text_model."): v for k, v in loaded.modules()[name].state_dict().items()}
        assert got.keys() == want.keys(), name
        for key, value in want.items():
            expected = value.to(dtype) if dtype is not None and value.is_floating_point() else value
            assert torch.equal(got[key], expected), f"{name} {key}"


def _header(path) -> dict:
    with path.open("rb") as fh:
        return json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_export_command_round_trip(family, tmp_path, capsys):
    out = tmp_path / f"tiny-{family}.safetensors"
    assert main(["export-checkpoint", f"tiny-{family}@4", str(out), "--dtype", "fp32"]) == 0
    assert "wrote" in capsys.readouterr().out
    original = build_tiny_backend(family, seed=4)
    loaded = load_single_file(out)
    _same_tensors(original, loaded)
    assert loaded.noise_schedule.prediction_type == original.noise_schedule.prediction_type
    prompts = ["a photo of a cat, (red:1.2) BREAK on grass"]
    torch.testing.assert_close(
        loaded.encode_text(prompts, {}).crossattn, original.encode_text(prompts, {}).crossattn
    )


def test_fp16_file_holds_fp16_weights(tmp_path):
    out = tmp_path / "half.safetensors"
    assert main(["export-checkpoint", "tiny-sd1", str(out)]) == 0  # fp16 is the default
    header = _header(out)
    assert header["__metadata__"] == {"ti_trainer.model": "tiny-sd1"}
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"F16", "I64"}
    _same_tensors(build_tiny_backend("sd1"), load_single_file(out, dtype=torch.float16), torch.float16)


def test_the_same_model_gives_the_same_bytes(tmp_path):
    backend = build_tiny_backend("sdxl", seed=2)
    first = save_single_file(backend, tmp_path / "a.safetensors")
    second = save_single_file(build_tiny_backend("sdxl", seed=2), tmp_path / "b.safetensors")
    assert first.read_bytes() == second.read_bytes()


def test_sd2_encoder_gets_vit_h_s_24th_block(tmp_path):
    """diffusers' SD2 text encoder has 23 of ViT-H's 24 blocks: the file has 24 (the last all zeros,
    SD2 never runs it) and loads back to the same 23, with the same conditioning."""
    from transformers import CLIPTextModel

    from extension.backends.tiny import spread_layer_norms

    parts = tiny_components("sd2", seed=1)
    config = text_encoder_config(48, 23, "gelu")
    torch.manual_seed(1)
    # untouched layer norms make the final output's mean exactly 0, and "Original" emphasis divides by it
    parts["text_encoders"] = {"clip_g": spread_layer_norms(CLIPTextModel(config)).eval()}
    original = StandaloneBackend("sd2", **parts)
    path = save_single_file(original, tmp_path / "sd2.safetensors", dtype=torch.float32)
    header = _header(path)
    blocks = {
        k.split(".")[4] for k in header if k.startswith("cond_stage_model.model.transformer.resblocks.")
    }
    assert blocks == {str(i) for i in range(24)}
    loaded = load_single_file(path)
    assert loaded.text_encoders["clip_g"].config.num_hidden_layers == 23
    _same_tensors(original, loaded)
    prompts = ["a photo of a cat"]
    torch.testing.assert_close(
        loaded.encode_text(prompts, {}).crossattn, original.encode_text(prompts, {}).crossattn
    )


def test_verify_names_a_tensor_that_would_not_load_back():
    backend = build_tiny_backend("sd1")
    ldm = ldm_state_dict(backend)
    verify_round_trip(ldm, backend)
    block = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1."
    swapped = dict(ldm)
    swapped[block + "to_q.weight"], swapped[block + "to_k.weight"] = (
        ldm[block + "to_k.weight"],
        ldm[block + "to_q.weight"],
    )
    with pytest.raises(ExportError, match=r"to_q\.weight would not load back"):
        verify_round_trip(swapped, backend)
    missing = {k: v for k, v in ldm.items() if not k.startswith("first_stage_model.decoder.mid.attn_1.")}
    with pytest.raises(ExportError, match="VAE: the loader would miss"):
        verify_round_trip(missing, backend)


def test_export_refuses_to_overwrite_and_names_bad_input(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"the user's file")
    assert main(["export-checkpoint", "tiny-sd1", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"the user's file"
    assert main(["export-checkpoint", "tiny-sd1", str(out), "--overwrite"]) == 0
    assert load_single_file(out).family == "sd1"

    assert main(["export-checkpoint", "tiny-sd1", str(tmp_path / "m.ckpt")]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err
    assert main(["export-checkpoint", "random-sd9", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "cannot load model 'random-sd9'" in err and "random-sd15" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_v_probe_calibration_sets_the_reading():
    unet = tiny_components("sd2")["unet"]
    for reading in (-2.0, -0.25):
        calibrate_v_probe(unet, reading)
        assert v_probe_reading(unet) == pytest.approx(reading, abs=1e-4)


def test_random_sd2v_carries_the_weight_spread_forge_reads_as_v_prediction():
    from extension.backends.full_size import (
        mark_v_prediction,
        meta_modules,
        parse_random_model_name,
        v_marker,
    )
    from extension.backends.ldm_export import unet_key

    # Forge (huggingface_guess) reads this ldm key of an SD2 UNet: std > 0.09 means v-prediction
    arch, _ = parse_random_model_name("random-sd2v")
    unet = meta_modules(arch)["unet"]
    (name,) = [n for n, p in unet.named_parameters() if p is v_marker(unet)]
    up_attention = {i: bool(getattr(b, "attentions", None)) for i, b in enumerate(unet.up_blocks)}
    assert unet_key(name, 2, up_attention) == "output_blocks.11.1.transformer_blocks.0.norm1.bias"

    small = tiny_components("sd2")["unet"]
    assert float(v_marker(small).std(unbiased=False)) == 0.0  # a fresh norm: Forge would say eps
    mark_v_prediction(small, seed=0)
    spread = v_marker(small).detach().clone()
    assert float(spread.std(unbiased=False)) > 0.09
    mark_v_prediction(small, seed=0)
    assert torch.equal(v_marker(small), spread)  # seeded
