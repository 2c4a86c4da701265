"""Shared test settings."""

import os

# Tiny models on a 2-core machine: one intra-op thread is faster than two fighting over the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # imported after OMP_NUM_THREADS is set

torch.set_num_threads(1)
