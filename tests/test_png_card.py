"""PNG cards: what the web UI writes, and extraction from text chunks, pixels and lossless WEBP."""

from __future__ import annotations

import base64
import hashlib
import io
import math
import struct
import warnings
import zlib

import numpy as np
import pytest
from embedding_helpers import REF, make_embedding, make_sdxl, same_bits, sidecar
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from extension.embedding import EmbeddingFormatError, load_embedding
from extension.png import (
    TEXT_KEY,
    NoPixelBandsWarning,
    embed_in_png,
    extract_from_image,
    save_png_card,
)
from extension.png.bands import insert_bands


def _png(image: Image.Image, info: PngInfo | None = None) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_card_is_identical_to_the_webui_card():
    meta = sidecar(REF / "sd15-4v.both.png")
    emb = load_embedding(REF / "sd15-4v.text.png")  # same snapshot as the web UI's card
    with Image.open(REF / "sd15-4v.text.png") as carrier:  # the web UI's captioned preview
        card, info = embed_in_png(carrier, emb, caption=False)
    rgb = np.asarray(card)
    assert hashlib.sha256(rgb.tobytes()).hexdigest() == meta["png"]["pixels_rgb_sha256"]
    with Image.open(REF / "sd15-4v.both.png") as ref:
        assert np.array_equal(rgb, np.asarray(ref.convert("RGB")))
    ((kind, body, *_),) = info.chunks
    key, value = body.split(b"\0", 1)
    assert kind == b"tEXt" and key == TEXT_KEY.encode()
    assert len(value) == meta["png"]["text_chunk_value_len"]
    assert hashlib.sha256(value).hexdigest() == meta["png"]["text_chunk_value_sha256"]


def test_card_with_caption_round_trips(tmp_path):
    emb = make_embedding(
        3, 768, name="cäption", step=99, checkpoint_hash="6ce0161689", checkpoint_name="v1-5"
    )
    carrier = Image.new("RGBA", (320, 200), (200, 120, 40, 128))
    card, info = embed_in_png(carrier, emb, title="<custom>", footer=("left", "", "right"))
    assert card.mode == "RGB" and card.size[1] == 200 and card.size[0] > 322
    path = save_png_card(tmp_path / "c.png", card, info)
    back = extract_from_image(path)
    assert same_bits(back, emb) and back.name == "cäption" and back.step == 99
    assert back.checkpoint_hash == "6ce0161689" and back.metadata["source_layout"] == "png-text"
    with pytest.raises(FileExistsError):
        save_png_card(path, card, info)
    save_png_card(path, card, info, overwrite=True)
    # the caption's gradient: row y is composited with black at alpha int(mag * 255)
    band = (card.size[0] - 320 - 2) // 2
    for y in (60, 100, 140):
        mag = max(1 - math.cos(y / 200 * 1.5), 1 - math.cos((200 - y) / 200 * 1.5 * 1.1))
        a = min(int(mag * 255), 255)
        want = tuple(round(c * (255 - a) / 255) for c in (200, 120, 40))
        assert tuple(int(c) for c in np.asarray(card)[y, band + 1 + 160]) == want


def test_text_chunk_stripped_pixels_still_carry_it(tmp_path):
    emb = make_embedding(2, 1024, name="strip me", step=7)
    card, info = embed_in_png(Image.new("RGB", (64, 48), (30, 60, 90)), emb)
    with Image.open(io.BytesIO(_png(card, info))) as im:
        assert TEXT_KEY in im.text
        resaved = _png(im)  # Pillow does not copy text chunks on save
    (tmp_path / "r.png").write_bytes(resaved)
    with Image.open(tmp_path / "r.png") as im:
        assert TEXT_KEY not in im.text
    back = load_embedding(tmp_path / "r.png")
    assert same_bits(back, emb) and back.name == "strip me"
    assert back.metadata["source_layout"] == "png-pixels"


def test_lossless_webp_with_bands_loads(tmp_path):
    emb = make_embedding(4, 768, name="webby", step=3)
    card, _ = embed_in_png(Image.new("RGB", (128, 96), (250, 250, 250)), emb)
    card.save(tmp_path / "w.webp", "WEBP", lossless=True, quality=100, exact=True)
    back = load_embedding(tmp_path / "w.webp")
    assert same_bits(back, emb) and back.metadata["source_layout"] == "webp-pixels"


def test_sdxl_card_has_only_the_text_chunk_and_says_so(tmp_path):
    emb = make_sdxl(2, name="xl")
    carrier = Image.new("RGB", (96, 64), (10, 200, 10))
    with pytest.warns(NoPixelBandsWarning, match="SDXL"):
        card, info = embed_in_png(carrier, emb, caption=False)
    assert card.size == carrier.size
    path = save_png_card(tmp_path / "xl-card.png", card, info)
    back = load_embedding(path)
    assert same_bits(back, emb) and back.name == "xl-card"  # the web UI names SDXL cards by file
    payload = base64.b64decode(Image.open(path).text[TEXT_KEY])
    assert payload.startswith(b'{"clip_l": {"TORCHTENSOR": [[')


def test_ordinary_pictures_give_none(tmp_path):
    rng = np.random.default_rng(1)
    pictures = [
        Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)),
        Image.new("RGB", (40, 40), (16, 32, 48)),
        Image.new("RGB", (40, 40)),
        Image.new("L", (20, 10), 128),
        Image.new("RGBA", (20, 10), (1, 2, 3, 0)),
    ]
    for i, pic in enumerate(pictures):
        path = tmp_path / f"p{i}.png"
        pic.save(path)
        assert extract_from_image(path) is None
        assert extract_from_image(pic) is None
    with pytest.raises(EmbeddingFormatError, match="carries no embedding"):
        load_embedding(tmp_path / "p0.png")


def test_extract_from_an_open_image_and_text_after_the_pixels(tmp_path):
    emb = make_embedding(1, 768, name="late")
    card, info = embed_in_png(Image.new("RGB", (32, 32), (100, 100, 100)), emb, caption=False)
    data = _png(Image.new("RGB", (8, 8), (5, 5, 5)))  # no bands at all
    text = info.chunks[0][1]
    late = data[:-12] + _chunk(b"tEXt", text) + data[-12:]  # tEXt just before IEND
    (tmp_path / "late.png").write_bytes(late)
    assert same_bits(extract_from_image(tmp_path / "late.png"), emb)
    with Image.open(io.BytesIO(_png(card, info))) as im:
        assert extract_from_image(im).name == "late"


def test_broken_text_chunk_falls_back_to_pixels(tmp_path):
    emb = make_embedding(2, 768, name="fallback")
    card, _ = embed_in_png(Image.new("RGB", (40, 40), (100, 90, 80)), emb)
    bad = PngInfo()
    bad.add_text(TEXT_KEY, "not base64 at all!")
    card.save(tmp_path / "f.png", pnginfo=bad)
    back = extract_from_image(tmp_path / "f.png")
    assert same_bits(back, emb) and "text_chunk_error" in back.metadata
    Image.new("RGB", (40, 40), (100, 90, 80)).save(tmp_path / "g.png", pnginfo=bad)
    with pytest.raises(EmbeddingFormatError, match=r"g\.png"):
        extract_from_image(tmp_path / "g.png")


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("w", "h", "message"), [(100_000, 100_000, "decompression bomb|too large"), (9000, 9000, "too large")]
)
def test_decompression_bombs_are_refused(tmp_path, w, h, message):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(w, h))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(EmbeddingFormatError, match=message):
            extract_from_image(path)


def test_zlib_bomb_in_the_bands_is_refused(tmp_path):
    bomb = zlib.compress(b" " * (40 * 1024 * 1024), 9)
    card = insert_bands(Image.new("RGB", (64, 256), (90, 90, 90)), bomb, np.arange(8, dtype=np.uint8))
    card.save(tmp_path / "zb.png")
    with pytest.raises(EmbeddingFormatError, match="decompression bomb"):
        extract_from_image(tmp_path / "zb.png")


def test_truncated_pixel_stream_is_a_format_error(tmp_path):
    text = b'{"name": "x"}' * 50
    z = zlib.compress(text, 9)
    z_cut = z[: len(z) // 2]
    card = insert_bands(Image.new("RGB", (30, 30), (90, 90, 90)), z_cut, np.arange(8, dtype=np.uint8))
    with pytest.raises(EmbeddingFormatError, match=r"truncated|damaged"):
        extract_from_image(card)


def test_a_name_with_line_breaks_still_gets_a_captioned_card():
    import torch

    from extension.embedding import Embedding
    from extension.png import embed_in_png, extract_from_image

    emb = Embedding("two\nlines\r\n", torch.zeros(1, 8))
    card, info = embed_in_png(Image.new("RGB", (64, 64)), emb, title=None, footer=("a\nb", "", "c"))
    buffer = io.BytesIO()
    card.save(buffer, "PNG", pnginfo=info)
    assert extract_from_image(Image.open(buffer)).name == emb.name
