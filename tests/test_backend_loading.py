"""load_backend: tiny names, diffusers folders (round trip), and clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from extension.backends import ModelLoadError, load_backend, save_diffusers
from extension.backends.loading import detect_folder_family
from extension.backends.tiny import build_tiny_backend


def test_tiny_names():
    b = load_backend("tiny-sd2", device="cpu")
    assert (b.family, b.noise_schedule.prediction_type, b.dtype) == ("sd2", "v_prediction", torch.float32)
    seeded = load_backend("tiny-sd1@4", device="cpu")
    reference = build_tiny_backend("sd1", seed=4)
    assert all(torch.equal(x, y) for x, y in zip(seeded.parameters(), reference.parameters()))
    assert load_backend("tiny-sd1", prediction_type="v_prediction").noise_schedule.prediction_type == "v_prediction"


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_diffusers_folder_round_trip(tmp_path, family):
    original = build_tiny_backend(family, seed=2)
    folder = save_diffusers(original, tmp_path / "model")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ("StableDiffusionXLPipeline" if family == "sdxl" else "StableDiffusionPipeline")
    assert detect_folder_family(folder) == family

    loaded = load_backend(str(folder), device="cpu")
    assert (loaded.family, loaded.encoder_widths, loaded.latent_scale) == (family, original.encoder_widths, original.latent_scale)
    assert loaded.noise_schedule.prediction_type == original.noise_schedule.prediction_type
    assert torch.equal(loaded.noise_schedule.alphas_cumprod, original.noise_schedule.alphas_cumprod)
    assert loaded.checkpoint_name == "model" and loaded.checkpoint_hash is None
    for (name_a, a), (name_b, b) in zip(original.unet.state_dict().items(), loaded.unet.state_dict().items()):
        assert name_a == name_b and torch.equal(a, b)

    embeddings = {"thing": {k: torch.randn(2, w, generator=torch.Generator().manual_seed(0)) for k, w in original.encoder_widths.items()}}
    prompts = ["a thing on (grass:1.3)", "thing BREAK sky"]
    c1, c2 = original.encode_text(prompts, embeddings), loaded.encode_text(prompts, embeddings)
    torch.testing.assert_close(c2.crossattn, c1.crossattn, rtol=0, atol=1e-6)
    if family == "sdxl":
        torch.testing.assert_close(c2.pooled, c1.pooled, rtol=0, atol=1e-6)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([20, 800])
    # identical weights; the last bits can differ with the loaded tensors' memory layout
    torch.testing.assert_close(loaded.denoise(x, t, c1), original.denoise(x, t, c1), rtol=1e-5, atol=1e-5)
    pixels = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    torch.testing.assert_close(loaded.encode_images(pixels).mean, original.encode_images(pixels).mean, rtol=1e-5, atol=1e-5)


def test_save_refuses_to_overwrite(tmp_path):
    backend = build_tiny_backend("sd1")
    target = tmp_path / "model"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists"):
        save_diffusers(backend, target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging folder left behind


def test_folder_prediction_type_comes_from_the_scheduler(tmp_path):
    folder = save_diffusers(build_tiny_backend("sd1"), tmp_path / "m")
    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config["prediction_type"] = "v_prediction"
    config_path.write_text(json.dumps(config))
    assert load_backend(str(folder)).noise_schedule.prediction_type == "v_prediction"
    assert load_backend(str(folder), prediction_type="epsilon").noise_schedule.prediction_type == "epsilon"


def test_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_backend(str(tmp_path / "missing.safetensors"))
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x04")
    with pytest.raises(ModelLoadError, match="pickled"):
        load_backend(str(ckpt))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"unet.config\.json is missing"):
        load_backend(str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match="prediction type"):
        load_backend("tiny-sd1", prediction_type="x0")
    with pytest.raises(ModelLoadError, match="not found"):
        load_backend("tiny-sd3")
