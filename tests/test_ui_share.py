"""Share as PNG (card written, readable back) and import from any supported file; the catalog."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from embedding_helpers import REF
from PIL import Image

from extension.embedding import Embedding, load_embedding, save_embedding
from extension.ui.catalog import EmbeddingCatalog
from extension.ui.share import ShareError, import_embedding, make_card

REFERENCE = REF


def sd1(name: str = "cat", n: int = 2, step: int | None = 7) -> Embedding:
    return Embedding(name, torch.randn(n, 768, generator=torch.Generator().manual_seed(n)), step=step)


def sdxl(name: str = "pair") -> Embedding:
    g = torch.Generator().manual_seed(3)
    return Embedding(
        name,
        {"clip_l": torch.randn(2, 768, generator=g), "clip_g": torch.randn(2, 1280, generator=g)},
        step=4,
    )


@pytest.mark.parametrize("make", [sd1, sdxl])
def test_card_carries_the_embedding(tmp_path: Path, make) -> None:
    emb = make()
    src = save_embedding(emb, tmp_path / f"{emb.name}.safetensors")
    card = make_card(src, tmp_path / "cards")
    assert card == tmp_path / "cards" / f"{emb.name}.png"
    back = load_embedding(card)
    assert back.same_vectors(emb)
    if not emb.is_sdxl:  # an SDXL card holds only the two tensors (the web UI's only SDXL form)
        assert back.step == emb.step
    # a second card does not overwrite the first
    assert make_card(src, tmp_path / "cards").name == f"{emb.name}-2.png"


def test_card_uses_the_given_picture(tmp_path: Path) -> None:
    emb = sd1()
    src = save_embedding(emb, tmp_path / "cat.safetensors")
    picture = tmp_path / "red.png"
    Image.new("RGB", (96, 96), (250, 0, 0)).save(picture)
    card = make_card(src, tmp_path / "cards", picture)
    with Image.open(card) as im:
        rgb = im.convert("RGB")
        centre = rgb.getpixel((rgb.width // 2, rgb.height // 2))
    assert centre[0] > 150 and centre[1] < 80  # the red picture is the card's middle
    assert load_embedding(card).same_vectors(emb)
    with pytest.raises(ShareError, match="cannot be read"):
        make_card(src, tmp_path / "cards", tmp_path / "missing.png")
    with pytest.raises(ShareError, match="cannot share"):
        make_card(tmp_path / "nothing.safetensors", tmp_path / "cards")


def test_import_rewrites_any_format_as_safetensors(tmp_path: Path) -> None:
    emb = sd1("orig")
    dest = tmp_path / "emb"
    for fmt in ("pt", "safetensors"):
        src = save_embedding(emb, tmp_path / f"orig.{fmt}", fmt)
        path, imported = import_embedding(src, dest, name=f"from_{fmt}")
        assert path == dest / f"from_{fmt}.safetensors"
        assert imported.name == f"from_{fmt}" and load_embedding(path).same_vectors(emb)
    card = make_card(tmp_path / "orig.pt", tmp_path / "cards")
    path, imported = import_embedding(card, dest)
    assert path == dest / "orig.safetensors" and imported.step == 7


def test_import_errors(tmp_path: Path) -> None:
    dest = tmp_path / "emb"
    src = save_embedding(sd1("cat"), tmp_path / "cat.safetensors")
    import_embedding(src, dest)
    with pytest.raises(ShareError, match="already exists; tick overwrite"):
        import_embedding(src, dest)
    path, _ = import_embedding(src, dest, overwrite=True)
    assert path.is_file()
    with pytest.raises(ShareError, match="not a safe file name"):
        import_embedding(src, dest, name="../x")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(ShareError, match=r"cannot import bad\.safetensors"):
        import_embedding(bad, dest)
    txt = tmp_path / "notes.txt"
    txt.write_text("hi")
    with pytest.raises(ShareError, match="unsupported file type"):
        import_embedding(txt, dest)


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="shared reference embeddings not present")
def test_import_the_web_uis_own_card(tmp_path: Path) -> None:
    card = REFERENCE / "a1111-test_embedding.png"
    if not card.is_file():
        pytest.skip("reference card missing")
    path, _ = import_embedding(card, tmp_path)
    assert load_embedding(path).same_vectors(load_embedding(card))


def test_catalog_lists_rescans_and_reports(tmp_path: Path) -> None:
    folder = tmp_path / "emb"
    catalog = EmbeddingCatalog()
    assert catalog.scan(folder) == ([], [])
    save_embedding(sd1("b", 3, step=None), folder / "b.safetensors")
    save_embedding(sdxl("a"), folder / "sub" / "a.safetensors")
    (folder / "broken.pt").write_bytes(b"nope")
    Image.new("RGB", (8, 8)).save(folder / "b.preview.png")  # a plain preview picture: ignored
    found, problems = catalog.scan(folder)
    assert [(e.name, e.shape, e.family, e.step) for e in found] == [
        ("a", "2 x (768 + 1280)", "sdxl", 4),
        ("b", "3 x 768", "sd1", None),
    ]
    assert len(problems) == 1 and "broken.pt" in problems[0]
    assert found[1].label() == "b (untrained, 3 x 768)"
    # a changed file is read again, a removed one disappears
    save_embedding(sd1("b", 5, step=9), folder / "b.safetensors", overwrite=True)
    shutil.rmtree(folder / "sub")
    found, _ = catalog.scan(folder)
    assert [(e.name, e.n_vectors, e.step) for e in found] == [("b", 5, 9)]
    assert catalog.find(folder, "b").step == 9 and catalog.find(folder, "zzz") is None
