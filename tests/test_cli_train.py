"""``python -m extension train / create / demo`` run in-process on the tiny models."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from extension.cli import build_parser, main
from extension.embedding import load_embedding
from extension.png import extract_from_image
from extension.training.demo_data import make_demo_dataset


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("clidata") / "imgs", n=3, size=32, seed=2)


def train_args(tmp_path: Path, data: Path, *extra: str) -> list[str]:
    return [
        "train", "--data", str(data), "--name", "cli-cat", "--model", "tiny-sd1", "--width", "32",
        "--height", "32", "--template", "subject", "--log-dir", str(tmp_path / "logs"),
        "--embeddings-dir", str(tmp_path / "emb"), "--no-progress-bar", "--no-tensorboard", *extra,
    ]  # fmt: skip


def test_train_help_lists_every_option():
    text = build_parser(["train"])._subparsers._group_actions[0].choices["train"].format_help()
    for flag in ("--learn-rate", "--steps", "--batch-size", "--grad-accumulation", "--config", "--resume",
                 "--clip-grad", "--precision", "--preview-every", "--validation-every", "--save-format"):  # fmt: skip
        assert flag in text


def test_train_command_trains_and_reports_where_files_went(tmp_path, data_dir, capsys):
    code = main(
        train_args(
            tmp_path, data_dir, "--steps", "3", "--batch-size", "2", "--grad-accumulation", "2",
            "--learn-rate", "0.01:2, 0.005", "--init-text", "cat", "--vectors", "2",
        )
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    final = tmp_path / "emb" / "cli-cat.safetensors"
    emb = load_embedding(final)
    assert emb.step == 3 and emb.vectors.shape == (2, 32)
    assert f"embedding:  {final}" in out and "loss CSV:" in out and "loss plot:" in out
    # again without --resume/--overwrite: refused, nothing changed
    stamp = final.stat().st_mtime_ns
    assert main(train_args(tmp_path, data_dir, "--steps", "4")) == 2
    assert "already exists; set resume (--resume)" in capsys.readouterr().err
    assert final.stat().st_mtime_ns == stamp
    # continue it
    assert main(train_args(tmp_path, data_dir, "--steps", "4", "--batch-size", "2", "--grad-accumulation", "2",
                           "--learn-rate", "0.01:2, 0.005", "--resume")) == 0  # fmt: skip
    assert load_embedding(final).step == 4


def test_train_from_toml_with_flag_overrides(tmp_path, data_dir, capsys):
    toml = tmp_path / "run.toml"
    toml.write_text(
        f'name = "toml-cat"\nmodel = "tiny-sd1"\nlearn_rate = "0.02"\nmax_steps = 50\nsave_format = "pt"\n'
        f'progress_bar = false\ntensorboard = false\n'
        f'log_dir = "{(tmp_path / "logs").as_posix()}"\nembeddings_dir = "{(tmp_path / "emb").as_posix()}"\n'
        f'[dataset]\ndata = "{data_dir.as_posix()}"\nwidth = 32\nheight = 32\ntemplate = "subject"\n',
        encoding="utf-8",
    )
    assert main(["train", "--config", str(toml), "--steps", "2"]) == 0
    emb = load_embedding(tmp_path / "emb" / "toml-cat.pt")
    assert emb.step == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--width", "30"], "width 30 is not a positive multiple of 8"),
        (["--learn-rate", "fast"], "learn_rate schedule 'fast' is invalid"),
        (["--name", "no/slash"], "is not a safe file name"),
        (["--batch-size", "9"], "--clamp-batch"),
    ],
)
def test_train_bad_input_exits_2_and_writes_nothing(tmp_path, data_dir, capsys, extra, message):
    code = main(train_args(tmp_path, data_dir, *extra))
    assert code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_create_command(tmp_path, capsys):
    args = ["create", "--model", "tiny-sd1", "--name", "new-one", "--init-text", "red cat", "--vectors", "3",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    path = tmp_path / "new-one.safetensors"
    emb = load_embedding(path)
    assert emb.step == 0 and emb.vectors.shape == (3, 32) and emb.vectors.abs().sum() > 0
    assert str(path) in capsys.readouterr().out
    assert main(args) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--zeros", "--format", "pt"]) == 0
    assert torch.equal(load_embedding(tmp_path / "new-one.pt").vectors, torch.zeros(3, 32))
    assert main(["create", "--name", "a/b", "--out", str(tmp_path)]) == 2


def test_demo_command_runs_and_never_overwrites(tmp_path, capsys):
    args = ["demo", "--out", str(tmp_path), "--steps", "4", "--images", "4", "--samples", "2", "--no-progress-bar"]
    assert main(args) == 0
    out = capsys.readouterr().out
    paths = {label: Path(p) for label, p in re.findall(r"^\s+(embedding|PNG card|loss CSV|loss plot):\s+(\S+)$", out, re.M)}
    assert set(paths) == {"embedding", "PNG card", "loss CSV", "loss plot"}
    assert all(p.is_file() for p in paths.values())
    emb = load_embedding(paths["embedding"])
    assert emb.step == 4 and emb.name == "demo-shape"
    card = extract_from_image(paths["PNG card"])
    assert card.name == "demo-shape-4" and torch.equal(card.vectors, emb.vectors)
    assert Image.open(paths["loss plot"]).format == "PNG"
    assert "validation loss:" in out
    assert main(args) == 0  # a second run goes to a new folder
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2
