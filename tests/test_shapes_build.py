"""The tiny-shapes build script runs end to end (a few steps), reproducibly, and never overwrites silently."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from extension.shapes.build import main
from extension.shapes.draw import HELD_OUT
from extension.shapes.model import load_components

QUICK = ["--pictures", "32", "--vae-steps", "2", "--decoder-steps", "2", "--steps", "2", "--warmup", "1",
         "--eval-seeds", "1", "--no-parallel"]  # fmt: skip


def test_build_writes_loadable_weights_card_and_info_reproducibly(tmp_path, capsys):
    a, b = tmp_path / "a" / "m.safetensors", tmp_path / "b" / "m.safetensors"
    assert main(["--out", str(a), *QUICK]) == 0
    assert main(["--out", str(b), *QUICK]) == 0
    first, second = load_file(str(a)), load_file(str(b))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert all(v.dtype == torch.float16 for v in first.values())
    parts = load_components(a)
    assert set(parts) == {"unet", "vae", "text_encoder"}
    card = (a.parent / "MODEL_CARD.md").read_text("utf-8")
    assert all(f"{c} {s}" in card for c, s in HELD_OUT)
    info = json.loads((a.parent / "train_info.json").read_text("utf-8"))
    assert info["plan"]["steps"] == 2 and len(info["scores"]) == 24
    assert (a.parent / "samples.png").is_file()
    assert main(["--out", str(a), *QUICK]) == 2  # exists: refused without --overwrite
    assert "--overwrite" in capsys.readouterr().err
