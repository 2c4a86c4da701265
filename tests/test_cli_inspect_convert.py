"""``python -m extension inspect`` and ``convert`` on real files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from embedding_helpers import REF, same_bits
from PIL import Image

from extension.cli import main
from extension.embedding import load_embedding
from extension.embedding.pt_container import webui_load_problems


def _inspect(capsys, path) -> tuple[int, dict]:
    code = main(["inspect", str(path), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_inspect_webui_pt(capsys):
    code, info = _inspect(capsys, REF / "sd15-4v.pt")
    assert code == 0
    assert info["name"] == "sd15-4v" and info["shape"] == [4, 768] and info["step"] == 1500
    assert info["source_layout"] == "a1111-pt" and info["model_family"] == "sd1"
    assert info["hash"] == "76d4bcc49df5" and info["sha256"].startswith(info["hash"])
    assert all(v["loads"] for v in info["compatibility"].values())


def test_inspect_png_and_sdxl(capsys):
    code, info = _inspect(capsys, REF / "sd15-4v.pixels.png")
    assert code == 0 and info["hash"] == "85bc4e9ae22d" and info["source_layout"] == "png-pixels"
    assert info["compatibility"]["webui"]["loads"] and not info["compatibility"]["comfyui"]["loads"]
    assert "ComfyUI" in info["compatibility"]["comfyui"]["reason"]
    code, info = _inspect(capsys, REF / "sdxl-2v.kohya.safetensors")
    assert info["shape"] == {"clip_l": [2, 768], "clip_g": [2, 1280]} and info["width"] == 2048


def test_inspect_flags_newer_torch_pt(tmp_path, capsys):
    path = tmp_path / "new.pt"
    torch.save({"string_to_param": {"*": torch.zeros(1, 768)}, "name": "new", "step": 1}, path)
    code, info = _inspect(capsys, path)
    assert code == 0
    web = info["compatibility"]["webui"]
    assert not web["loads"] and ".format_version" in web["reason"] and "convert" in web["reason"]
    assert info["compatibility"]["forge"]["loads"]


def test_inspect_text_output_and_errors(tmp_path, capsys):
    assert main(["inspect", str(REF / "sd15-4v.kohya.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "sd15-4v.kohya" in out and "8e072c95d066" in out and "kohya" in out
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nope")
    assert main(["inspect", str(bad)]) == 1
    assert "bad.pt" in capsys.readouterr().err


def test_convert_new_torch_pt_to_webui_pt_and_safetensors(tmp_path, capsys):
    src = tmp_path / "emb.pt"
    torch.save({"string_to_param": {"*": torch.randn(2, 768)}, "name": "emb", "step": 5}, src)
    assert webui_load_problems(src.read_bytes())
    out = tmp_path / "fixed.pt"
    assert main(["convert", str(src), str(out)]) == 0
    assert webui_load_problems(out.read_bytes()) == []
    st = tmp_path / "emb.safetensors"
    assert main(["convert", str(src), str(st), "--name", "renamed"]) == 0
    back = load_embedding(st)
    assert (
        same_bits(back, load_embedding(src)) and back.metadata["stored_name"] == "renamed" and back.step == 5
    )
    assert main(["convert", str(src), str(st)]) == 1  # exists
    assert "overwrite" in capsys.readouterr().err
    assert main(["convert", str(src), str(st), "--overwrite"]) == 0


def test_convert_to_and_from_png_cards(tmp_path):
    picture = tmp_path / "pic.jpg"
    Image.new("RGB", (200, 150), (20, 140, 220)).save(picture)
    card = tmp_path / "card.png"
    assert main(["convert", str(REF / "sd15-4v.pt"), str(card), "--image", str(picture)]) == 0
    with Image.open(card) as im:
        assert im.size[1] == 150 and "sd-ti-embedding" in im.text
    back = tmp_path / "back.safetensors"
    assert main(["convert", str(card), str(back)]) == 0
    assert same_bits(load_embedding(back), load_embedding(REF / "sd15-4v.pt"))
    assert load_embedding(back).metadata["stored_name"] == "sd15-4v"
    plain = tmp_path / "plain.png"  # no --image: a generated picture
    assert main(["convert", str(REF / "sd15-4v.kohya.safetensors"), str(plain)]) == 0
    assert same_bits(load_embedding(plain), load_embedding(REF / "sd15-4v.kohya.safetensors"))
    webp = tmp_path / "card.webp"
    assert main(["convert", str(REF / "sd15-4v.pt"), str(webp)]) == 0
    assert load_embedding(webp).metadata["source_layout"] == "webp-pixels"


def test_convert_sdxl_card_says_text_only(tmp_path, capsys):
    out = tmp_path / "xl.png"
    assert main(["convert", str(REF / "sdxl-2v.kohya.safetensors"), str(out)]) == 0
    assert "text chunk" in capsys.readouterr().err
    assert load_embedding(out).is_sdxl


@pytest.mark.parametrize("cmd", [["inspect", str(REF / "sd15-4v.pt")]])
def test_module_entry_point(cmd):
    res = subprocess.run(
        [sys.executable, "-m", "extension", *cmd], capture_output=True, text=True, cwd="/work/main"
    )
    assert res.returncode == 0 and "76d4bcc49df5" in res.stdout


def _sdxl_with_training_fields(tmp_path):
    from extension.embedding import Embedding, save_embedding

    emb = Embedding(
        "xl",
        {"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)},
        step=1500,
        checkpoint_hash="abcdef1234",
        checkpoint_name="sdxl_base",
    )
    return save_embedding(emb, tmp_path / "xl.safetensors")


@pytest.mark.parametrize("suffix", [".pt", ".png"])
def test_convert_sdxl_to_pt_or_card_says_step_and_checkpoint_are_not_kept(tmp_path, capsys, suffix):
    """The web UI's SDXL loader takes only clip_l/clip_g, so these outputs cannot hold them."""
    out = tmp_path / f"out{suffix}"
    assert main(["convert", str(_sdxl_with_training_fields(tmp_path)), str(out), "--name", "renamed"]) == 0
    captured = capsys.readouterr()
    assert "step" not in captured.out and "sdxl_base" not in captured.out and "renamed" not in captured.out
    assert "not kept: name 'renamed', step 1500, checkpoint sdxl_base [abcdef1234]" in captured.err
    assert "'out'" in captured.err and ".safetensors output keeps them" in captured.err
    back = load_embedding(out)  # and it is true: the file holds none of them
    assert (back.name, back.step, back.checkpoint_hash, back.checkpoint_name) == ("out", None, None, None)


def test_convert_reports_what_the_output_holds(tmp_path, capsys):
    out = tmp_path / "out.safetensors"
    assert main(["convert", str(_sdxl_with_training_fields(tmp_path)), str(out)]) == 0
    captured = capsys.readouterr()
    assert "holds name 'xl', step 1500, checkpoint sdxl_base [abcdef1234]" in captured.out
    assert "not kept" not in captured.err
    assert load_embedding(out).step == 1500
    assert main(["convert", str(REF / "sd15-4v.pt"), str(tmp_path / "sd.png")]) == 0
    captured = capsys.readouterr()
    assert "holds name 'sd15-4v', step 1500, checkpoint v1-5-pruned-emaonly [6ce0161689]" in captured.out
    assert "not kept" not in captured.err
