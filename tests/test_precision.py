"""Precision means what the user chose: the policy, the weights the loader picks, and the dtypes a
training step really computes in."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from extension.backends import load_backend
from extension.backends.loading import default_dtype
from extension.backends.tiny import build_tiny_backend
from extension.training.config import ConfigError, TrainConfig
from extension.training.demo_data import make_demo_dataset
from extension.training.loop import train
from extension.training.precision import (
    PrecisionError,
    choose_precision,
    nan_advice,
    precision_problem,
    weight_dtype_for,
)

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


# -- the policy (every CUDA branch, without a GPU) -----------------------------------------------


@pytest.mark.parametrize(
    ("requested", "device", "native", "weights", "name", "autocast", "scaler"),
    [
        ("auto", "cpu", False, F32, "fp32", None, False),
        ("auto", "cuda", True, F16, "bf16", BF16, False),
        ("auto", "cuda", False, F16, "fp16", F16, True),
        ("fp16", "cuda", True, F16, "fp16", F16, True),  # fp16 always has a scaler, even on bf16 GPUs
        ("fp16", "cuda", False, F32, "fp16", F16, True),
        ("bf16", "cuda", True, F16, "bf16", BF16, False),
        ("bf16", "cpu", False, F32, "bf16", BF16, False),  # CPU autocast computes bf16
        ("fp32", "cuda", True, F32, "fp32", None, False),
        ("fp32", "cpu", False, F32, "fp32", None, False),
    ],
)
def test_policy_chooses_autocast_and_scaler(requested, device, native, weights, name, autocast, scaler):
    p = choose_precision(requested, device, weight_dtype=weights, bf16_is_native=native)
    assert (p.name, p.autocast_dtype, p.uses_grad_scaler) == (name, autocast, scaler)
    assert name in p.describe()


@pytest.mark.parametrize(
    ("requested", "device", "native", "weights", "words"),
    [
        ("fp16", "cpu", False, F32, "needs a CUDA device"),
        ("bf16", "cuda", False, F16, "natively"),  # a pre-Ampere GPU would emulate bf16
        ("fp32", "cuda", True, F16, "--no-half"),  # half weights never train "fp32" in half
        ("fp32", "cpu", False, BF16, "--no-half"),
        ("fp64", "cpu", False, F32, "unknown"),
    ],
)
def test_policy_refuses_with_the_fix(requested, device, native, weights, words):
    hint = "start the web UI with --no-half"
    assert words in (precision_problem(requested, device, bf16_is_native=native, weight_dtype=weights, fp32_hint=hint) or "")
    with pytest.raises(PrecisionError):
        choose_precision(requested, device, weight_dtype=weights, bf16_is_native=native, fp32_hint=hint)


@pytest.mark.parametrize(
    ("requested", "device", "native", "dtype"),
    [
        ("fp32", "cuda", True, F32),  # was float16 whatever --precision said
        ("auto", "cuda", True, BF16),
        ("auto", "cuda", False, F16),
        ("bf16", "cuda", True, BF16),
        ("fp16", "cuda", True, F16),
        ("auto", "cpu", False, F32),
        ("bf16", "cpu", False, BF16),
    ],
)
def test_standalone_weights_follow_the_precision(requested, device, native, dtype):
    assert weight_dtype_for(requested, device, bf16_is_native=native) == dtype


def test_loader_default_dtype_uses_the_precision():
    cpu = torch.device("cpu")
    assert default_dtype(cpu) == F32 and default_dtype(cpu, "bf16") == BF16 and default_dtype(cpu, "fp32") == F32


def test_nan_advice_never_suggests_the_precision_that_ran():
    assert "fp32" not in nan_advice("fp32") and "bf16" not in nan_advice("fp32")
    assert "fp32" in nan_advice("bf16") and "bf16" not in nan_advice("bf16").split("precision")[-1].replace("fp32", "")
    assert "bf16" in nan_advice("fp16") and "fp32" in nan_advice("fp16")


# -- what a training step computes in --------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("data") / "imgs", n=2, size=32, seed=5)


def _config(tmp_path: Path, data: Path, precision: str) -> TrainConfig:
    return TrainConfig(
        name="prec", data=str(data), width=32, height=32, template="subject", init_text="cat", vectors=2,
        log_dir=str(tmp_path / "logs"), embeddings_dir=str(tmp_path / "emb"), max_steps=1, batch_size=1,
        save_every=0, progress_bar=False, tensorboard=False, precision=precision,
    )  # fmt: skip


class DtypeRecorder:
    """Records the output dtype of every Linear / Conv2d of the text encoders and the UNet while
    gradients are on (the training step, not latent caching)."""

    def __init__(self, backend):
        self.seen: dict[str, set[torch.dtype]] = {"text": set(), "unet": set()}
        self.grad_dtypes: set[torch.dtype] = set()
        self._handles = []
        parts = {"unet": [backend.unet], "text": list(backend.text_encoders.values())}
        for role, modules in parts.items():
            for module in modules:
                for sub in module.modules():
                    if isinstance(sub, (torch.nn.Linear, torch.nn.Conv2d)):
                        self._handles.append(sub.register_forward_hook(self._hook(role)))

    def _hook(self, role):
        def hook(_module, _inputs, output):
            if torch.is_grad_enabled():
                self.seen[role].add(output.dtype)

        return hook

    def close(self):
        for h in self._handles:
            h.remove()


@pytest.mark.parametrize(
    ("precision", "weights", "expected"),
    [("fp32", F32, F32), ("bf16", F32, BF16), ("bf16", BF16, BF16)],
    ids=["fp32", "bf16-autocast-over-fp32", "bf16-weights"],
)
def test_one_training_step_computes_in_the_chosen_precision(tmp_path, data_dir, precision, weights, expected):
    backend = build_tiny_backend("sd1", dtype=weights)
    recorder = DtypeRecorder(backend)
    try:
        result = train(_config(tmp_path, data_dir, precision), backend)
    finally:
        recorder.close()
    assert result.steps_done == 1 and result.reason == "completed"
    assert recorder.seen == {"text": {expected}, "unet": {expected}}
    assert result.precision.startswith(precision) and f"({precision})" in result.message
    assert result.embedding.vectors.dtype == F32  # vectors stay float32 leaves


def test_fp32_is_refused_on_half_weights_before_any_work(tmp_path, data_dir):
    backend = build_tiny_backend("sd1", dtype=BF16)
    cfg = _config(tmp_path, data_dir, "fp32")
    with pytest.raises(ConfigError) as info:
        train(cfg, backend)
    assert "float32 weights" in str(info.value) and "--precision fp32" in str(info.value)
    assert not (tmp_path / "logs").exists() and not (tmp_path / "emb").exists()


def test_cli_loader_honours_precision_on_the_cpu():
    assert load_backend("tiny-sd1", device="cpu", dtype=default_dtype(torch.device("cpu"), "bf16")).dtype == BF16
    assert load_backend("tiny-sd1", device="cpu", dtype=default_dtype(torch.device("cpu"), "fp32")).dtype == F32
