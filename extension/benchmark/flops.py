"""Model FLOPs of one optimizer step and the model FLOPs utilisation (MFU) they imply.

The count is what torch's own ``FlopCounterMode`` sees while one bare step (:mod:`.bare`: text
encoders and UNet, forward and backward) runs: matrix products, convolutions and attention,
2 FLOPs per multiply-add, the usual convention for MFU. Element-wise work (norms, activations,
the optimizer) is left out. PyTorch has no formula for its CPU flash-attention kernel, so the
same formula it uses for the CUDA kernels is registered for it here.

MFU is that count divided by the step time and by the device's peak: the dense (no sparsity)
tensor-core rate of a known NVIDIA GPU for fp16/bf16 (with fp32 accumulation) from
:data:`PEAK_TFLOPS`. Anything else (the CPU, an unlisted GPU, fp32 compute, where TF32 use
varies) reports an unknown peak instead of a guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

# (pattern on torch.cuda.get_device_name, fp16 and bf16 dense TFLOP/s with fp32 accumulation, label);
# the first match wins, so specific variants come before the general name. bf16 None: not supported.
PEAK_TFLOPS: tuple[tuple[str, float, float | None, str], ...] = (
    (r"H100.*PCIE", 756.0, 756.0, "H100 PCIe"),
    (r"H100.*NVL", 835.0, 835.0, "H100 NVL"),
    (r"H100", 989.0, 989.0, "H100 SXM"),
    (r"H200.*NVL", 835.0, 835.0, "H200 NVL"),
    (r"H200", 989.0, 989.0, "H200 SXM"),
    (r"A100", 312.0, 312.0, "A100"),
    (r"L40S", 362.0, 362.0, "L40S"),
    (r"\bL4\b", 121.0, 121.0, "L4"),
    (r"RTX 4090", 165.2, 165.2, "GeForce RTX 4090"),
    (r"RTX 3090(?! TI)", 71.0, 71.0, "GeForce RTX 3090"),
    (r"V100.*PCIE", 112.0, None, "V100 PCIe"),
    (r"V100", 125.0, None, "V100 SXM2"),
    (r"\bT4\b", 65.0, None, "T4"),
)


@dataclass(frozen=True)
class Peak:
    """A device's peak rate for one compute precision, or why there is none."""

    flops_per_s: float | None
    description: str  # e.g. "989 TFLOP/s (H100 SXM, bf16 dense)" or "unknown peak (...)"


def peak_flops(device_type: str, device_name: str | None, precision: str) -> Peak:
    """The dense peak FLOP/s of ``device_name`` computing in ``precision`` ("fp16", "bf16", "fp32")."""
    if device_type != "cuda":
        return Peak(None, f"unknown peak (no peak figures for {device_type} devices)")
    if precision not in ("fp16", "bf16"):
        return Peak(
            None, f"unknown peak ({precision} compute: the tensor-core rate depends on TF32 settings)"
        )
    name = (device_name or "").upper()
    for pattern, fp16, bf16, label in PEAK_TFLOPS:
        if re.search(pattern, name):
            tflops = fp16 if precision == "fp16" else bf16
            if tflops is None:
                return Peak(None, f"unknown peak ({label} has no {precision} tensor cores)")
            return Peak(tflops * 1e12, f"{tflops:g} TFLOP/s ({label}, {precision} dense)")
    return Peak(None, f"unknown peak ({device_name or 'unnamed GPU'} is not in the peak table)")


def mfu(flops_per_step: float | None, step_seconds: float, peak: Peak) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over the peak; None without a count or a peak."""
    if not flops_per_step or peak.flops_per_s is None or step_seconds <= 0:
        return None
    return flops_per_step / step_seconds / peak.flops_per_s


def _cpu_attention_formulas() -> dict:
    """``FlopCounterMode`` formulas for the CPU flash-attention kernels (torch counts only the CUDA ones)."""
    from torch.utils import flop_counter

    aten = torch.ops.aten
    formulas = {}
    forward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if forward is not None:

        def forward_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

        formulas[forward] = forward_flops
    if backward is not None:

        def backward_flops(
            grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
        ):
            return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

        formulas[backward] = backward_flops
    return formulas


def count_flops(step: Callable[[], object]) -> int:
    """The FLOPs ``FlopCounterMode`` counts while ``step()`` runs (forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_cpu_attention_formulas()) as counter:
        step()
    return int(counter.get_total_flops())
