"""The benchmark's FLOP count and MFU: the count of known operations, the peak-table policy (the
CUDA branch, tested without a GPU), and the figures in a real benchmark run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from extension.benchmark.flops import count_flops, mfu, peak_flops
from extension.benchmark.report import format_table
from extension.benchmark.runner import BenchSettings, Timing, flop_figures, run_benchmark


def test_count_of_a_linear_layer_forward_and_backward():
    layer = torch.nn.Linear(64, 32)
    x = torch.randn(8, 64, requires_grad=True)

    def step():
        layer(x).sum().backward()

    forward = 2 * 8 * 64 * 32
    assert count_flops(step) == 3 * forward  # backward: gradients of the input and of the weight


def test_cpu_attention_is_counted_like_cuda_attention():
    q = torch.randn(1, 2, 16, 8, requires_grad=True)
    forward = 2 * 2 * (2 * 16 * 16 * 8)  # q @ k^T and weights @ v, for 2 heads, 2 FLOPs per multiply-add
    with torch.no_grad():
        assert count_flops(lambda: F.scaled_dot_product_attention(q, q, q)) == forward
    total = count_flops(lambda: F.scaled_dot_product_attention(q, q, q).sum().backward())
    assert total == forward + 5 * forward // 2  # torch's formula: the backward is 2.5x the forward


@pytest.mark.parametrize(
    ("name", "precision", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.0),
        ("NVIDIA H100 80GB HBM3", "fp16", 989.0),
        ("NVIDIA H100 PCIe", "bf16", 756.0),
        ("NVIDIA H100 NVL", "bf16", 835.0),
        ("NVIDIA H200", "bf16", 989.0),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312.0),
        ("NVIDIA A100 80GB PCIe", "fp16", 312.0),
        ("NVIDIA GeForce RTX 4090", "fp16", 165.2),
        ("NVIDIA L4", "bf16", 121.0),
        ("Tesla T4", "fp16", 65.0),
        ("Tesla V100-SXM2-16GB", "fp16", 125.0),
    ],
)
def test_peak_of_known_gpus(name, precision, tflops):
    peak = peak_flops("cuda", name, precision)
    assert peak.flops_per_s == tflops * 1e12
    assert f"{tflops:g} TFLOP/s" in peak.description and precision in peak.description


@pytest.mark.parametrize(
    ("device", "name", "precision", "why"),
    [
        ("cpu", None, "fp32", "no peak figures for cpu"),
        ("cuda", "NVIDIA H100 80GB HBM3", "fp32", "TF32"),
        ("cuda", "Tesla T4", "bf16", "no bf16 tensor cores"),
        ("cuda", "NVIDIA L40", "fp16", "not in the peak table"),  # not an L4, not an L40S
        ("cuda", "NVIDIA GeForce RTX 3090 Ti", "fp16", "not in the peak table"),
        ("cuda", "Some Future GPU", "bf16", "not in the peak table"),
    ],
)
def test_unknown_peaks_are_said_not_guessed(device, name, precision, why):
    peak = peak_flops(device, name, precision)
    assert peak.flops_per_s is None
    assert peak.description.startswith("unknown peak") and why in peak.description


def test_mfu_is_achieved_rate_over_peak():
    h100 = peak_flops("cuda", "NVIDIA H100 80GB HBM3", "bf16")
    assert mfu(989e12, 2.0, h100) == pytest.approx(0.5)
    assert mfu(989e12, 2.0, peak_flops("cpu", None, "fp32")) is None
    assert mfu(None, 2.0, h100) is None


def test_flop_figures_on_a_cuda_device_name(monkeypatch):
    """The CUDA branch of the benchmark's figures, with the device name it would read."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    trainer, bare = Timing([0.5, 0.5, 0.5], 4), Timing([0.4, 0.4, 0.4], 4)
    figures = flop_figures(int(4e14), torch.device("cuda", 0), "bf16", trainer, bare)
    assert figures["per_sample"] == 1e14
    assert figures["mfu_trainer"] == pytest.approx(4e14 / 0.5 / 989e12)
    assert figures["mfu_bare"] == pytest.approx(4e14 / 0.4 / 989e12)
    assert figures["peak"] == "989 TFLOP/s (H100 SXM, bf16 dense)"


def test_benchmark_reports_the_flops_of_its_step(tmp_path):
    settings = BenchSettings(model="tiny-sd1", steps=2, warmup=1, images=2, batch_size=1, grad_accumulation=2,
                             cache_repeats=1, device="cpu")  # fmt: skip
    result = run_benchmark(settings, log=None, work_dir=tmp_path)
    flops = result.to_dict()["flops"]
    assert flops["per_step"] > 0 and flops["per_sample"] == flops["per_step"] / 2
    assert flops["achieved_trainer_flops_per_s"] == pytest.approx(flops["per_step"] / result.trainer.median)
    assert flops["mfu_trainer"] is None and flops["peak"].startswith("unknown peak")
    table = format_table(result)
    assert "model FLOPs" in table and "MFU                    unknown peak" in table
    assert result.checks["model_unchanged"] and result.checks["params_with_grad"] == 0
