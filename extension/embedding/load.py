"""``load_embedding``: every embedding file layout, safely."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from . import diffusers_pair
from .errors import EmbeddingFormatError
from .layouts import embedding_from_data
from .model import Embedding
from .names import name_from_path
from .safe_pickle import MAX_TENSOR_FILE_BYTES, safe_torch_load

PICKLE_SUFFIXES = (".pt", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)
IMAGE_SUFFIXES = (".png", ".webp", ".jxl", ".avif")
SUPPORTED_SUFFIXES = PICKLE_SUFFIXES + SAFETENSORS_SUFFIXES + IMAGE_SUFFIXES


def _read_limited(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_TENSOR_FILE_BYTES:
            raise EmbeddingFormatError(
                f"the file is {size // (1024 * 1024)} MiB, far too big for an embedding (is it a model?)",
                path,
            )
        return path.read_bytes()
    except OSError as exc:
        raise EmbeddingFormatError(f"cannot read the file ({exc.strerror or exc})", path) from None


def read_safetensors(path: str | os.PathLike) -> tuple[dict, dict[str, str]]:
    """Tensors and string metadata of a ``.safetensors`` file (EmbeddingFormatError if damaged)."""
    import safetensors.torch

    path = Path(path)
    data = _read_limited(path)
    if len(data) < 10:
        raise EmbeddingFormatError("truncated safetensors file (no header)", path)
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise EmbeddingFormatError("truncated or corrupt safetensors file (header runs past the end)", path)
    try:
        tensors = safetensors.torch.load(data)
        header = json.loads(data[8 : 8 + n])
    except Exception as exc:  # SafetensorError, JSON errors, dtype errors...
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise EmbeddingFormatError(f"corrupt safetensors file: {first}", path) from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    meta = {str(k): v for k, v in meta.items() if isinstance(v, str)} if isinstance(meta, dict) else {}
    return tensors, meta


def _read_tensor_file(path: Path) -> tuple[object, dict[str, str], str]:
    """A ``.pt``/``.bin`` (safely) or ``.safetensors`` file: ``(object, string metadata, container)``."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return safe_torch_load(path), {}, "pt"
    tensors, meta = read_safetensors(path)
    return tensors, meta, "safetensors"


def load_embedding(path: str | os.PathLike) -> Embedding:
    """Load an embedding from ``.pt``/``.bin`` (never unpickling code), ``.safetensors`` or an image.

    The name follows the web UI: the file stem for tensor files, the stored name (else the stem)
    for images; a stored name is kept in ``metadata["stored_name"]`` and the detected layout in
    ``metadata["source_layout"]``.  Either file of diffusers' SDXL pair (``learned_embeds[_2]``,
    see :mod:`.diffusers_pair`) gives the pair when the other one is beside it.  Any problem raises
    EmbeddingFormatError naming the file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise EmbeddingFormatError("no such file" if not path.exists() else "not a regular file", path)
    if suffix in PICKLE_SUFFIXES + SAFETENSORS_SUFFIXES:
        pair = diffusers_pair.pair_paths(path)
        if pair is not None and all(p.is_file() for p in pair):
            first, second = (_read_tensor_file(p) for p in pair)
            return diffusers_pair.combine(first[:2], second[:2], *pair, container=first[2])
        data, meta, container = _read_tensor_file(path)
        return embedding_from_data(data, path, name=name_from_path(path), container=container, metadata=meta)
    if suffix in IMAGE_SUFFIXES:
        from ..png.extract import extract_from_image

        emb = extract_from_image(path)
        if emb is None:
            raise EmbeddingFormatError(
                "this picture carries no embedding (no sd-ti-embedding text chunk and no pixel bands)", path
            )
        return emb
    raise EmbeddingFormatError(
        f"unsupported file type {suffix or '(none)'}; expected one of {', '.join(SUPPORTED_SUFFIXES)}", path
    )
