"""Our own resume file: the optimizer (and grad scaler) state of a run, so it continues exactly.

Stored as a safetensors file ``<name>.resume`` beside the final embedding (an extension the web
UI's embedding loader ignores): the optimizer's tensors, plus a JSON header with the step, the
config hash, the encoder keys, the param groups and a hash of the vectors the state belongs to.
Loading never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .outputs import atomic_write

FORMAT = "ti-trainer-resume/1"
_META_KEY = "ti_trainer_resume"


class ResumeError(ValueError):
    """A resume file is unreadable or does not belong to the embedding being trained."""


@dataclass
class ResumeState:
    """What a resume file holds."""

    step: int
    config_hash: str
    encoder_keys: list[str]
    vectors_hash: str
    optimizer_state: dict[str, Any]
    scaler_state: dict[str, Any] | None = None


def vectors_hash(vectors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the float32 bytes of the vectors (in key order)."""
    h = hashlib.sha256()
    for key in sorted(vectors):
        h.update(key.encode())
        h.update(vectors[key].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_resume_state(path: Path, state: ResumeState) -> Path:
    """Write ``state`` atomically to ``path``."""
    tensors: dict[str, torch.Tensor] = {}
    per_param: dict[str, dict[str, Any]] = {}
    for index, entries in state.optimizer_state["state"].items():
        scalars: dict[str, Any] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[key] = value
        per_param[str(index)] = scalars
    header = {
        "format": FORMAT,
        "step": state.step,
        "config_hash": state.config_hash,
        "encoder_keys": state.encoder_keys,
        "vectors_hash": state.vectors_hash,
        "param_groups": state.optimizer_state["param_groups"],
        "scalars": per_param,
        "scaler": state.scaler_state,
    }
    metadata = {_META_KEY: json.dumps(header)}
    if not tensors:  # safetensors needs at least an empty file body; keep a marker
        tensors["empty"] = torch.zeros(0)
    return atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_resume_state(path: Path) -> ResumeState:
    """Read a resume file written by :func:`save_resume_state`."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise ResumeError(f"resume file {path} does not exist") from None
    except Exception as exc:  # safetensors raises its own error types
        raise ResumeError(f"resume file {path} cannot be read: {exc}") from None
    try:
        header = json.loads(meta[_META_KEY])
        if header.get("format") != FORMAT:
            raise ResumeError(f"resume file {path} has unknown format {header.get('format')!r}")
        state: dict[int, dict[str, Any]] = {}
        for index, scalars in header["scalars"].items():
            state[int(index)] = dict(scalars)
        for key, value in tensors.items():
            if key == "empty":
                continue
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
        groups = header["param_groups"]
        for group in groups:
            if "betas" in group:
                group["betas"] = tuple(group["betas"])
        return ResumeState(
            step=int(header["step"]),
            config_hash=str(header["config_hash"]),
            encoder_keys=list(header["encoder_keys"]),
            vectors_hash=str(header["vectors_hash"]),
            optimizer_state={"state": state, "param_groups": groups},
            scaler_state=header.get("scaler"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ResumeError):
            raise
        raise ResumeError(f"resume file {path} is damaged: {exc}") from None
