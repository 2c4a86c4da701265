"""Which numeric precision a training run computes in, and the autocast / loss scaling it needs.

The policy (one place, used by the loop, the config check, the CLI loader and the benchmark):

- ``fp32``: no autocast; the frozen weights must be float32 (a half-precision model is refused
  with the backend's :attr:`fp32_hint` rather than silently computing in half precision).
- ``fp16``: autocast to float16 with a GradScaler, always (as the web UI's own trainer does); CUDA only.
- ``bf16``: autocast to bfloat16, no scaler; on CUDA only where the GPU computes bf16 natively
  (compute capability 8 or newer); the CPU has bf16 autocast too.
- ``auto``: bf16 on native-bf16 GPUs, fp16 with a scaler on other GPUs, fp32 elsewhere.

The trained vectors stay float32 leaves in every case; autocast casts them per operation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
AUTOCAST_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
WEIGHT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class PrecisionError(ValueError):
    """A precision that cannot run on this device or model; the message says what to do instead."""


@dataclass(frozen=True)
class Precision:
    """The precision a run actually uses."""

    name: str  # "fp32", "fp16" or "bf16"
    device_type: str
    weight_dtype: torch.dtype

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return AUTOCAST_DTYPES[self.name]

    @property
    def uses_grad_scaler(self) -> bool:
        return self.name == "fp16"

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context the forward passes run in (a no-op for fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.autocast_dtype)

    def autocast_factory(self) -> Callable[[], contextlib.AbstractContextManager] | None:
        """``autocast`` as a factory, or None for fp32 (what the loss helpers take)."""
        return None if self.autocast_dtype is None else self.autocast

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device_type) if self.uses_grad_scaler else None

    def describe(self) -> str:
        """One line for the UI and the run summary, e.g. "bf16 autocast over float16 weights"."""
        weights = str(self.weight_dtype).replace("torch.", "")
        if self.name == "fp32":
            return f"fp32 (float32 weights, no autocast) on {self.device_type}"
        scaler = " with loss scaling" if self.uses_grad_scaler else ""
        return f"{self.name} autocast{scaler} over {weights} weights on {self.device_type}"


def bf16_native(device: torch.device | str) -> bool:
    """Whether ``device`` is a CUDA GPU that computes bfloat16 natively (not emulated)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch without the keyword: native means compute capability >= 8
        return torch.cuda.get_device_capability(device)[0] >= 8
    except Exception:  # pragma: no cover - depends on the driver
        return False


def resolve_name(requested: str, device_type: str, bf16_is_native: bool) -> str:
    """"fp32", "fp16" or "bf16" for a requested precision (``auto`` resolved), without checks."""
    if requested != "auto":
        return requested
    if device_type == "cuda":
        return "bf16" if bf16_is_native else "fp16"
    return "fp32"


def precision_problem(
    requested: str, device_type: str, *, bf16_is_native: bool, weight_dtype: torch.dtype, fp32_hint: str = ""
) -> str | None:
    """Why ``requested`` cannot run on this device and model (a message with the fix), or None."""
    if requested not in PRECISIONS:
        return f"precision {requested!r} is unknown; use one of {', '.join(PRECISIONS)}"
    name = resolve_name(requested, device_type, bf16_is_native)
    if name == "fp16" and device_type != "cuda":
        return f"precision fp16 needs a CUDA device (the model is on {device_type}); use fp32 or bf16"
    if name == "bf16" and device_type == "cuda" and not bf16_is_native:
        return (
            "precision bf16 needs a GPU that computes bfloat16 natively (compute capability 8.0 or newer, "
            "e.g. RTX 30xx/40xx, A100, H100); this one would emulate it slowly: use fp16 (with loss scaling) or auto"
        )
    if name == "fp32" and weight_dtype != torch.float32:
        weights = str(weight_dtype).replace("torch.", "")
        hint = f": {fp32_hint}" if fp32_hint else "; load the model in float32 or choose fp16 / bf16"
        return f"precision fp32 needs float32 weights, but the model is loaded in {weights}{hint}"
    return None


def choose_precision(
    requested: str, device: torch.device | str, *, weight_dtype: torch.dtype, fp32_hint: str = "",
    bf16_is_native: bool | None = None,
) -> Precision:  # fmt: skip
    """The :class:`Precision` a run uses; raises :class:`PrecisionError` when it cannot run."""
    device = torch.device(device)
    native = bf16_native(device) if bf16_is_native is None else bf16_is_native
    problem = precision_problem(
        requested, device.type, bf16_is_native=native, weight_dtype=weight_dtype, fp32_hint=fp32_hint
    )
    if problem:
        raise PrecisionError(problem)
    return Precision(resolve_name(requested, device.type, native), device.type, weight_dtype)


def weight_dtype_for(requested: str, device: torch.device | str, *, bf16_is_native: bool | None = None) -> torch.dtype:
    """The dtype a standalone model is loaded in for ``requested`` (the compute precision itself)."""
    device = torch.device(device)
    native = bf16_native(device) if bf16_is_native is None else bf16_is_native
    name = resolve_name(requested if requested in PRECISIONS else "auto", device.type, native)
    return WEIGHT_DTYPES[name]


def nan_advice(precision_name: str) -> str:
    """What to try after a non-finite loss, for the precision that produced it."""
    common = "try a lower learn rate (e.g. a tenth) or gradient clipping (clip gradients by norm)"
    if precision_name == "fp16":
        return f"{common}, or precision bf16 (on GPUs that support it) or fp32 instead of fp16"
    if precision_name == "bf16":
        return f"{common}, or precision fp32"
    return common
