"""diffusers' SDXL textual-inversion files: one file per text encoder, read together as one SDXL pair.

``examples/textual_inversion/textual_inversion_sdxl.py`` saves ``{placeholder_token: (n, 768)}`` from
the first text encoder (CLIP-L) to ``learned_embeds.safetensors`` and ``{placeholder_token: (n, 1280)}``
from the second (CLIP-G, in the training dtype, fp16 under mixed precision) to
``learned_embeds_2.safetensors``, both with metadata ``{"format": "pt"}``; every ``--save_steps`` it
writes ``learned_embeds-steps-N.safetensors`` and ``learned_embeds_2-steps-N.safetensors``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from .errors import EmbeddingFormatError
from .layouts import embedding_from_data
from .model import Embedding
from .names import name_from_path

_NAME = re.compile(r"learned_embeds(?P<second>_2)?(?P<steps>-steps-\d+)?")
_SUFFIXES = (".safetensors", ".bin")
LAYOUT = "diffusers-sdxl-pair"


def pair_paths(path: str | Path) -> tuple[Path, Path] | None:
    """``(CLIP-L file, CLIP-G file)`` when ``path`` is named like either file of the pair (whether
    they exist is not checked), else None."""
    path = Path(path)
    m = _NAME.fullmatch(path.stem)
    if m is None or path.suffix.lower() not in _SUFFIXES:
        return None
    steps = m["steps"] or ""
    return path.with_name(f"learned_embeds{steps}{path.suffix}"), path.with_name(
        f"learned_embeds_2{steps}{path.suffix}"
    )


def is_second_half(path: str | Path) -> bool:
    """Whether ``path`` is named like the CLIP-G file (``learned_embeds_2[-steps-N]``)."""
    m = _NAME.fullmatch(Path(path).stem)
    return m is not None and Path(path).suffix.lower() in _SUFFIXES and bool(m["second"])


def _single_term(data: object, path: Path) -> tuple[str, object]:
    if not isinstance(data, Mapping) or len(data) != 1:
        keys = ", ".join(sorted(map(str, data))[:4]) if isinstance(data, Mapping) else type(data).__name__
        raise EmbeddingFormatError(f"{path.name} holds {keys}, not one {{token: vectors}} entry")
    ((token, vectors),) = data.items()
    return str(token), vectors


def combine(
    first: tuple[object, Mapping[str, str]],
    second: tuple[object, Mapping[str, str]],
    first_path: Path,
    second_path: Path,
    container: str,
) -> Embedding:
    """The SDXL embedding of a pair: ``first``/``second`` are each file's loaded object and metadata.

    Named after the CLIP-L file, as the web UI names a file after its stem.  Raises
    EmbeddingFormatError (naming both files and the way out) when they do not form one pair.
    """
    try:
        token_l, clip_l = _single_term(first[0], first_path)
        token_g, clip_g = _single_term(second[0], second_path)
        if token_l != token_g:
            raise EmbeddingFormatError(
                f"they were trained for different tokens ({token_l!r} and {token_g!r})"
            )
        emb = embedding_from_data(
            {"clip_l": clip_l, "clip_g": clip_g},
            None,
            name=name_from_path(first_path),
            container=container,
            metadata=dict(first[1]),
        )
    except EmbeddingFormatError as exc:
        raise EmbeddingFormatError(
            f"{first_path.name} + {second_path.name} do not form diffusers' SDXL pair: {exc.problem}; "
            f"move {second_path.name} out of the folder to read {first_path.name} on its own",
            first_path,
        ) from None
    emb.metadata.update(source_layout=LAYOUT, source_files=f"{first_path.name} + {second_path.name}")
    return emb


def lone_half_problem(path: str | Path, embedding: Embedding) -> str | None:
    """Why ``embedding``, read from ``path`` without its CLIP-L sibling, should not be imported on its
    own (it is only the CLIP-G half of an SDXL pair), with the way to import the pair; else None."""
    path, pair = Path(path), pair_paths(path)
    if embedding.is_sdxl or pair is None or not is_second_half(path):
        return None
    return (
        f"{path.name} is only the CLIP-G half of diffusers' SDXL textual-inversion pair; its CLIP-L half "
        f"{pair[0].name} is needed too. Put both files in one folder, run "
        f"`python -m extension convert {pair[0].name} NAME.safetensors` and import NAME.safetensors"
    )
