"""The pixel-band codec against the web UI's own cards, bit for bit."""

from __future__ import annotations

import hashlib
import time
import zlib

import numpy as np
import pytest
from embedding_helpers import REF, sidecar
from PIL import Image, ImageDraw

from extension.png import decode_payload
from extension.png.bands import (
    band_stream,
    band_width,
    dot_pattern,
    encode_bands,
    inflate_limited,
    insert_bands,
    key_nibbles,
    lcg_mod255,
    shade_sequence,
    split_bands,
)


def _sha(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def test_lcg_first_values_and_sum():
    assert lcg_mod255(12).tolist() == [253, 242, 127, 44, 157, 27, 239, 133, 38, 79, 167, 4]
    # independent scalar recurrence for a longer stretch
    s, ref = 0, []
    for _ in range(5000):
        s = (1664525 * s + 1013904223) % 2**32
        ref.append(s % 255)
    assert lcg_mod255(5000).tolist() == ref
    assert key_nibbles(5000).tolist() == [r & 0x0F for r in ref]


@pytest.mark.parametrize(
    ("n", "h", "w"), [(7792, 512, 6), (7735, 221, 13), (29679, 256, 39), (512, 512, 1), (1535, 512, 2)]
)
def test_band_geometry(n, h, w):
    assert band_width(n, h) == w
    assert band_width(n, h) == (n // h + 1) // 3 + 1


@pytest.mark.parametrize(("w", "h"), [(6, 512), (13, 221), (1, 1), (3, 7), (39, 256), (17, 33), (9, 14)])
def test_dot_pattern_matches_pillow_ellipses(w, h):
    rng = np.random.default_rng(w * 1000 + h)
    shades = rng.integers(0, 256, size=int(rng.integers(1, 40))).astype(np.uint8)
    im = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(im)
    k = 0
    for x in range(-6, w, 8):
        for row, y in enumerate(range(-6, h, 8)):
            shift = 4 if row % 2 == 0 else 0
            s = int(shades[k % len(shades)])
            k += 1
            draw.ellipse((x + shift, y, x + shift + 6, y + 6), fill=(s, s, s))
    assert np.array_equal(np.asarray(im)[:, :, 0], dot_pattern(w, h, shades))


def test_decoding_the_webui_bands_gives_its_exact_payload():
    info = sidecar(REF / "sd15-4v.both.png")["bands"]
    with Image.open(REF / "sd15-4v.pixels.png") as im:
        text = inflate_limited(band_stream(im), 1 << 25)
    assert len(text) == info["payload_json_len"]
    assert hashlib.sha256(text).hexdigest() == info["payload_json_sha256"]
    z = zlib.compress(text, 9)
    assert len(z) == info["zlib_len"] and hashlib.sha256(z).hexdigest() == info["zlib_sha256"]


def test_encoding_the_payload_on_the_carrier_gives_the_webui_pixels():
    meta = sidecar(REF / "sd15-4v.both.png")
    info = meta["bands"]
    with Image.open(REF / "sd15-4v.both.png") as im:
        original = np.asarray(im.convert("RGB"))
        text = inflate_limited(band_stream(im), 1 << 25)
    with Image.open(REF / "sd15-4v.text.png") as carrier:
        carrier = carrier.convert("RGB")
    assert _sha(np.asarray(carrier)) == info["carrier_rgb_sha256"]
    payload = decode_payload(text)
    shades = shade_sequence(payload["string_to_param"]["*"][0].numpy())
    low, high = encode_bands(zlib.compress(text, 9), carrier.size[1], shades)
    assert low.shape[1] == info["band_width"]
    assert _sha(low) == info["low_band_rgb_sha256"]
    assert _sha(high) == info["high_band_rgb_sha256"]
    out = np.asarray(insert_bands(carrier, zlib.compress(text, 9), shades))
    assert _sha(out) == meta["png"]["pixels_rgb_sha256"]
    assert np.array_equal(out, original)


def test_2022_zero_padded_card_decodes():
    with Image.open(REF / "a1111-test_embedding.png") as im:
        payload = decode_payload(inflate_limited(band_stream(im), 1 << 25))
    assert payload["name"] == "rick" and payload["step"] == 60


def test_black_border_is_cropped_and_plain_pictures_have_no_bands():
    with Image.open(REF / "sd15-4v.pixels.png") as im:
        rgb = np.asarray(im.convert("RGB"))
    framed = np.zeros((rgb.shape[0] + 20, rgb.shape[1] + 30, 3), np.uint8)
    framed[7 : 7 + rgb.shape[0], 11 : 11 + rgb.shape[1]] = rgb
    assert band_stream(Image.fromarray(framed)) == band_stream(Image.fromarray(rgb))
    noise = np.random.default_rng(0).integers(1, 256, (64, 64, 3), dtype=np.uint8) | 1
    assert split_bands(noise) is None
    assert split_bands(np.full((10, 10, 3), 16, np.uint8)) is None  # all separators, no band


def test_codec_is_vectorised_fast():
    z = np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    carrier = Image.new("RGB", (512, 768), (90, 90, 90))
    t = time.perf_counter()
    card = insert_bands(carrier, z, np.arange(256, dtype=np.uint8))
    stream = band_stream(card)
    assert time.perf_counter() - t < 1.0
    assert stream[: len(z)] == z
