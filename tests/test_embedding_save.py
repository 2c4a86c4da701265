"""Saving: safetensors and the web UI's .pt layout, atomic writes, .optim side files."""

from __future__ import annotations

import io
import pickletools
import zipfile

import pytest
import safetensors.torch
import torch
from embedding_helpers import REF, make_embedding, make_sdxl, same_bits

from extension import __version__
from extension.embedding import (
    EmbeddingFormatError,
    load_embedding,
    load_optim_file,
    optim_checksum,
    save_embedding,
    save_optim_file,
)
from extension.embedding.pt_container import WEBUI_ALLOWED_GLOBALS, WEBUI_MEMBER_RE, webui_load_problems

SIX_KEYS = ["string_to_token", "string_to_param", "name", "step", "sd_checkpoint", "sd_checkpoint_name"]


def _globals(pkl: bytes) -> set[str]:
    return {str(arg).replace(" ", ".") for op, arg, _ in pickletools.genops(pkl) if op.name == "GLOBAL"}


def test_safetensors_layout_and_metadata(tmp_path):
    emb = make_embedding(
        3, 768, name="cat toy", step=42, checkpoint_hash="6ce0161689", checkpoint_name="v1-5"
    )
    path = save_embedding(emb, tmp_path / "cat toy.safetensors")
    tensors = safetensors.torch.load_file(path)
    assert list(tensors) == ["emb_params"] and tensors["emb_params"].dtype == torch.float32
    with safetensors.safe_open(path, "pt") as f:
        meta = f.metadata()
    assert meta == {
        "name": "cat toy",
        "step": "42",
        "sd_checkpoint": "6ce0161689",
        "sd_checkpoint_name": "v1-5",
        "vectors": "3",
        "trainer": f"ti-trainer {__version__}",
    }
    back = load_embedding(path)
    assert same_bits(back, emb) and back.step == 42 and back.checkpoint_hash == "6ce0161689"
    assert back.metadata["source_layout"] == "kohya" and back.metadata["stored_name"] == "cat toy"


def test_safetensors_sdxl_keys(tmp_path):
    emb = make_sdxl(2)
    path = save_embedding(emb, tmp_path / "xl")  # no suffix: safetensors appended
    assert path.name == "xl.safetensors"
    assert sorted(safetensors.torch.load_file(path)) == ["clip_g", "clip_l"]
    assert same_bits(load_embedding(path), emb)


def test_pt_is_the_webui_layout_and_passes_its_safety_check(tmp_path):
    emb = make_embedding(4, 768, name="sd15", step=1500, checkpoint_hash="abc", checkpoint_name="model")
    path = save_embedding(emb, tmp_path / "sd15.pt")
    data = path.read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
        assert all(WEBUI_MEMBER_RE.match(n) for n in names), names
        assert not any(n.endswith((".format_version", ".storage_alignment")) for n in names)
        assert sorted(n.split("/", 1)[1] for n in names) == sorted(
            ["data.pkl", "byteorder", "data/0", "version", ".data/serialization_id"]
        )
        pkl = z.read("sd15/data.pkl")
        for info in z.infolist():  # torch aligns record data to 64 bytes
            assert info.compress_type == zipfile.ZIP_STORED
    assert pkl[:2] == b"\x80\x02"  # pickle protocol 2
    assert _globals(pkl) == {
        "collections.OrderedDict",
        "torch.FloatStorage",
        "torch._utils._rebuild_tensor_v2",
    }
    assert _globals(pkl) <= WEBUI_ALLOWED_GLOBALS
    assert webui_load_problems(data) == []
    obj = torch.load(path, weights_only=True, map_location="cpu")
    assert list(obj) == SIX_KEYS
    assert obj["string_to_token"] == {"*": 265} and list(obj["string_to_param"]) == ["*"]
    assert obj["name"] == "sd15" and obj["step"] == 1500
    assert obj["sd_checkpoint"] == "abc" and obj["sd_checkpoint_name"] == "model"
    assert torch.equal(obj["string_to_param"]["*"], emb.vectors)
    assert torch.load(path, weights_only=True, mmap=True)["name"] == "sd15"


def test_pt_record_data_is_64_byte_aligned(tmp_path):
    import struct

    path = save_embedding(make_embedding(1, 7), tmp_path / "odd name ü.pt")
    data = path.read_bytes()
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            off = info.header_offset
            fn_len, extra_len = struct.unpack("<HH", data[off + 26 : off + 30])
            assert (off + 30 + fn_len + extra_len) % 64 == 0


def test_plain_torch_save_would_fail_the_webui_check():
    buf = io.BytesIO()
    torch.save({"a": torch.zeros(2)}, buf)
    assert webui_load_problems(buf.getvalue())  # .format_version / .storage_alignment
    assert webui_load_problems((REF / "sd15-4v.pt").read_bytes()) == []


def test_pt_sdxl_uses_the_pair_dict(tmp_path):
    emb = make_sdxl(3)
    path = save_embedding(emb, tmp_path / "xl.pt")
    obj = torch.load(path, weights_only=True)
    assert list(obj) == ["clip_l", "clip_g"]
    assert same_bits(load_embedding(path), emb)


def test_format_argument_and_suffix(tmp_path):
    emb = make_embedding()
    assert save_embedding(emb, tmp_path / "a", format="pt").name == "a.pt"
    assert save_embedding(emb, tmp_path / "b.bin").read_bytes()[:2] == b"PK"
    with pytest.raises(ValueError, match="does not match"):
        save_embedding(emb, tmp_path / "c.pt", format="safetensors")
    with pytest.raises(ValueError, match="unknown embedding format"):
        save_embedding(emb, tmp_path / "d", format="ckpt")


def test_existing_file_is_not_replaced_without_overwrite(tmp_path):
    path = tmp_path / "e.safetensors"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite"):
        save_embedding(make_embedding(), path)
    assert path.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["e.safetensors"]  # no temp file left


def test_overwrite_replaces_and_removes_the_backup(tmp_path):
    path = tmp_path / "e.pt"
    save_embedding(make_embedding(seed=1), path)
    emb2 = make_embedding(seed=2)
    save_embedding(emb2, path, overwrite=True)
    assert same_bits(load_embedding(path), emb2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.pt"]


def test_overwrite_never_deletes_a_users_own_backup(tmp_path):
    path = tmp_path / "e.pt"
    save_embedding(make_embedding(seed=1), path)
    (tmp_path / "e.pt.bak").write_bytes(b"the user's own backup")
    save_embedding(make_embedding(seed=2), path, overwrite=True)
    assert (tmp_path / "e.pt.bak").read_bytes() == b"the user's own backup"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.pt", "e.pt.bak"]


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "e.safetensors"
    save_embedding(make_embedding(seed=1), path)
    old = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("extension.embedding.atomic.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_embedding(make_embedding(seed=2), path, overwrite=True)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.safetensors"]


def test_optim_side_file(tmp_path):
    emb = make_embedding(2, 768)
    param = torch.nn.Parameter(emb.vectors.clone())
    opt = torch.optim.AdamW([param], lr=0.005)
    param.grad = torch.ones_like(param)
    opt.step()
    state = opt.state_dict()
    path = save_embedding(emb, tmp_path / "emb.pt", optimizer_state=state)
    optim = tmp_path / "emb.pt.optim"
    assert optim.exists() and webui_load_problems(optim.read_bytes()) == []
    raw = torch.load(optim, weights_only=True)
    assert raw["hash"] == optim_checksum(emb.vectors)
    loaded = load_optim_file(path, emb.vectors)
    assert loaded is not None and torch.equal(loaded["state"][0]["exp_avg"], state["state"][0]["exp_avg"])
    assert load_optim_file(path, emb.vectors + 1) is None  # other vectors: checksum mismatch
    assert load_optim_file(tmp_path / "missing.pt", emb.vectors) is None
    # safetensors output ignores the optimizer state (the web UI only reads <name>.pt.optim)
    save_embedding(emb, tmp_path / "emb.safetensors", optimizer_state=state)
    assert not (tmp_path / "emb.safetensors.optim").exists()


def test_save_optim_file_directly(tmp_path):
    emb = make_embedding(1, 4)
    p = save_optim_file(tmp_path / "x.pt", emb.vectors, {"state": {}, "param_groups": []})
    assert p.name == "x.pt.optim"
    assert load_optim_file(p, emb.vectors) == {"state": {}, "param_groups": []}
    with pytest.raises(FileExistsError):
        save_optim_file(tmp_path / "x.pt", emb.vectors, {})
    p.write_bytes(b"garbage")
    with pytest.raises(EmbeddingFormatError):
        load_optim_file(p, emb.vectors)


def test_optim_checksum_known_values():
    # computed by hand with the web UI's rule: r = (r*281 ^ int(v*100)*997) & 0xFFFFFFFF
    v = torch.tensor([[0.5, -0.25, 1.0]])
    r = 0
    for x in (50, -25, 100):
        r = (r * 281 ^ x * 997) & 0xFFFFFFFF
    assert optim_checksum(v) == f"{r & 0xFFFF:04x}"
