"""Memory readings without extra dependencies: process RSS from ``/proc`` (Linux) or
``resource``, and the CUDA allocator's peak where there is CUDA."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_field(name: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes, or None where there is no such file."""
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + ":"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


def rss_bytes() -> int | None:
    """The current resident set size of this process, or None when it cannot be read."""
    return _status_field("VmRSS")


def peak_rss_bytes() -> int | None:
    """The peak resident set size since the process started (or since :func:`reset_peak_rss`)."""
    value = _status_field("VmHWM")
    if value is not None:
        return value
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB elsewhere


def reset_peak_rss() -> bool:
    """Reset the peak RSS to the current RSS (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def cuda_reset_peak(device: torch.device) -> None:
    """Start a new CUDA peak measurement on ``device`` (nothing on other devices)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def cuda_peak_bytes(device: torch.device) -> int | None:
    """The CUDA allocator's peak on ``device`` since the last reset, or None off CUDA."""
    if device.type != "cuda":
        return None
    return int(torch.cuda.max_memory_allocated(device))


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so a timer read afterwards covers it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
