"""The in-memory embedding: float32 vectors plus the training metadata the web UI keeps."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import EmbeddingFormatError

SDXL_KEYS = ("clip_l", "clip_g")
SDXL_WIDTHS = {"clip_l": 768, "clip_g": 1280}
FAMILY_BY_WIDTH = {768: "sd1", 1024: "sd2"}

Vectors = torch.Tensor | dict[str, torch.Tensor]


def as_float32_matrix(value: object, what: str = "vectors") -> torch.Tensor:
    """``value`` as a detached, contiguous float32 CPU tensor of shape ``(n, D)``.

    A 1-D ``(D,)`` vector becomes one row; float16/bfloat16/float64/integer input is converted.
    Raises EmbeddingFormatError for anything else, an empty shape, or NaN/infinite values.
    """
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise EmbeddingFormatError(f"{what} has dtype {value.dtype}, expected numbers")
        value = torch.from_numpy(np.array(value, order="C", copy=True))
    if not isinstance(value, torch.Tensor):
        raise EmbeddingFormatError(f"{what} is a {type(value).__name__}, expected a tensor")
    t = value.detach()
    if t.is_complex():
        raise EmbeddingFormatError(f"{what} has complex dtype {t.dtype}, expected real numbers")
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2:
        raise EmbeddingFormatError(
            f"{what} has shape {tuple(t.shape)}, expected (vectors, width) or (width,)"
        )
    if t.shape[0] < 1 or t.shape[1] < 1:
        raise EmbeddingFormatError(f"{what} has empty shape {tuple(t.shape)}")
    try:
        t = t.to(device="cpu", dtype=torch.float32).contiguous()
    except (RuntimeError, TypeError) as exc:
        raise EmbeddingFormatError(f"{what} cannot be converted to float32: {exc}") from None
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise EmbeddingFormatError(
            f"{what} contains {bad} NaN or infinite value(s) (or values too large for float32); "
            "the embedding is damaged - use an earlier snapshot"
        )
    return t


def normalise_vectors(vectors: object) -> Vectors:
    """Validate and normalise a single ``(n, D)`` tensor or an SDXL ``{clip_l, clip_g}`` pair."""
    if isinstance(vectors, dict):
        keys = set(vectors)
        if keys != set(SDXL_KEYS):
            raise EmbeddingFormatError(
                f"a vector dict must have exactly the SDXL keys clip_l and clip_g, got {sorted(map(str, keys))}"
            )
        pair = {k: as_float32_matrix(vectors[k], k) for k in SDXL_KEYS}
        widths = {k: t.shape[1] for k, t in pair.items()}
        # Real SDXL pairs are exactly 768 + 1280. Other widths only come from small test models
        # (e.g. the tiny SDXL backend); those must still be ordered like a real pair.
        real_sized = any(widths[k] == SDXL_WIDTHS[k] for k in SDXL_KEYS)
        for k in SDXL_KEYS:
            if real_sized and widths[k] != SDXL_WIDTHS[k]:
                raise EmbeddingFormatError(
                    f"mismatched SDXL pair: {k} has width {widths[k]}, expected {SDXL_WIDTHS[k]}"
                )
        if not real_sized and widths["clip_l"] >= widths["clip_g"]:
            raise EmbeddingFormatError(
                f"mismatched SDXL pair: clip_l is {widths['clip_l']} wide and clip_g {widths['clip_g']}; "
                "clip_l must be the narrower encoder (768 and 1280 in SDXL)"
            )
        if pair["clip_l"].shape[0] != pair["clip_g"].shape[0]:
            raise EmbeddingFormatError(
                "mismatched SDXL pair: clip_l has "
                f"{pair['clip_l'].shape[0]} vectors but clip_g has {pair['clip_g'].shape[0]}"
            )
        return pair
    return as_float32_matrix(vectors)


@dataclass(eq=False)
class Embedding:
    """A textual-inversion embedding.

    ``vectors`` is a float32 ``(n, D)`` tensor, or for SDXL ``{"clip_l": (n, 768), "clip_g": (n, 1280)}``.
    Construction normalises the tensors (detached, CPU, float32, 1-D -> one row) and rejects
    anything else with EmbeddingFormatError.
    """

    name: str
    vectors: Vectors
    step: int | None = None
    checkpoint_hash: str | None = None
    checkpoint_name: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise EmbeddingFormatError(f"embedding name must be a string, got {type(self.name).__name__}")
        self.vectors = normalise_vectors(self.vectors)
        if self.step is not None:
            if isinstance(self.step, bool) or not isinstance(self.step, int | np.integer):
                raise EmbeddingFormatError(f"step must be an int or None, got {self.step!r}")
            self.step = int(self.step)
        for attr in ("checkpoint_hash", "checkpoint_name"):
            value = getattr(self, attr)
            if value is not None and not isinstance(value, str):
                raise EmbeddingFormatError(f"{attr} must be a string or None, got {type(value).__name__}")
        if not isinstance(self.metadata, dict):
            raise EmbeddingFormatError("metadata must be a dict of strings")
        self.metadata = {str(k): str(v) for k, v in self.metadata.items()}

    @classmethod
    def create(cls, name: str, vectors: object, **kwargs) -> Embedding:
        """Alias of the constructor (normalises ``vectors`` the same way)."""
        return cls(name, vectors, **kwargs)  # type: ignore[arg-type]

    @property
    def is_sdxl(self) -> bool:
        """True for an SDXL ``{clip_l, clip_g}`` pair."""
        return isinstance(self.vectors, dict)

    @property
    def n_vectors(self) -> int:
        """How many prompt-token slots the embedding uses."""
        if isinstance(self.vectors, dict):
            return int(self.vectors["clip_g"].shape[0])
        return int(self.vectors.shape[0])

    @property
    def width(self) -> int:
        """Vector width ``D`` (2048 = 768 + 1280 for an SDXL pair, as the web UI counts it)."""
        if isinstance(self.vectors, dict):
            return sum(int(t.shape[1]) for t in self.vectors.values())
        return int(self.vectors.shape[1])

    @property
    def model_family(self) -> str:
        """Best guess of the model family: "sd1" (768), "sd2" (1024), "sdxl" (pair) or "unknown"."""
        if self.is_sdxl:
            return "sdxl"
        return FAMILY_BY_WIDTH.get(self.width, "unknown")

    def tensors(self) -> dict[str, torch.Tensor]:
        """The vectors as named tensors (``{"clip_l", "clip_g"}`` or ``{"emb_params"}``)."""
        if isinstance(self.vectors, dict):
            return {k: self.vectors[k] for k in SDXL_KEYS}
        return {"emb_params": self.vectors}

    def replace(self, **changes) -> Embedding:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def same_vectors(self, other: Embedding) -> bool:
        """True when both hold bit-identical vectors."""
        a, b = self.tensors(), other.tensors()
        return a.keys() == b.keys() and all(
            a[k].shape == b[k].shape and bool(torch.equal(a[k].view(torch.int32), b[k].view(torch.int32)))
            for k in a
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Embedding):
            return NotImplemented
        return (
            self.name == other.name
            and self.step == other.step
            and self.checkpoint_hash == other.checkpoint_hash
            and self.checkpoint_name == other.checkpoint_name
            and self.metadata == other.metadata
            and self.same_vectors(other)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shape = (
            {k: tuple(t.shape) for k, t in self.vectors.items()}
            if isinstance(self.vectors, dict)
            else tuple(self.vectors.shape)
        )
        return f"Embedding(name={self.name!r}, shape={shape}, step={self.step}, family={self.model_family})"
