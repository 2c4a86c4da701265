"""Recognising the embedding layouts inside a loaded file (the web UI's rules, plus our metadata)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch

from .errors import EmbeddingFormatError
from .model import SDXL_KEYS, Embedding, as_float32_matrix

# safetensors metadata keys written by save_embedding
META_NAME, META_STEP, META_HASH, META_CKPT, META_VECTORS, META_TRAINER = (
    "name",
    "step",
    "sd_checkpoint",
    "sd_checkpoint_name",
    "vectors",
    "trainer",
)


def _is_tensor_like(value: object) -> bool:
    return isinstance(value, torch.Tensor | np.ndarray)


def _step(value: object) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value.item())
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def classify(data: object) -> tuple[str, object]:
    """Pick the vectors out of a loaded object, as the web UI does.

    Returns ``(layout, vectors)`` where layout is "a1111", "parameterdict", "sdxl-pair",
    "kohya", "diffusers" or "tensor", and vectors a tensor or a ``{clip_l, clip_g}`` dict
    (not yet normalised).  Raises EmbeddingFormatError (without path) otherwise.
    """
    if isinstance(data, torch.Tensor):
        return "tensor", data
    if not isinstance(data, Mapping):
        raise EmbeddingFormatError(
            f"the file holds a {type(data).__name__}, neither a textual-inversion embedding nor a diffusers concept"
        )
    if "string_to_param" in data:
        params = data["string_to_param"]
        layout = "a1111"
        if isinstance(params, torch.nn.ParameterDict) or hasattr(params, "_parameters"):
            params = getattr(params, "_parameters", params)
            layout = "parameterdict"
        if not isinstance(params, Mapping):
            raise EmbeddingFormatError("string_to_param is not a mapping of tensors")
        if len(params) != 1:
            raise EmbeddingFormatError(
                f"the embedding file has {len(params)} terms in string_to_param; exactly one is supported "
                "(split it into one file per term)"
            )
        (value,) = params.values()
        if not _is_tensor_like(value):
            raise EmbeddingFormatError(f"string_to_param holds a {type(value).__name__}, expected a tensor")
        return layout, value
    if "clip_l" in data and "clip_g" in data:
        pair = {k: data[k] for k in SDXL_KEYS}
        for k, v in pair.items():
            if not _is_tensor_like(v):
                raise EmbeddingFormatError(f"SDXL {k} is a {type(v).__name__}, expected a tensor")
        return "sdxl-pair", pair
    if "clip_l" in data or "clip_g" in data:
        have = "clip_l" if "clip_l" in data else "clip_g"
        other = "clip_g" if have == "clip_l" else "clip_l"
        if len(data) == 1:
            raise EmbeddingFormatError(
                f"mismatched SDXL pair: the file has {have} but no {other}; an SDXL embedding needs both"
            )
    tensors = {k: v for k, v in data.items() if _is_tensor_like(v)}
    if not tensors:
        raise EmbeddingFormatError(
            "no tensor found: neither a textual-inversion embedding (string_to_param, clip_l/clip_g) "
            "nor a diffusers concept ({token: tensor})"
        )
    if len(data) != 1:
        raise EmbeddingFormatError(
            f"the file has {len(data)} entries ({', '.join(sorted(map(str, data))[:8])}); an embedding file "
            "must hold exactly one term (several terms in one file are not supported)"
        )
    (key,) = tensors
    return ("kohya" if key == "emb_params" else "diffusers"), tensors[key]


def embedding_from_data(
    data: object,
    path: str | os.PathLike | None,
    *,
    name: str,
    container: str,
    metadata: Mapping[str, str] | None = None,
    use_stored_name: bool = False,
) -> Embedding:
    """Build an Embedding from a loaded file object.

    ``container`` is "pt", "safetensors" or an image kind ("png-text", "png-pixels", ...);
    ``name`` is the file-derived name; with ``use_stored_name`` (images) a stored ``name`` wins.
    """
    try:
        layout, vectors = classify(data)
        extra: dict[str, str] = {}
        step = ckpt_hash = ckpt_name = None
        stored = None
        if isinstance(data, Mapping):
            stored = _text(data.get("name"))
            step = _step(data.get("step"))
            ckpt_hash = _text(data.get("sd_checkpoint"))
            ckpt_name = _text(data.get("sd_checkpoint_name"))
        if metadata:
            stored = stored or _text(metadata.get(META_NAME))
            step = step if step is not None else _step(metadata.get(META_STEP))
            ckpt_hash = ckpt_hash or _text(metadata.get(META_HASH)) or None
            ckpt_name = ckpt_name or _text(metadata.get(META_CKPT)) or None
            skip = {META_NAME, META_STEP, META_HASH, META_CKPT}
            extra.update({str(k): str(v) for k, v in metadata.items() if k not in skip})
        if container in ("pt", "safetensors"):
            layout = {"a1111": "a1111-pt", "parameterdict": "parameterdict-pt"}.get(layout, layout)
            if layout == "tensor" and container == "safetensors":
                layout = "diffusers"
        else:
            extra["payload_layout"] = layout
            layout = container
        if stored is not None:
            extra["stored_name"] = stored
        extra["source_layout"] = layout
        if isinstance(vectors, dict):
            vectors = {k: as_float32_matrix(v, k) for k, v in vectors.items()}
        else:
            vectors = as_float32_matrix(vectors)
        final_name = stored if (use_stored_name and stored) else name
        return Embedding(final_name, vectors, step, ckpt_hash, ckpt_name, extra)
    except EmbeddingFormatError as exc:
        if path is None:
            raise
        raise exc.with_path(path) from None
