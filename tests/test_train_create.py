"""create_embedding: the web UI's rule for spreading init-text tokens over the vectors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from extension.backends.tiny import build_tiny_backend
from extension.training.create import create_embedding, init_vectors, spread_rows, vectors_for_backend

_BACKENDS: dict[str, object] = {}


def tiny(family: str):
    if family not in _BACKENDS:
        _BACKENDS[family] = build_tiny_backend(family)
    return _BACKENDS[family]


def indices_of(rows: torch.Tensor, table: torch.Tensor) -> list[int]:
    """Which row of ``table`` each of ``rows`` is."""
    return [int((table == r).all(dim=1).nonzero()[0]) for r in rows]


@pytest.mark.parametrize(
    "m, n, expected",
    [(1, 3, [0, 0, 0]), (3, 5, [0, 0, 1, 1, 2]), (5, 2, [0, 2]), (4, 4, [0, 1, 2, 3]), (7, 3, [0, 2, 4])],
)
def test_spread_rows_takes_token_i_times_m_over_n(m, n, expected):
    table = torch.arange(m, dtype=torch.float32).unsqueeze(1).repeat(1, 3)
    assert spread_rows(table, n)[:, 0].long().tolist() == expected


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40))
def test_spread_rows_properties(m, n):
    table = torch.arange(m, dtype=torch.float32).unsqueeze(1)
    picked = spread_rows(table, n)[:, 0].long().tolist()
    assert len(picked) == n and picked[0] == 0
    assert picked == sorted(picked) and all(0 <= i < m for i in picked)
    if n >= m:
        assert set(picked) == set(range(m))  # every token used
    else:
        assert len(set(picked)) == n  # no token used twice


def test_sd1_init_text_is_cut_to_n_tokens_then_spread():
    backend = tiny("sd1")
    text = "a red cat sitting on a chair"
    tokens = backend.token_embeddings(text)["clip_l"]
    assert tokens.shape[0] > 3
    # CLIP-L: the web UI tokenises with max_length = n_vectors, so only the first tokens count
    emb = create_embedding(backend, "tst", text, 3)
    assert emb.step == 0 and emb.name == "tst" and emb.vectors.shape == (3, 32)
    assert indices_of(emb.vectors, tokens) == [0, 1, 2]
    few = create_embedding(backend, "tst", "red cat", 5)
    two = backend.token_embeddings("red cat")["clip_l"]
    assert indices_of(few.vectors, two) == [0, 0, 0, 1, 1]
    star = create_embedding(backend, "tst", "*", 4)
    assert torch.equal(star.vectors, backend.token_embeddings("*")["clip_l"].expand(4, -1))


def test_sd2_init_text_is_spread_without_cutting():
    backend = tiny("sd2")
    text = "a red cat sitting on a chair"
    tokens = backend.token_embeddings(text)["clip_g"]
    m = tokens.shape[0]
    emb = create_embedding(backend, "tst", text, 3)
    assert emb.vectors.shape == (3, 48)
    assert indices_of(emb.vectors, tokens) == [(i * m) // 3 for i in range(3)]


def test_sdxl_makes_clip_l_and_clip_g_rows():
    backend = tiny("sdxl")
    vectors = init_vectors(backend, "red cat", 3)
    assert {k: tuple(v.shape) for k, v in vectors.items()} == {"clip_l": (3, 32), "clip_g": (3, 48)}
    for key in ("clip_l", "clip_g"):
        tokens = backend.token_embeddings("red cat")[key]
        assert indices_of(vectors[key], tokens) == [0, 0, 1]


def test_sdxl_clip_l_and_clip_g_start_from_the_same_init_tokens():
    # more tokens than vectors: both encoders take the first tokens (CLIP-L's rule), not clip_l the
    # first two and clip_g two spread over all four
    backend = tiny("sdxl")
    text = "a red cat sitting"
    vectors = init_vectors(backend, text, 2)
    picked = {}
    for key in ("clip_l", "clip_g"):
        tokens = backend.token_embeddings(text)[key]
        assert tokens.shape[0] == 4
        picked[key] = indices_of(vectors[key], tokens)
    assert picked["clip_l"] == picked["clip_g"] == [0, 1]


def test_zeros_and_empty_init_text_give_zero_vectors():
    backend = tiny("sd1")
    for emb in (create_embedding(backend, "z", "cat", 2, zeros=True), create_embedding(backend, "z", "", 2)):
        assert torch.equal(emb.vectors, torch.zeros(2, 32))


def test_bad_arguments():
    backend = tiny("sd1")
    with pytest.raises(ValueError, match="not a safe file name"):
        create_embedding(backend, "a/b", "cat", 1)
    with pytest.raises(ValueError, match="at least 1"):
        create_embedding(backend, "ok", "cat", 0)


def test_vectors_for_backend_refuses_a_layout_of_another_family():
    sd1, sdxl = tiny("sd1"), tiny("sdxl")
    emb = create_embedding(sd1, "tst", "cat", 2)
    assert set(vectors_for_backend(emb, sd1)) == {"clip_l"}
    with pytest.raises(ValueError, match="two text encoders"):
        vectors_for_backend(emb, sdxl)
