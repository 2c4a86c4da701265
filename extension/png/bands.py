"""The web UI's pixel bands: the zlib-compressed payload hidden in two strips beside a picture.

Each band is ``H x w`` RGB; slot ``t`` (raster order: row, column, channel) carries in its low
nibble the low (left band) or high (right band) nibble of compressed byte ``t mod N``, XORed with
a nibble of a 32-bit LCG key stream restarted per band.  The high nibbles hold a decorative dot
pattern whose grey levels come from the first embedding row.  All vectorised with numpy.
"""

from __future__ import annotations

import zlib

import numpy as np
from PIL import Image

from ..embedding.errors import EmbeddingFormatError

_LCG_A, _LCG_C, _MASK = 1664525, 1013904223, 0xFFFFFFFF
_key_cache = np.zeros(0, dtype=np.uint8)


def lcg_mod255(n: int) -> np.ndarray:
    """``s_1 .. s_n mod 255`` of the LCG ``s_{k+1} = (1664525 s_k + 1013904223) mod 2**32``, ``s_0 = 0``."""
    s = np.empty(max(n, 1), dtype=np.uint64)
    s[0] = _LCG_C
    filled, a_f, c_f = 1, _LCG_A, _LCG_C  # (a_f, c_f): the map that advances `filled` steps
    while filled < n:
        m = min(filled, n - filled)
        s[filled : filled + m] = (np.uint64(a_f) * s[:m] + np.uint64(c_f)) & np.uint64(_MASK)
        a_f, c_f = (a_f * a_f) & _MASK, (a_f * c_f + c_f) & _MASK
        filled += m
    return (s[:n] % np.uint64(255)).astype(np.uint8)


def key_nibbles(n: int) -> np.ndarray:
    """The first ``n`` key nibbles (``lcg mod 255 & 0x0F``), cached."""
    global _key_cache
    if _key_cache.size < n:
        _key_cache = lcg_mod255(max(n, 2 * _key_cache.size)) & np.uint8(0x0F)
    return _key_cache[:n]


def band_width(n_bytes: int, height: int) -> int:
    """Band width for ``n_bytes`` of compressed data on a carrier ``height`` pixels tall."""
    s1 = n_bytes + height - (n_bytes % height)
    s = s1 + 3 * height - (s1 % (3 * height))
    return s // (3 * height)


def shade_sequence(first_row: np.ndarray) -> np.ndarray:
    """Grey levels ``floor(|v| / max|v| * 255)`` of the first 1024 values of the first vector."""
    v = np.abs(np.asarray(first_row, dtype=np.float64).reshape(-1)[:1024])
    m = v.max() if v.size else 0.0
    if not v.size or not np.isfinite(m) or m == 0:
        return np.zeros(max(v.size, 1), dtype=np.uint8)
    return (v / m * 255).astype(np.uint8)


# Coverage of one dot (7 x 7 ellipse) at offsets dy, dx in 0..7 (row/column 7 never covered).
_DOT = np.zeros((8, 8), dtype=bool)
for _dy, (_a, _b) in enumerate([(2, 4), (1, 5), (0, 6), (0, 6), (0, 6), (1, 5), (2, 4)]):
    _DOT[_dy, _a : _b + 1] = True


def dot_pattern(width: int, height: int, shades: np.ndarray) -> np.ndarray:
    """The ``height x width`` grey decoration: dots on an 8-pixel grid, odd-numbered rows of dots
    shifted right by 4, the k-th dot (column-major) shaded ``shades[k mod len]``."""
    shades = np.asarray(shades, dtype=np.uint8).reshape(-1)
    y = np.arange(height)[:, None]
    x = np.arange(width)[None, :]
    j = (y + 6) // 8
    dy = (y + 6) % 8
    shift = np.where(j % 2 == 0, 4, 0)
    i = (x + 6 - shift) // 8
    dx = (x + 6 - shift) % 8
    n_rows = -(-(height + 6) // 8)
    k = i * n_rows + j
    grey = shades[k % shades.size]
    return np.where(_DOT[dy, dx], grey, 0).astype(np.uint8)


def encode_bands(compressed: bytes, height: int, shades: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lower (left) and upper (right) bands, ``(height, w, 3)`` uint8 each."""
    if not compressed:
        raise ValueError("nothing to embed")
    if height < 1:
        raise ValueError("carrier height must be at least 1 pixel")
    z = np.frombuffer(compressed, dtype=np.uint8)
    w = band_width(z.size, height)
    slots = np.resize(z, 3 * height * w)  # the stream repeated cyclically after its end
    key = key_nibbles(slots.size)
    shades = np.asarray(shades, dtype=np.uint8).reshape(-1)
    low = ((slots & 0x0F) ^ key).reshape(height, w, 3)
    high = ((slots >> 4) ^ key).reshape(height, w, 3)
    low |= (dot_pattern(w, height, shades) & 0xF0)[:, :, None]
    high |= (dot_pattern(w, height, shades[::-1]) & 0xF0)[:, :, None]
    return low, high


def insert_bands(carrier: Image.Image, compressed: bytes, shades: np.ndarray) -> Image.Image:
    """``carrier`` (converted to RGB, alpha dropped) between a black column and a band on each side."""
    width, height = carrier.size
    low, high = encode_bands(compressed, height, shades)
    w = low.shape[1]
    out = np.zeros((height, width + 2 * w + 2, 3), dtype=np.uint8)
    out[:, :w] = low
    out[:, w + 1 + width + 1 :] = high
    image = Image.fromarray(out, "RGB")
    image.paste(carrier, (w + 1, 0))
    return image


def split_bands(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The two bands' low nibbles of an RGB ``(H, W, 3)`` array, or None when there are none."""
    content = (pixels > 0).all(axis=2)
    cols, rows = np.flatnonzero(content.any(axis=0)), np.flatnonzero(content.any(axis=1))
    if cols.size and rows.size:
        pixels = pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    nibbles = pixels & np.uint8(0x0F)
    separators = np.flatnonzero(~nibbles.any(axis=(0, 2)))
    if separators.size < 2:
        return None
    lower = nibbles[:, : separators[0]]
    upper = nibbles[:, separators[-1] + 1 :]
    if lower.size == 0 or lower.shape != upper.shape:
        return None
    return lower, upper


def band_stream(image: Image.Image) -> bytes | None:
    """The raw bytes carried by the bands (the zlib stream plus padding), or None."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    bands = split_bands(pixels)
    if bands is None:
        return None
    lower, upper = bands
    key = key_nibbles(lower.size).reshape(lower.shape)
    data = (((upper ^ key) << 4) | (lower ^ key)).astype(np.uint8)
    return data.tobytes()


def looks_like_zlib(data: bytes) -> bool:
    """A valid zlib header (deflate, window <= 32 KiB, header checksum)."""
    return (
        len(data) >= 2
        and (data[0] & 0x0F) == 8
        and (data[0] >> 4) <= 7
        and ((data[0] << 8) | data[1]) % 31 == 0
    )


def inflate_limited(data: bytes, limit: int) -> bytes:
    """Inflate one zlib stream (trailing bytes ignored), refusing output beyond ``limit`` bytes."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise EmbeddingFormatError(f"the embedded data is damaged (zlib: {exc})") from None
    if len(out) > limit:
        raise EmbeddingFormatError(
            f"the embedded data inflates past {limit // (1024 * 1024)} MiB; refusing (decompression bomb?)"
        )
    if not d.eof:
        raise EmbeddingFormatError("the embedded data is truncated (the zlib stream does not end)")
    return out
