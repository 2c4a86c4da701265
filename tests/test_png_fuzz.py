"""Fuzzing the image extractor with mutated real cards: only EmbeddingFormatError may escape."""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from embedding_helpers import REF, mutate, mutation
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from extension.embedding import Embedding, EmbeddingFormatError, load_embedding
from extension.png import TEXT_KEY, extract_from_image

PNGS = ["sd15-4v.pixels.png", "sd15-4v.text.png", "sdxl-2v.text.png"]


def _check(target) -> None:
    try:
        result = extract_from_image(target)
    except EmbeddingFormatError:
        return
    assert result is None or isinstance(result, Embedding)


@pytest.mark.parametrize("name", PNGS)
@settings(max_examples=30, deadline=None)
@given(muts=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_png_files(name, muts):
    data = mutate((REF / name).read_bytes(), muts)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        _check(path)
        try:
            load_embedding(path)
        except EmbeddingFormatError:
            pass


with Image.open(REF / "sd15-4v.pixels.png") as _im:
    _PIXELS = np.asarray(_im.convert("RGB")).copy()
with Image.open(REF / "sd15-4v.text.png") as _im:
    _TEXT = base64.b64decode(_im.text[TEXT_KEY])


@settings(max_examples=40, deadline=None)
@given(
    edits=st.lists(
        st.tuples(
            st.floats(0, 1, exclude_max=True),
            st.floats(0, 1, exclude_max=True),
            st.integers(0, 2),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_mutated_band_pixels(edits):
    px = _PIXELS.copy()
    h, w, _ = px.shape
    for fy, fx, c, v in edits:
        px[int(fy * h), int(fx * w), c] = v
    _check(Image.fromarray(px))


@settings(max_examples=40, deadline=None)
@given(muts=st.lists(mutation, min_size=1, max_size=3), encode=st.booleans())
def test_mutated_text_payload(muts, encode):
    text = mutate(_TEXT, muts)
    info = PngInfo()
    info.add_text(TEXT_KEY, base64.b64encode(text) if encode else text)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (50, 50, 50)).save(buf, "PNG", pnginfo=info)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        _check(im)
