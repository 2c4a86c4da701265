"""The Embedding object: normalisation, validation and properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extension.embedding import Embedding, EmbeddingFormatError, sanitize_name


def test_normalises_dtype_device_grad_and_1d():
    v = torch.nn.Parameter(torch.randn(768, dtype=torch.float16))
    e = Embedding("x", v)
    assert e.vectors.dtype == torch.float32 and e.vectors.shape == (1, 768)
    assert not e.vectors.requires_grad and e.vectors.device.type == "cpu"
    assert torch.equal(e.vectors[0], v.detach().float())


def test_bfloat16_and_numpy_are_converted():
    e = Embedding("x", torch.ones(2, 1024, dtype=torch.bfloat16))
    assert e.vectors.dtype == torch.float32 and e.model_family == "sd2"
    e2 = Embedding("x", np.zeros((3, 5), dtype=np.float64))
    assert e2.n_vectors == 3 and e2.width == 5 and e2.model_family == "unknown"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_are_refused(bad):
    v = torch.zeros(2, 768)
    v[1, 3] = bad
    with pytest.raises(EmbeddingFormatError, match="NaN or infinite"):
        Embedding("x", v)


def test_float64_overflowing_float32_is_refused():
    with pytest.raises(EmbeddingFormatError, match="NaN or infinite"):
        Embedding("x", torch.full((1, 4), 1e300, dtype=torch.float64))


@pytest.mark.parametrize("shape", [(0, 768), (2, 0), (2, 3, 4), ()])
def test_bad_shapes(shape):
    with pytest.raises(EmbeddingFormatError):
        Embedding("x", torch.zeros(shape))


def test_sdxl_pair_properties():
    e = Embedding("xl", {"clip_g": torch.zeros(3, 1280), "clip_l": torch.zeros(3, 768, dtype=torch.float16)})
    assert e.is_sdxl and e.n_vectors == 3 and e.width == 2048 and e.model_family == "sdxl"
    assert list(e.tensors()) == ["clip_l", "clip_g"]


def test_mismatched_sdxl_pairs():
    with pytest.raises(EmbeddingFormatError, match="mismatched SDXL pair"):
        Embedding("xl", {"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(3, 1280)})
    with pytest.raises(EmbeddingFormatError, match="mismatched SDXL pair"):
        Embedding("xl", {"clip_l": torch.zeros(2, 1280), "clip_g": torch.zeros(2, 768)})
    with pytest.raises(EmbeddingFormatError, match="clip_l and clip_g"):
        Embedding("xl", {"clip_l": torch.zeros(2, 768)})
    with pytest.raises(EmbeddingFormatError, match="mismatched SDXL pair"):
        Embedding("xl", {"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(2, 1024)})
    with pytest.raises(EmbeddingFormatError, match="narrower"):
        Embedding("xl", {"clip_l": torch.zeros(2, 48), "clip_g": torch.zeros(2, 32)})


def test_small_model_sdxl_pair_is_accepted():
    # the tiny SDXL test model has 32 + 48 wide encoders
    e = Embedding("xl", {"clip_l": torch.zeros(2, 32), "clip_g": torch.zeros(2, 48)})
    assert e.is_sdxl and e.width == 80 and e.n_vectors == 2


def test_field_types_are_checked():
    with pytest.raises(EmbeddingFormatError):
        Embedding(3, torch.zeros(1, 4))  # type: ignore[arg-type]
    with pytest.raises(EmbeddingFormatError):
        Embedding("x", torch.zeros(1, 4), step="10")  # type: ignore[arg-type]
    with pytest.raises(EmbeddingFormatError):
        Embedding("x", [[1.0, 2.0]])  # type: ignore[arg-type]
    assert Embedding("x", torch.zeros(1, 4), step=np.int64(7)).step == 7


def test_equality_compares_bits():
    a = Embedding("x", torch.tensor([[0.0, 1.0]]))
    b = Embedding("x", torch.tensor([[-0.0, 1.0]]))
    assert a != b and a == Embedding("x", torch.tensor([[0.0, 1.0]]))


def test_error_names_the_path():
    err = EmbeddingFormatError("broken", "/some/file.pt")
    assert str(err) == "/some/file.pt: broken" and isinstance(err, ValueError)


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("my emb", "my emb"),
        ("../../etc/passwd", "etcpasswd"),
        ("a/b\\c:d*e?f", "abcdef"),
        ("", "embedding"),
        ("...", "embedding"),
        ("CON", "embedding-CON"),
        ("nul.txt", "embedding-nul.txt"),
        ("ünïcødé-名前", "ünïcødé-名前"),
        ("trailing. ", "trailing"),
    ],
)
def test_sanitize_name(name, stem):
    assert sanitize_name(name) == stem


def test_sanitize_name_limits_length():
    assert len(sanitize_name("é" * 500).encode()) <= 150
