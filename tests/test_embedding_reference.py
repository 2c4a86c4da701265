"""Every real web-UI file in the shared reference folder loads as the web UI loads it."""

from __future__ import annotations

import pytest
from embedding_helpers import REF, reference_files, sidecar, tensor_sha256

from extension.embedding import load_embedding, optim_checksum

FILES = reference_files()


def test_reference_folder_is_there():
    assert len(FILES) >= 9


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_reference_file_loads_as_the_webui_does(path):
    info = sidecar(path)
    expected = info["a1111_expected"]
    emb = load_embedding(path)
    assert emb.name == expected["name"]
    assert emb.step == expected["step"]
    assert emb.checkpoint_hash == expected["sd_checkpoint"]
    assert emb.checkpoint_name == expected["sd_checkpoint_name"]
    assert emb.n_vectors == expected["vectors"]
    assert emb.width == expected["shape"]
    after = expected["tensors_after_load"]
    if emb.is_sdxl:
        assert set(after) == {"clip_l", "clip_g"}
        for key, t in emb.vectors.items():
            assert list(t.shape) == after[key]["shape"]
            assert tensor_sha256(t) == after[key]["sha256_float32_le"]
    else:
        assert list(emb.vectors.shape) == after["vec"]["shape"]
        assert tensor_sha256(emb.vectors) == after["vec"]["sha256_float32_le"]
    # the stored name (images: the payload's) is kept even where the file stem wins
    stored = info.get("payload", {}).get("name") or info.get("embedding", {}).get("name")
    if stored:
        assert emb.metadata["stored_name"] == stored


@pytest.mark.parametrize(
    ("file", "layout"),
    [
        ("sd15-4v.pt", "a1111-pt"),
        ("sd15-4v.diffusers.bin", "diffusers"),
        ("sd15-4v.kohya.safetensors", "kohya"),
        ("sdxl-2v.kohya.safetensors", "sdxl-pair"),
        ("sd15-4v.text.png", "png-text"),
        ("sd15-4v.both.png", "png-text"),
        ("sd15-4v.pixels.png", "png-pixels"),
        ("sdxl-2v.text.png", "png-text"),
    ],
)
def test_source_layout(file, layout):
    assert load_embedding(REF / file).metadata["source_layout"] == layout


def test_optim_checksum_matches_the_webui():
    emb = load_embedding(REF / "sd15-4v.pt")
    assert optim_checksum(emb.vectors) == sidecar(REF / "sd15-4v.pt")["optim_checksum"] == "18d6"


def test_model_families():
    assert load_embedding(REF / "sd15-4v.pt").model_family == "sd1"
    xl = load_embedding(REF / "sdxl-2v.kohya.safetensors")
    assert xl.model_family == "sdxl" and xl.is_sdxl and xl.width == 2048
