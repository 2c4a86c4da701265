"""Property tests: what we save loads back bit-identical (safetensors and .pt)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from embedding_helpers import same_bits
from hypothesis import given, settings
from hypothesis import strategies as st

from extension.embedding import Embedding, load_embedding, sanitize_name, save_embedding

# float32 values including ±0, subnormals and the extremes
special = st.sampled_from(
    [0.0, -0.0, 1e-45, -1e-45, 1.1754942e-38, 3.4028235e38, -3.4028235e38, 1e-30, 65504.0]
)
values = st.one_of(special, st.floats(width=32, allow_nan=False, allow_infinity=False))


@st.composite
def embeddings(draw, allow_sdxl=True):
    name = draw(st.text(min_size=1, max_size=24))
    step = draw(st.one_of(st.none(), st.integers(0, 10**9)))
    ckpt_hash = draw(st.one_of(st.none(), st.text(alphabet="0123456789abcdef", min_size=10, max_size=10)))
    ckpt_name = draw(st.one_of(st.none(), st.text(min_size=1, max_size=20)))
    n = draw(st.integers(1, 4))
    if allow_sdxl and draw(st.integers(0, 5)) == 0:
        vecs = {}
        for key, d in (("clip_l", 768), ("clip_g", 1280)):
            a = np.zeros((n, d), np.float32)
            a.flat[:16] = draw(st.lists(values, min_size=16, max_size=16))
            vecs[key] = torch.from_numpy(a)
    else:
        d = draw(st.sampled_from([1, 3, 17, 768, 1024]))
        flat = draw(st.lists(values, min_size=min(n * d, 64), max_size=min(n * d, 64)))
        a = np.zeros(n * d, np.float32)
        a[: len(flat)] = flat
        vecs = torch.from_numpy(a.reshape(n, d))
    return Embedding(name, vecs, step=step, checkpoint_hash=ckpt_hash, checkpoint_name=ckpt_name)


@settings(max_examples=40, deadline=None)
@given(emb=embeddings(), fmt=st.sampled_from(["safetensors", "pt"]))
def test_save_load_round_trip(emb, fmt):
    with tempfile.TemporaryDirectory() as d:
        path = save_embedding(emb, Path(d) / sanitize_name(emb.name), format=fmt)
        back = load_embedding(path)
    assert same_bits(back, emb)
    assert back.name == path.stem  # the web UI's rule: tensor files are named by their stem
    if fmt == "safetensors" or not emb.is_sdxl:
        assert back.metadata["stored_name"] == emb.name
        assert back.step == emb.step
        assert back.checkpoint_hash == emb.checkpoint_hash
        assert back.checkpoint_name == emb.checkpoint_name
