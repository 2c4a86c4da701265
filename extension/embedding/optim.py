"""The web UI's ``<embedding>.pt.optim`` side file and its 16-bit checksum."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .atomic import atomic_write_bytes
from .errors import EmbeddingFormatError
from .model import SDXL_KEYS, normalise_vectors
from .pt_container import torch_save_bytes
from .safe_pickle import safe_torch_load


def _flat(vectors: object) -> torch.Tensor:
    v = normalise_vectors(vectors)
    if isinstance(v, dict):  # our own convention for pairs (the web UI never trains SDXL)
        return torch.cat([v[k].reshape(-1) for k in SDXL_KEYS])
    return v.reshape(-1)


def optim_checksum(vectors: torch.Tensor | dict[str, torch.Tensor]) -> str:
    """The web UI's ``Embedding.checksum()``: 4 lowercase hex digits.

    Each element is multiplied by 100 in float32 and truncated toward zero; then
    ``r = (r * 281 ^ t * 997) mod 2**32`` over the row-major elements; the low 16 bits are returned.
    """
    scaled = (_flat(vectors) * 100).tolist()  # float32 products, exactly widened to Python floats
    r = 0
    try:
        for v in scaled:
            r = (r * 281 ^ int(v) * 997) & 0xFFFFFFFF
    except OverflowError:
        raise EmbeddingFormatError(
            "vectors too large for the .optim checksum (value * 100 overflows float32)"
        ) from None
    return f"{r & 0xFFFF:04x}"


def optim_path(path: str | os.PathLike) -> Path:
    """``<file>.optim`` for an embedding file (a path already ending in ``.optim`` is kept)."""
    p = Path(path)
    return p if p.suffix == ".optim" else p.with_name(p.name + ".optim")


def save_optim_file(
    path: str | os.PathLike,
    vectors: torch.Tensor | dict[str, torch.Tensor],
    optimizer_state_dict: dict,
    *,
    overwrite: bool = False,
) -> Path:
    """Write the web UI's ``{"hash": checksum, "optimizer_state_dict": state}`` beside ``path``.

    ``path`` is the embedding file (``x.pt`` -> ``x.pt.optim``) or the ``.optim`` path itself.
    Written atomically in the container the web UI's safety check accepts.
    """
    target = optim_path(path)
    data = torch_save_bytes({"hash": optim_checksum(vectors), "optimizer_state_dict": optimizer_state_dict})
    return atomic_write_bytes(target, data, overwrite=overwrite)


def load_optim_file(path: str | os.PathLike, vectors: torch.Tensor | dict[str, torch.Tensor]) -> dict | None:
    """The optimizer state saved for ``vectors``, or None when there is no ``.optim`` file or its
    checksum does not match (the state belongs to other vectors).  Loaded with weights_only."""
    target = optim_path(path)
    if not target.is_file():
        return None
    data = safe_torch_load(target)
    if not isinstance(data, dict) or "optimizer_state_dict" not in data:
        raise EmbeddingFormatError("not an .optim file (no optimizer_state_dict)", target)
    if data.get("hash") != optim_checksum(vectors):
        return None
    state = data["optimizer_state_dict"]
    if not isinstance(state, dict):
        raise EmbeddingFormatError("optimizer_state_dict is not a dict", target)
    return state
