"""diffusers' SDXL textual-inversion output (``learned_embeds[_2][-steps-N].safetensors``) read as one
SDXL embedding by ``load_embedding``, ``inspect``, ``convert`` and the import."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

from extension.cli import main
from extension.embedding import EmbeddingFormatError, load_embedding
from extension.embedding.pt_container import webui_load_problems
from extension.embedding.safe_pickle import safe_torch_load
from extension.ui.share import ShareError, import_embedding

TOKEN = "<cat-toy>"


def write_like_diffusers(folder: Path, clip_l: torch.Tensor, clip_g: torch.Tensor, steps: int | None = None):
    """The two files ``textual_inversion_sdxl.py``'s ``save_progress`` writes: ``{token: rows}`` with
    metadata ``{"format": "pt"}``; the second encoder's rows come in the training dtype (fp16 here)."""
    tail = f"-steps-{steps}" if steps is not None else ""
    first, second = (
        folder / f"learned_embeds{tail}.safetensors",
        folder / f"learned_embeds_2{tail}.safetensors",
    )
    folder.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({TOKEN: clip_l}, first, metadata={"format": "pt"})
    safetensors.torch.save_file({TOKEN: clip_g.half()}, second, metadata={"format": "pt"})
    return first, second


@pytest.fixture
def pair(tmp_path):
    clip_l, clip_g = torch.randn(3, 768), torch.randn(3, 1280)
    first, second = write_like_diffusers(tmp_path / "out", clip_l, clip_g)
    return first, second, clip_l, clip_g.half().float()


@pytest.mark.parametrize("which", [0, 1])
def test_either_file_loads_the_pair(pair, which):
    clip_l, clip_g = pair[2:]
    emb = load_embedding(pair[which])
    assert emb.is_sdxl and emb.name == "learned_embeds" and emb.n_vectors == 3 and emb.width == 2048
    assert torch.equal(emb.vectors["clip_l"], clip_l) and torch.equal(emb.vectors["clip_g"], clip_g)
    assert emb.metadata["source_layout"] == "diffusers-sdxl-pair"
    assert emb.metadata["source_files"] == "learned_embeds.safetensors + learned_embeds_2.safetensors"


def test_step_snapshots_pair_with_each_other(tmp_path):
    final = [torch.randn(2, 768), torch.randn(2, 1280)]
    snap = [torch.randn(2, 768), torch.randn(2, 1280)]
    write_like_diffusers(tmp_path, *final)
    write_like_diffusers(tmp_path, *snap, steps=500)
    emb = load_embedding(tmp_path / "learned_embeds_2-steps-500.safetensors")
    assert emb.name == "learned_embeds-steps-500"
    assert torch.equal(emb.vectors["clip_l"], snap[0])
    assert torch.equal(emb.vectors["clip_g"], snap[1].half().float())


def test_a_file_without_its_sibling_loads_alone(pair):
    first, second, clip_l, clip_g = pair
    (first.parent / "alone").mkdir()
    lone_l, lone_g = first.rename(first.parent / "alone" / first.name), second
    for path, want in ((lone_l, clip_l), (lone_g, clip_g)):
        emb = load_embedding(path)
        assert not emb.is_sdxl and torch.equal(emb.vectors, want)
        assert emb.metadata["source_layout"] == "diffusers"


def test_files_that_are_not_one_pair_are_refused(tmp_path):
    first, _ = write_like_diffusers(tmp_path / "a", torch.randn(2, 768), torch.randn(3, 1280))
    with pytest.raises(
        EmbeddingFormatError, match=r"do not form diffusers' SDXL pair.*vectors.*move learned_embeds_2"
    ):
        load_embedding(first)
    first, second = write_like_diffusers(tmp_path / "b", torch.randn(2, 768), torch.randn(2, 1280))
    safetensors.torch.save_file({"<other>": torch.randn(2, 1280)}, second)
    with pytest.raises(EmbeddingFormatError, match="different tokens"):
        load_embedding(second)


def test_the_pair_fits_an_sdxl_model_where_one_file_does_not(tmp_path):
    """Rows taken from the tiny SDXL model's own encoders, as the script takes them from its encoders."""
    from extension.backends.tiny import build_tiny_backend
    from extension.training.config import embedding_fit_problems
    from extension.training.create import vectors_for_backend

    backend = build_tiny_backend("sdxl")
    rows = {
        k: enc.get_input_embeddings().weight[400:402].detach() for k, enc in backend.text_encoders.items()
    }
    first, _ = write_like_diffusers(tmp_path, rows["clip_l"], rows["clip_g"])
    emb = load_embedding(first)
    assert embedding_fit_problems(vectors_for_backend(emb, backend), backend, "pair") == []
    first.rename(tmp_path / "single.safetensors")
    with pytest.raises(ValueError, match="two text encoders"):
        vectors_for_backend(load_embedding(tmp_path / "single.safetensors"), backend)


def test_inspect_reports_the_pair(pair, capsys):
    first, second, _, _ = pair
    assert main(["inspect", str(second), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["files"] == [str(first), str(second)] and info["name"] == "learned_embeds"
    assert info["shape"] == {"clip_l": [3, 768], "clip_g": [3, 1280]} and info["model_family"] == "sdxl"
    assert info["source_layout"] == "diffusers-sdxl-pair"
    for verdict in info["compatibility"].values():  # every tool reads the two files one by one
        assert not verdict["loads"] and "convert learned_embeds.safetensors" in verdict["reason"]
    assert main(["inspect", str(first)]) == 0
    assert f"{first} + {second}" in capsys.readouterr().out


def test_convert_writes_one_sdxl_file(pair, tmp_path, capsys):
    first, second, clip_l, clip_g = pair
    out = tmp_path / "cat.safetensors"
    assert main(["convert", str(second), str(out)]) == 0
    assert "from learned_embeds.safetensors + learned_embeds_2.safetensors" in capsys.readouterr().out
    tensors = safetensors.torch.load_file(out)
    assert set(tensors) == {"clip_l", "clip_g"}  # the layout the web UI, Forge, ComfyUI and kohya read
    assert torch.equal(tensors["clip_l"], clip_l) and torch.equal(tensors["clip_g"], clip_g)
    pt = tmp_path / "cat.pt"
    assert main(["convert", str(first), str(pt)]) == 0
    assert webui_load_problems(pt.read_bytes()) == []
    assert set(safe_torch_load(pt)) == {"clip_l", "clip_g"}


def test_import_takes_the_pair_and_refuses_a_lone_clip_g_file(pair, tmp_path):
    first, second, _, clip_g = pair
    path, emb = import_embedding(second, tmp_path / "emb", name="cat")
    back = load_embedding(path)
    assert path.name == "cat.safetensors" and back.is_sdxl and back.same_vectors(emb)
    assert torch.equal(back.vectors["clip_g"], clip_g)
    assert "source_files" not in safetensors.torch.safe_open(path, "pt").metadata()
    first.unlink()  # as an upload arrives: without its sibling
    with pytest.raises(ShareError, match=r"only the CLIP-G half.*learned_embeds\.safetensors.*convert"):
        import_embedding(second, tmp_path / "emb", name="half")
    assert not (tmp_path / "emb" / "half.safetensors").exists()


def test_rest_import_of_a_lone_clip_g_file_is_a_400(pair, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from extension.backends.tiny import build_tiny_backend
    from extension.ui.adapter import StandaloneAdapter
    from extension.ui.service import TrainerService
    from extension.webui.api import PREFIX, mount_api

    adapter = StandaloneAdapter(
        backend=build_tiny_backend("sdxl"), embeddings_dir=tmp_path / "emb", log_dir=tmp_path / "logs"
    )
    app = FastAPI()
    mount_api(app, TrainerService(adapter))
    client = TestClient(app, raise_server_exceptions=False)
    body = {"filename": pair[1].name, "data": base64.b64encode(pair[1].read_bytes()).decode()}
    r = client.post(f"{PREFIX}/import", json=body)
    assert r.status_code == 400 and "CLIP-G half" in r.text
    assert not list((tmp_path / "emb").glob("*"))


def test_the_catalog_lists_a_pair_once_and_a_lone_half_on_its_own(pair, tmp_path):
    from extension.ui.catalog import EmbeddingCatalog

    first = pair[0]
    write_like_diffusers(first.parent, torch.randn(2, 768), torch.randn(2, 1280), steps=500)
    found, problems = EmbeddingCatalog().scan(first.parent)
    assert [(e.name, e.shape, Path(e.path).name) for e in found] == [
        ("learned_embeds", "3 x (768 + 1280)", "learned_embeds.safetensors"),
        ("learned_embeds-steps-500", "2 x (768 + 1280)", "learned_embeds-steps-500.safetensors"),
    ] and problems == []
    first.unlink()  # the CLIP-G half alone is listed as what it is
    assert [Path(e.path).name for e in EmbeddingCatalog().scan(first.parent)[0]] == [
        "learned_embeds-steps-500.safetensors", "learned_embeds_2.safetensors"
    ]  # fmt: skip
