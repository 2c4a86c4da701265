"""Every file and folder we write gets the user's normal permissions (the umask), like other tools'."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from embedding_helpers import REF
from PIL import Image

from extension.cli import main
from extension.embedding import Embedding, save_embedding, save_optim_file
from extension.png import embed_in_png, plain_card_image, save_png_card
from extension.training.demo_data import make_demo_dataset
from extension.training.outputs import atomic_write

# umask -> (file mode, folder mode)
MODES = {0o022: (0o644, 0o755), 0o077: (0o600, 0o700), 0o002: (0o664, 0o775)}


@pytest.fixture(params=sorted(MODES), ids=lambda m: f"umask{m:03o}")
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_files(folder: Path, expected: int) -> None:
    """Every file under ``folder`` has mode ``expected`` and no temporary file was left behind."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files
    assert {p.name: oct(mode(p)) for p in files} == {p.name: oct(expected) for p in files}
    assert not [p for p in files if p.name.endswith(".tmp")]


def _embedding(vectors: int = 2) -> Embedding:
    return Embedding("modes", torch.randn(vectors, 768), step=3)


def test_embedding_optim_and_card_writers(tmp_path, umask):
    file_mode = MODES[umask][0]
    emb = _embedding()
    save_embedding(emb, tmp_path / "a.safetensors")
    save_embedding(emb, tmp_path / "a.pt")
    opt = torch.optim.AdamW([torch.nn.Parameter(emb.vectors.clone())])
    save_optim_file(tmp_path / "a.pt", emb.vectors, opt.state_dict())
    card, info = embed_in_png(plain_card_image(emb, (64, 64)), emb)
    save_png_card(tmp_path / "a.png", card, info)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a.pt", "a.pt.optim", "a.safetensors"]
    assert_files(tmp_path, file_mode)


def test_convert_output(tmp_path, umask):
    assert main(["convert", str(REF / "sd15-4v.pt"), str(tmp_path / "x.safetensors")]) == 0
    assert main(["convert", str(REF / "sd15-4v.pt"), str(tmp_path / "x.webp")]) == 0
    assert_files(tmp_path, MODES[umask][0])


def test_run_outputs_writer(tmp_path, umask):
    """``atomic_write`` as the loop, previews, loss log and resume state use it."""
    import safetensors.torch

    run = tmp_path / "run"  # created by atomic_write
    atomic_write(run / "loss.csv", lambda tmp: tmp.write_text("step,loss\n", encoding="utf-8"))
    atomic_write(run / "images" / "p-1.png", lambda tmp: Image.new("RGB", (8, 8)).save(tmp, format="PNG"))
    atomic_write(run / "x.resume", lambda tmp: safetensors.torch.save_file({"v": torch.zeros(2)}, str(tmp)))
    assert_files(run, MODES[umask][0])


def test_demo_dataset(tmp_path, umask):
    make_demo_dataset(tmp_path / "demo", n=2, size=16)
    assert_files(tmp_path / "demo", MODES[umask][0])


def test_diffusers_folder(tmp_path, umask):
    from extension.backends import save_diffusers
    from extension.backends.tiny import build_tiny_backend

    folder = save_diffusers(build_tiny_backend("sd1"), tmp_path / "model")
    file_mode, dir_mode = MODES[umask]
    assert mode(folder) == dir_mode
    assert {oct(mode(p)) for p in folder.rglob("*") if p.is_dir()} == {oct(dir_mode)}
    assert_files(folder, file_mode)


def test_replacing_a_file_keeps_its_mode(tmp_path):
    """A file the user made private stays private when we replace it (as rewriting it would)."""
    old = os.umask(0o022)
    try:
        target = save_embedding(_embedding(), tmp_path / "a.safetensors")
        log = atomic_write(tmp_path / "loss.csv", lambda tmp: tmp.write_text("a\n"))
        os.chmod(target, 0o600)
        os.chmod(log, 0o640)
        save_embedding(_embedding(), target, overwrite=True)
        atomic_write(log, lambda tmp: tmp.write_text("b\n"))
    finally:
        os.umask(old)
    assert (mode(target), mode(log)) == (0o600, 0o640)
    assert log.read_text() == "b\n"
