"""One training step on the full-size SD 1.5 architecture (random weights) at 256x256 through the
``train`` command: the real UNet, CLIP-L and VAE sizes through the whole loop on the CPU.

About 0.4 TFLOP for the step and 0.3 TFLOP for caching the latent, 5.3 GB peak memory (float32).
"""

from __future__ import annotations

import csv
import math

import pytest
import torch

from extension.cli import main
from extension.embedding import load_embedding
from extension.training.demo_data import make_demo_dataset


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # a full-size UNet: both cores help (conftest sets 1 for the tiny models)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_one_step_on_random_sd15_at_256(tmp_path, capsys, two_threads):
    data = make_demo_dataset(tmp_path / "imgs", n=1, size=256, seed=3)
    args = ["train", "--model", "random-sd15", "--data", str(data), "--name", "smoke", "--zeros", "--vectors", "2",
            "--width", "256", "--height", "256", "--max-steps", "1", "--batch-size", "1", "--precision", "fp32",
            "--learn-rate", "0.01", "--log-dir", str(tmp_path / "logs"), "--embeddings-dir", str(tmp_path / "emb"),
            "--device", "cpu", "--no-tensorboard", "--no-progress-bar", "--save-every", "0", "--preview-every", "0"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "trained 1 steps" in out

    embedding = load_embedding(tmp_path / "emb" / "smoke.safetensors")
    assert embedding.vectors.shape == (2, 768)  # CLIP ViT-L's width
    assert embedding.step == 1 and embedding.checkpoint_name == "random-sd15"
    # from zeros, one Adam step moves every element by about the learning rate
    assert torch.isfinite(embedding.vectors).all()
    assert embedding.vectors.abs().min() > 0.005
    with next((tmp_path / "logs").rglob("loss.csv")).open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and math.isfinite(float(rows[0]["loss"]))
