"""Fuzzing the tensor loaders with mutated real files: only EmbeddingFormatError may escape."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from embedding_helpers import REF, mutate, mutation
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extension.embedding import Embedding, EmbeddingFormatError, load_embedding

TENSOR_FILES = [
    "sd15-4v.pt",
    "sd15-4v.diffusers.bin",
    "sd15-4v.kohya.safetensors",
    "sdxl-2v.kohya.safetensors",
]


def check_only_format_errors(path: Path) -> None:
    try:
        result = load_embedding(path)
    except EmbeddingFormatError as exc:
        assert str(path) in str(exc)
    else:
        assert isinstance(result, Embedding)


@pytest.mark.parametrize("name", TENSOR_FILES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(muts=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_tensor_files(name, muts):
    data = mutate((REF / name).read_bytes(), muts)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        check_only_format_errors(path)


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".safetensors", ".png", ".webp"])
@settings(max_examples=15, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes(suffix, data):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"r{suffix}"
        path.write_bytes(data)
        check_only_format_errors(path)
