"""Loading never runs code from a file, and every kind of bad input is one clear error."""

from __future__ import annotations

import pickle
from collections import OrderedDict

import pytest
import safetensors.torch
import torch
from embedding_helpers import REF, same_bits

from extension.embedding import EmbeddingFormatError, load_embedding


class _Payload:
    """Unpickling this would create ``marker`` (through the builtin open)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_torch_file_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"string_to_param": {"*": torch.zeros(1, 768)}, "x": _Payload(marker)}, path)
    # sanity: a full unpickle really would run it
    with pytest.raises(EmbeddingFormatError, match=r"refused to unpickle.*open.*safetensors"):
        load_embedding(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("suffix", [".pt", ".bin"])
def test_malicious_plain_and_legacy_pickles_are_refused(tmp_path, suffix):
    marker = tmp_path / "pwned"
    raw = tmp_path / f"raw{suffix}"
    raw.write_bytes(pickle.dumps({"emb_params": _Payload(marker)}, protocol=2))
    legacy = tmp_path / f"legacy{suffix}"
    torch.save({"emb_params": _Payload(marker)}, legacy, _use_new_zipfile_serialization=False)
    for path in (raw, legacy):
        with pytest.raises(EmbeddingFormatError):
            load_embedding(path)
    assert not marker.exists()


def test_legacy_parameterdict_layout_loads(tmp_path):
    v = torch.randn(3, 768)
    path = tmp_path / "old-ti.pt"
    torch.save(
        {
            "string_to_token": {"*": torch.tensor(265)},
            "string_to_param": torch.nn.ParameterDict({"*": torch.nn.Parameter(v.clone())}),
        },
        path,
    )
    emb = load_embedding(path)
    assert emb.name == "old-ti" and emb.metadata["source_layout"] == "parameterdict-pt"
    assert torch.equal(emb.vectors, v) and emb.step is None
    # the allow-list is scoped to our load: torch's global state is untouched afterwards
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_legacy_non_zip_format_loads(tmp_path):
    v = torch.randn(2, 1024)
    path = tmp_path / "legacy.pt"
    torch.save(
        {"string_to_param": {"*": v}, "name": "n", "step": 3}, path, _use_new_zipfile_serialization=False
    )
    emb = load_embedding(path)
    assert torch.equal(emb.vectors, v) and emb.step == 3 and emb.model_family == "sd2"


def test_gpu_style_requires_grad_fp16_and_1d(tmp_path):
    v = torch.randn(768, dtype=torch.float16)
    path = tmp_path / "concept.bin"
    torch.save({"<concept>": v}, path)
    emb = load_embedding(path)
    assert emb.vectors.shape == (1, 768) and emb.vectors.dtype == torch.float32
    assert emb.name == "concept" and emb.metadata["source_layout"] == "diffusers"
    p = torch.nn.Parameter(torch.randn(2, 768))
    torch.save({"string_to_param": {"*": p}, "name": "g", "step": 1}, tmp_path / "g.pt")
    assert not load_embedding(tmp_path / "g.pt").vectors.requires_grad


def test_bf16_safetensors(tmp_path):
    v = torch.randn(2, 768).to(torch.bfloat16)
    safetensors.torch.save_file({"emb_params": v}, tmp_path / "b.safetensors")
    emb = load_embedding(tmp_path / "b.safetensors")
    assert emb.vectors.dtype == torch.float32 and torch.equal(emb.vectors, v.float())


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"a": torch.zeros(1, 768), "b": torch.zeros(1, 768)}, "exactly one term"),
        ({"string_to_param": {"*": torch.zeros(1, 768), "+": torch.zeros(1, 768)}}, "2 terms"),
        ({"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(3, 1280)}, "mismatched SDXL pair"),
        ({"clip_g": torch.zeros(2, 1280)}, "mismatched SDXL pair"),
        ({"emb_params": torch.tensor([[1.0, float("nan")]])}, "NaN"),
        ({"emb_params": torch.tensor([[1.0, float("inf")]])}, "NaN or infinite"),
        ({"name": "only metadata"}, "no tensor"),
        ({"emb_params": torch.zeros(2, 3, 4)}, "shape"),
        ([torch.zeros(2)], "list"),
        ({"string_to_param": {"*": "not a tensor"}}, "expected a tensor"),
    ],
)
def test_bad_content_is_one_clear_error(tmp_path, obj, message):
    path = tmp_path / "bad.pt"
    torch.save(obj, path)
    with pytest.raises(EmbeddingFormatError, match=message) as info:
        load_embedding(path)
    assert str(path) in str(info.value)


def test_bad_safetensors_content(tmp_path):
    path = tmp_path / "two.safetensors"
    safetensors.torch.save_file({"a": torch.zeros(1, 768), "b": torch.zeros(1, 768)}, path)
    with pytest.raises(EmbeddingFormatError, match="exactly one term"):
        load_embedding(path)


@pytest.mark.parametrize("name", ["sd15-4v.pt", "sd15-4v.kohya.safetensors", "sd15-4v.diffusers.bin"])
@pytest.mark.parametrize("keep", [0, 5, 100, 0.5, 0.99])
def test_truncated_files(tmp_path, name, keep):
    data = (REF / name).read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    path = tmp_path / name
    path.write_bytes(data[:n])
    with pytest.raises(EmbeddingFormatError, match=name):
        load_embedding(path)


def test_missing_unknown_and_empty(tmp_path):
    with pytest.raises(EmbeddingFormatError, match="no such file"):
        load_embedding(tmp_path / "nope.pt")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(EmbeddingFormatError, match="unsupported file type"):
        load_embedding(tmp_path / "x.txt")
    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(EmbeddingFormatError, match="empty"):
        load_embedding(tmp_path / "e.pt")


def test_ordered_dict_and_kohya_pt(tmp_path):
    v = torch.randn(3, 768)
    torch.save(OrderedDict(emb_params=v), tmp_path / "k.pt")
    emb = load_embedding(tmp_path / "k.pt")
    assert emb.metadata["source_layout"] == "kohya" and torch.equal(emb.vectors, v)


def test_pt_and_safetensors_give_the_same_vectors():
    a = load_embedding(REF / "sd15-4v.pt")
    for other in ("sd15-4v.kohya.safetensors", "sd15-4v.diffusers.bin", "sd15-4v.pixels.png"):
        assert same_bits(a, load_embedding(REF / other))


def test_loading_is_fast():
    import time

    load_embedding(REF / "sd15-4v.pt")
    t = time.perf_counter()
    for _ in range(10):
        load_embedding(REF / "sd15-4v.pt")
        load_embedding(REF / "sd15-4v.kohya.safetensors")
    assert (time.perf_counter() - t) / 20 < 0.05
