"""Creating a new embedding from an init text, and converting between embeddings and the
per-encoder vector sets the backend works with."""

from __future__ import annotations

import torch

from ..backends.base import Backend
from ..embedding import Embedding
from ..embedding.names import sanitize_name

# The web UI tokenises the init text for CLIP-L with ``max_length=n_vectors`` (so it is cut to
# n_vectors tokens) but encodes it for OpenCLIP (SD2) without any limit; we follow both rules. A
# model with CLIP-L (SD1, SDXL) cuts every encoder's tokens the same way, so that an SDXL pair's
# clip_l and clip_g rows start from the same init tokens.
_TRUNCATING_ENCODER = "clip_l"


def spread_rows(token_rows: torch.Tensor, n_vectors: int) -> torch.Tensor:
    """``n_vectors`` rows taken from ``token_rows`` (m, D): row i is token ``(i * m) // n_vectors``.

    Fewer tokens than vectors repeat tokens; more tokens than vectors skip some, evenly.
    """
    m = int(token_rows.shape[0])
    index = torch.tensor([(i * m) // n_vectors for i in range(n_vectors)], dtype=torch.long)
    return token_rows.detach().float().cpu()[index].clone()


def init_vectors(backend: Backend, init_text: str, n_vectors: int, *, zeros: bool = False) -> dict[str, torch.Tensor]:
    """Per encoder key, ``(n_vectors, width)`` float32 starting vectors.

    An empty ``init_text`` or ``zeros=True`` gives zero vectors (the web UI's rule for an empty
    init text); otherwise the token embeddings of the text are spread over the vectors.
    """
    if n_vectors < 1:
        raise ValueError(f"number of vectors must be at least 1, got {n_vectors}")
    if zeros or not init_text:
        return {k: torch.zeros(n_vectors, w, dtype=torch.float32) for k, w in backend.encoder_widths.items()}
    rows = backend.token_embeddings(init_text)
    n_tokens = min(int(rows[key].shape[0]) for key in backend.encoder_widths)
    if _TRUNCATING_ENCODER in backend.encoder_widths:
        n_tokens = min(n_tokens, n_vectors)
    out: dict[str, torch.Tensor] = {}
    for key in backend.encoder_widths:
        tokens = rows[key][:n_tokens]
        if tokens.shape[0] == 0:
            raise ValueError(
                f"init text {init_text!r} has no tokens for {key}; use a word such as 'person' or '*', "
                "or pass --zeros"
            )
        out[key] = spread_rows(tokens, n_vectors)
    return out


def embedding_from_vectors(
    name: str, vectors: dict[str, torch.Tensor], backend: Backend, *, step: int | None = None, **kwargs
) -> Embedding:
    """An :class:`Embedding` of per-encoder ``vectors`` (one tensor, or the SDXL pair)."""
    detached = {k: v.detach().float().cpu().clone() for k, v in vectors.items()}
    payload = detached if len(detached) > 1 else next(iter(detached.values()))
    kwargs.setdefault("checkpoint_hash", getattr(backend, "checkpoint_hash", None))
    kwargs.setdefault("checkpoint_name", getattr(backend, "checkpoint_name", None))
    return Embedding(name, payload, step=step, **kwargs)


def vectors_for_backend(embedding: Embedding, backend: Backend) -> dict[str, torch.Tensor]:
    """The embedding's vectors keyed by the backend's encoder keys.

    Raises ValueError when the layout (single tensor vs SDXL pair) does not match the model.
    Widths are not checked here (see ``config.embedding_fit_problems``).
    """
    keys = list(backend.encoder_widths)
    if isinstance(embedding.vectors, dict):
        if set(keys) != set(embedding.vectors):
            raise ValueError(
                f"embedding {embedding.name!r} is an SDXL pair (clip_l + clip_g) but the model is "
                f"{backend.family}; pick an SDXL model or start a new embedding"
            )
        return {k: embedding.vectors[k].clone() for k in keys}
    if len(keys) != 1:
        raise ValueError(
            f"embedding {embedding.name!r} has one vector set of width {embedding.width} but the "
            f"{backend.family} model has two text encoders ({', '.join(keys)}); it was made for another "
            "model family - pick a matching model or start a new embedding"
        )
    return {keys[0]: embedding.vectors.clone()}


def create_embedding(
    backend: Backend, name: str, init_text: str = "*", n_vectors: int = 1, *, zeros: bool = False
) -> Embedding:
    """A new embedding (step 0) for ``backend``: the init text spread over ``n_vectors`` as the
    web UI does, or zeros. For SDXL both ``clip_l`` and ``clip_g`` rows are made."""
    if not name or sanitize_name(name) != name:
        raise ValueError(
            f"embedding name {name!r} is not a safe file name; use only letters, digits and '._- '"
            + (f" (e.g. {sanitize_name(name)!r})" if name else "")
        )
    vectors = init_vectors(backend, init_text, n_vectors, zeros=zeros)
    return embedding_from_vectors(name, vectors, backend, step=0)
