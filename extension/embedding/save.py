"""``save_embedding``: .safetensors (default) or the web UI's .pt, always written atomically."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .. import __version__
from .atomic import atomic_write_bytes
from .model import SDXL_KEYS, Embedding
from .optim import save_optim_file
from .pt_container import torch_save_bytes

FORMATS = {"safetensors": ".safetensors", "pt": ".pt"}
_SUFFIX_FORMATS = {".safetensors": "safetensors", ".pt": "pt", ".bin": "pt"}
# metadata keys that describe where a loaded embedding came from, not the embedding itself
_DERIVED_KEYS = {"stored_name", "source_layout", "payload_layout", "source_files"}
TRAINER = f"ti-trainer {__version__}"


def resolve_format(path: str | os.PathLike, format: str | None) -> tuple[Path, str]:
    """The output path and format: from the suffix, or ``format`` (its suffix is appended when the
    path has no known one).  A suffix that contradicts ``format`` raises ValueError."""
    path = Path(path)
    by_suffix = _SUFFIX_FORMATS.get(path.suffix.lower())
    if format is not None:
        fmt = format.lower().lstrip(".")
        if fmt not in FORMATS:
            raise ValueError(f"unknown embedding format {format!r}; expected one of {', '.join(FORMATS)}")
        if by_suffix is None:
            return path.with_name(path.name + FORMATS[fmt]), fmt
        if by_suffix != fmt:
            raise ValueError(f"{path}: the suffix {path.suffix} does not match format {fmt!r}")
        return path, fmt
    if by_suffix is None:
        return path.with_name(path.name + ".safetensors"), "safetensors"
    return path, by_suffix


def safetensors_metadata(embedding: Embedding) -> dict[str, str]:
    """The string metadata stored in our ``.safetensors`` files."""
    meta = {k: v for k, v in embedding.metadata.items() if k not in _DERIVED_KEYS}
    meta.update({"name": embedding.name, "vectors": str(embedding.n_vectors), "trainer": TRAINER})
    if embedding.step is not None:
        meta["step"] = str(embedding.step)
    if embedding.checkpoint_hash:
        meta["sd_checkpoint"] = embedding.checkpoint_hash
    if embedding.checkpoint_name:
        meta["sd_checkpoint_name"] = embedding.checkpoint_name
    return meta


def safetensors_bytes(embedding: Embedding) -> bytes:
    """``emb_params`` (SD1/SD2) or ``clip_l`` + ``clip_g`` (SDXL) with string metadata."""
    import safetensors.torch

    tensors = {k: t.contiguous().clone() for k, t in embedding.tensors().items()}
    return safetensors.torch.save(tensors, metadata=safetensors_metadata(embedding))


def webui_pt_object(embedding: Embedding) -> dict:
    """The object the web UI's ``Embedding.save`` pickles (SDXL: the ``{clip_l, clip_g}`` dict it reads)."""
    if isinstance(embedding.vectors, dict):
        return {k: embedding.vectors[k].clone() for k in SDXL_KEYS}
    return {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": embedding.vectors.clone()},
        "name": embedding.name,
        "step": embedding.step,
        "sd_checkpoint": embedding.checkpoint_hash,
        "sd_checkpoint_name": embedding.checkpoint_name,
    }


def pt_bytes(embedding: Embedding, archive_name: str = "archive") -> bytes:
    """The web UI's ``.pt`` layout in a container its safety check accepts."""
    return torch_save_bytes(webui_pt_object(embedding), archive_name)


def save_embedding(
    embedding: Embedding,
    path: str | os.PathLike,
    format: str | None = None,
    *,
    overwrite: bool = False,
    optimizer_state: dict | None = None,
) -> Path:
    """Save ``embedding`` atomically and return the written path.

    ``format`` is "safetensors" (default) or "pt"; when omitted it comes from the suffix
    (``.safetensors``, ``.pt``, ``.bin``).  An existing file is replaced only with ``overwrite=True``
    (the old one is kept as ``<file>.bak`` until the new one is complete).  ``optimizer_state``
    is written as the web UI's ``<file>.optim`` for ``.pt`` output and ignored otherwise (the web
    UI only looks for ``<name>.pt.optim``).
    """
    if not isinstance(embedding, Embedding):
        raise TypeError(f"expected an Embedding, got {type(embedding).__name__}")
    target, fmt = resolve_format(path, format)
    if fmt == "pt":
        archive = re.sub(r"[^A-Za-z0-9._-]", "_", target.stem) or "archive"
        data = pt_bytes(embedding, archive)
    else:
        data = safetensors_bytes(embedding)
    written = atomic_write_bytes(target, data, overwrite=overwrite)
    if fmt == "pt" and optimizer_state is not None:
        save_optim_file(written, embedding.vectors, optimizer_state, overwrite=True)
    return written


__all__ = ["resolve_format", "save_embedding"]
