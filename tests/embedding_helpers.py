"""Shared helpers for the embedding / PNG tests (reference files and small factories)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from hypothesis import strategies as st

from extension.embedding import Embedding


def _reference_dir() -> Path:
    """The CEO's reference files: ``shared/`` beside the checkout (as CI lays it out), or $TI_TRAINER_SHARED."""
    candidates = [Path(os.environ["TI_TRAINER_SHARED"])] if os.environ.get("TI_TRAINER_SHARED") else []
    candidates += [Path(__file__).resolve().parents[2] / "shared", Path("/work/shared")]
    for base in candidates:
        if (base / "reference" / "embeddings").is_dir():
            return base / "reference" / "embeddings"
    raise RuntimeError(f"reference embeddings not found in any of {[str(c) for c in candidates]}")


REF = _reference_dir()


def reference_files() -> list[Path]:
    """Every reference embedding file that has a JSON sidecar."""
    return sorted(p for p in REF.iterdir() if p.suffix != ".json" and p.with_name(p.name + ".json").exists())


def sidecar(path: Path) -> dict:
    return json.loads(path.with_name(path.name + ".json").read_text())


def tensor_sha256(t: torch.Tensor) -> str:
    """SHA-256 of the float32 little-endian bytes (the sidecars' ``sha256_float32_le``)."""
    return hashlib.sha256(t.numpy().astype("<f4").tobytes()).hexdigest()


def bits(t: torch.Tensor) -> np.ndarray:
    """The raw float32 bit patterns (tells -0.0 from 0.0)."""
    return t.numpy().view(np.int32)


def make_embedding(n: int = 2, d: int = 768, name: str = "test", seed: int = 0, **kwargs) -> Embedding:
    g = torch.Generator().manual_seed(seed)
    return Embedding(name, torch.randn(n, d, generator=g) * 0.05, **kwargs)


def make_sdxl(n: int = 2, name: str = "xl", seed: int = 0, **kwargs) -> Embedding:
    g = torch.Generator().manual_seed(seed)
    return Embedding(
        name,
        {"clip_l": torch.randn(n, 768, generator=g), "clip_g": torch.randn(n, 1280, generator=g)},
        **kwargs,
    )


def same_bits(a: Embedding, b: Embedding) -> bool:
    ta, tb = a.tensors(), b.tensors()
    return ta.keys() == tb.keys() and all(np.array_equal(bits(ta[k]), bits(tb[k])) for k in ta)


# byte-level mutations for fuzzing: (operation, position as a fraction, byte value, count)
mutation = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
    st.floats(0, 1, exclude_max=True),  # where (fraction of the file)
    st.integers(0, 255),
    st.integers(1, 64),  # how many bytes
)


def mutate(data: bytes, muts) -> bytes:
    b = bytearray(data)
    for op, where, value, count in muts:
        if not b:
            break
        i = int(where * len(b))
        if op == "flip":
            b[i] ^= 1 << (value % 8)
        elif op == "set":
            b[i : i + count] = bytes([value]) * len(b[i : i + count])
        elif op == "insert":
            b[i:i] = bytes([value]) * count
        elif op == "delete":
            del b[i : i + count]
        else:
            del b[i:]
    return bytes(b)
