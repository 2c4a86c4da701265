"""Shared test settings."""

import os

# Tiny models on a 2-core machine: one intra-op thread is faster than two fighting over the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch  # imported after OMP_NUM_THREADS is set

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def backends():
    """One tiny randomly initialised backend per family, built once per test module."""
    from extension.backends.tiny import build_tiny_backend

    return {family: build_tiny_backend(family) for family in ("sd1", "sd2", "sdxl")}
