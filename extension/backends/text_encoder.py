"""Chunk-based CLIP text encoding with trainable vectors injected, as the web UI does it (spec §5-§7).

Each prompt is chunked by :func:`..prompt.chunking.chunk_batch` (emphasis, ``BREAK``, comma
backtracking, embeddings kept whole). Every chunk index is encoded as one batch by the
transformers CLIP text model; while it runs, a forward hook on its token-embedding layer replaces
the placeholder rows of each embedding with the trainable vectors (``torch.where`` on the layer's
output, so the graph reaches the vectors and nothing else). The CLIP-skip layer is picked, the
emphasis weights are applied per chunk index over the whole batch, and the chunks are concatenated
along the token axis.

Hooking the embedding layer rather than feeding ``inputs_embeds`` keeps the model's own forward
(position ids, causal mask, attention backend), which differs between transformers 4.x and 5.x
(5.x's ``CLIPTextModel`` accepts only ``input_ids``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..prompt.chunking import Chunk, SpecialTokens, Tokenize, chunk_batch, empty_chunk
from ..weighting import apply_emphasis, select_hidden_layer

CHUNK_ROWS = 77


@dataclass(frozen=True)
class TextOptions:
    """The web UI options that change text conditioning."""

    emphasis: str = "Original"  # "Original" | "No norm" | "Ignore" | "None"
    clip_skip: int = 1  # SD1 "Clip skip"; SDXL CLIP-L too when sdxl_clip_l_skip is on
    comma_backtrack: int = 20  # "Prompt word wrap length limit"
    sdxl_clip_l_skip: bool = False  # the web UI option "Clip skip for SDXL CLIP-L"


@dataclass(frozen=True)
class EncoderSpec:
    """One text encoder and how its output is taken.

    ``skip`` is the CLIP-skip count into ``hidden_states`` (1 = last layer, 2 = penultimate);
    ``final_norm`` applies the final LayerNorm to that layer's output.
    """

    key: str  # "clip_l" or "clip_g"
    model: nn.Module  # transformers CLIPTextModel or CLIPTextModelWithProjection
    tokenize: Tokenize
    special: SpecialTokens
    skip: int
    final_norm: bool

    @property
    def transformer(self) -> nn.Module:
        """The module holding ``embeddings`` and ``final_layer_norm`` (4.x and 5.x layouts)."""
        inner = getattr(self.model, "text_model", None)
        return inner if inner is not None else self.model

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.transformer.embeddings.token_embedding

    @property
    def width(self) -> int:
        return int(self.token_embedding.weight.shape[1])


def embedding_sizes(key: str, width: int, embeddings: Mapping[str, Mapping[str, Tensor]]) -> dict[str, int]:
    """Name -> vector count for encoder ``key``; checks every embedding fits that encoder."""
    sizes: dict[str, int] = {}
    for name, vector_set in embeddings.items():
        if key not in vector_set:
            raise ValueError(
                f"embedding {name!r} has no vectors for the {key} text encoder (it has {sorted(vector_set)}); "
                "it was made for another model family: train or load one for this model"
            )
        vectors = vector_set[key]
        if vectors.ndim != 2 or vectors.shape[0] < 1:
            raise ValueError(f"embedding {name!r} {key} vectors must be (n, {width}), got {tuple(vectors.shape)}")
        if vectors.shape[1] != width:
            raise ValueError(
                f"embedding {name!r} has {key} vectors of width {vectors.shape[1]} but this model's {key} "
                f"encoder is {width} wide; the embedding was made for another model"
            )
        sizes[name] = int(vectors.shape[0])
    return sizes


def _injection(
    chunks: Sequence[Chunk], vectors: Mapping[str, Tensor], rows: int, device: torch.device
) -> tuple[Tensor, Tensor] | None:
    """``(mask (B, rows), values (B, rows, C))`` placing each fix's vectors, or None if no fixes."""
    batch_idx: list[int] = []
    row_idx: list[int] = []
    pieces: list[Tensor] = []
    for b, chunk in enumerate(chunks):
        for offset, name in chunk.fixes:
            emb = vectors[name]
            n = min(rows - offset - 1, emb.shape[0])  # the web UI's clamp; +1 skips START
            if n <= 0:
                continue
            batch_idx += [b] * n
            row_idx += range(offset + 1, offset + 1 + n)
            pieces.append(emb[:n])
    if not pieces:
        return None
    width = pieces[0].shape[1]
    b_t = torch.tensor(batch_idx, device=device)
    r_t = torch.tensor(row_idx, device=device)
    stacked = torch.cat([p.to(device) for p in pieces])
    values = torch.zeros(len(chunks), rows, width, device=device, dtype=stacked.dtype)
    values = values.index_put((b_t, r_t), stacked)  # out of place: the graph reaches the vectors
    mask = torch.zeros(len(chunks), rows, dtype=torch.bool, device=device)
    mask[b_t, r_t] = True
    return mask, values


@contextmanager
def _injected(layer: nn.Module, injection: tuple[Tensor, Tensor] | None):
    """Replace rows of ``layer``'s output while the context is open."""
    if injection is None:
        yield
        return
    mask, values = injection

    def hook(_module, _inputs, output: Tensor) -> Tensor:
        return torch.where(mask.unsqueeze(-1), values.to(output.dtype), output)

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def encode_chunk_batch(
    spec: EncoderSpec,
    chunks: Sequence[Chunk],
    vectors: Mapping[str, Tensor],
    *,
    pooled: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Encode one chunk index of a batch: ``z`` ``(B, 77, C)`` before emphasis, and the pooled output.

    The pooled output (SDXL CLIP-G) is the last layer after the final LayerNorm at the first END,
    through the text projection.
    """
    device = spec.token_embedding.weight.device
    rows = len(chunks[0].tokens)
    if any(len(c.tokens) != rows for c in chunks) or rows > CHUNK_ROWS:
        raise ValueError(
            f"a chunk holds {max(len(c.tokens) for c in chunks)} tokens; CLIP takes {CHUNK_ROWS}: "
            "an embedding with more than 75 vectors cannot be used, use fewer vectors"
        )
    ids = torch.tensor([c.tokens for c in chunks], dtype=torch.long, device=device)
    with _injected(spec.token_embedding, _injection(chunks, vectors, rows, device)):
        out = spec.model(input_ids=ids, output_hidden_states=True)
    norm = spec.transformer.final_layer_norm if spec.final_norm else None
    z = select_hidden_layer(out.hidden_states, spec.skip, norm)
    pooled_out = None
    if pooled:
        projection = getattr(spec.model, "text_projection", None)
        if projection is None:
            raise ValueError(f"the {spec.key} text encoder has no text projection, so it gives no pooled output")
        first_end = (ids == spec.special.end).int().argmax(dim=1)  # row 0 when a row has no END
        last = out.last_hidden_state[torch.arange(len(chunks), device=device), first_end]
        pooled_out = projection(last)
    return z, pooled_out


def chunk_prompts(
    spec: EncoderSpec,
    prompts: Sequence[str],
    sizes: Mapping[str, int],
    options: TextOptions,
    cache: ChunkCache | None = None,
) -> list[list[Chunk]]:
    """The chunks of every prompt for one encoder (shorter prompts filled up with empty chunks).

    With a ``cache``, each distinct prompt is tokenised and chunked once: training draws the same
    template lines again and again, and re-tokenising them every micro-batch is measurable overhead.
    """
    if cache is None:
        return chunk_batch(
            list(prompts),
            spec.tokenize,
            spec.special,
            sizes,
            comma_backtrack=options.comma_backtrack,
            emphasis=options.emphasis,
        )
    per_prompt = [cache.get(spec, prompt, sizes, options) for prompt in prompts]
    pad_chunks(per_prompt, max(len(chunks) for chunks in per_prompt), spec.special)
    return per_prompt


class _Identity:
    """Hashes and compares by object identity, keeping the object alive."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Identity) and other.obj is self.obj


class ChunkCache:
    """A bounded cache of one prompt's chunks, keyed by everything that decides them."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, list[Chunk]] = OrderedDict()

    def get(self, spec: EncoderSpec, prompt: str, sizes: Mapping[str, int], options: TextOptions) -> list[Chunk]:
        """A fresh list (callers extend it) of the cached chunks of ``prompt``."""
        # the tokenizer object itself (kept alive by the key) so that a swapped tokenizer never hits
        tokenizer = getattr(spec.tokenize, "__self__", spec.tokenize)
        key = (
            _Identity(tokenizer),
            spec.special,
            prompt,
            tuple(sorted(sizes.items())),
            options.comma_backtrack,
            options.emphasis,
        )
        chunks = self._entries.get(key)
        if chunks is None:
            chunks = chunk_batch(
                [prompt],
                spec.tokenize,
                spec.special,
                sizes,
                comma_backtrack=options.comma_backtrack,
                emphasis=options.emphasis,
            )[0]
            self._entries[key] = chunks
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return list(chunks)


def pad_chunks(per_prompt: list[list[Chunk]], count: int, special: SpecialTokens) -> None:
    """Fill every prompt's chunk list up to ``count`` with empty chunks, in place."""
    for chunks in per_prompt:
        chunks.extend(empty_chunk(special) for _ in range(count - len(chunks)))


def encode_prompts(
    spec: EncoderSpec,
    per_prompt: Sequence[Sequence[Chunk]],
    embeddings: Mapping[str, Mapping[str, Tensor]],
    options: TextOptions,
    *,
    pooled: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Encode pre-chunked prompts: ``(B, 77·k, C)`` with emphasis applied, and the pooled output of chunk 0."""
    vectors = {name: vector_set[spec.key] for name, vector_set in embeddings.items()}
    count = len(per_prompt[0])
    outputs: list[Tensor] = []
    pooled_out = None
    for j in range(count):
        column = [chunks[j] for chunks in per_prompt]
        z, pooled_j = encode_chunk_batch(spec, column, vectors, pooled=pooled and j == 0)
        if j == 0:
            pooled_out = pooled_j
        weights = torch.tensor([c.multipliers for c in column], dtype=torch.float32, device=z.device)
        outputs.append(apply_emphasis(z, weights, options.emphasis))
    return torch.cat(outputs, dim=1), pooled_out
