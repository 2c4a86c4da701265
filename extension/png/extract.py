"""Reading embeddings out of pictures: the ``sd-ti-embedding`` text chunk first, then the pixel bands."""

from __future__ import annotations

import base64
import binascii
import os
import warnings

from PIL import Image

from ..embedding.errors import EmbeddingFormatError
from ..embedding.layouts import embedding_from_data
from ..embedding.model import Embedding
from ..embedding.names import name_from_path
from .bands import band_stream, inflate_limited, looks_like_zlib
from .payload_json import MAX_JSON_BYTES, decode_payload

TEXT_KEY = "sd-ti-embedding"
MAX_PIXELS = 64 * 1024 * 1024  # embedding cards are well under a megapixel


def _text_value(image: Image.Image) -> object:
    value = image.info.get(TEXT_KEY)  # chunks before the pixel data, known without decoding them
    if value is None:
        text = getattr(image, "text", None)  # PNG: loads the image to see chunks after the pixels too
        if isinstance(text, dict):
            value = text.get(TEXT_KEY)
    return value


def decode_text_chunk(value: object) -> object:
    """The payload object of an ``sd-ti-embedding`` text value (base64 of the JSON)."""
    if isinstance(value, str):
        try:
            value = value.encode("ascii")
        except UnicodeEncodeError:
            raise EmbeddingFormatError(
                "the sd-ti-embedding text is not base64 (non-ASCII characters)"
            ) from None
    if not isinstance(value, bytes | bytearray):
        raise EmbeddingFormatError("the sd-ti-embedding text chunk has an unexpected type")
    if len(value) > MAX_JSON_BYTES * 4 // 3 + 4:
        raise EmbeddingFormatError("the sd-ti-embedding text chunk is too large")
    try:
        raw = base64.b64decode(value)  # like the web UI: characters outside the alphabet are skipped
    except (binascii.Error, ValueError) as exc:
        raise EmbeddingFormatError(f"the sd-ti-embedding text chunk is not valid base64 ({exc})") from None
    return decode_payload(raw)


def _from_pixels(image: Image.Image) -> object | None:
    stream = band_stream(image)
    if stream is None or not looks_like_zlib(stream):
        return None
    return decode_payload(inflate_limited(stream, MAX_JSON_BYTES))


def _extract(image: Image.Image, stem: str, kind: str) -> Embedding | None:
    w, h = image.size
    if w * h > MAX_PIXELS:
        raise EmbeddingFormatError(f"the picture is {w}x{h}, too large to be an embedding card")
    text_error: EmbeddingFormatError | None = None
    value = _text_value(image)
    if value is not None:
        try:
            payload = decode_text_chunk(value)
            return embedding_from_data(
                payload, None, name=stem, container=f"{kind}-text", use_stored_name=True
            )
        except EmbeddingFormatError as exc:
            text_error = exc  # fall back to the pixels, which carry the same payload
    try:
        payload = _from_pixels(image)
    except EmbeddingFormatError:
        if text_error is not None:
            raise text_error from None
        raise
    if payload is None:
        if text_error is not None:
            raise text_error
        return None
    emb = embedding_from_data(payload, None, name=stem, container=f"{kind}-pixels", use_stored_name=True)
    if text_error is not None:
        emb.metadata["text_chunk_error"] = text_error.problem
    return emb


def extract_from_image(path_or_image: str | os.PathLike | Image.Image) -> Embedding | None:
    """The embedding carried by a picture (PNG, lossless WEBP, ...), or None for an ordinary picture.

    The ``sd-ti-embedding`` text chunk is tried first, then the pixel bands (which survive a
    re-save that drops the text chunk).  The name is the stored one, else the file stem.
    Damaged data, decompression bombs and unreadable files raise EmbeddingFormatError.
    """
    if isinstance(path_or_image, Image.Image):
        image = path_or_image
        filename = getattr(image, "filename", "") or ""
        stem = name_from_path(filename) if filename else "embedding"
        kind = (image.format or "png").lower()
        try:
            return _extract(image, stem, kind)
        except EmbeddingFormatError as exc:
            if filename:
                raise exc.with_path(filename) from None
            raise
        except Exception as exc:  # a lazily opened, damaged picture
            raise EmbeddingFormatError(
                f"not a readable picture: {type(exc).__name__}: {str(exc)[:160]}", filename or None
            ) from None
    path = os.fspath(path_or_image)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                w, h = image.size
                if w * h > MAX_PIXELS:
                    raise EmbeddingFormatError(f"the picture is {w}x{h}, too large to be an embedding card")
                return _extract(image, name_from_path(path), (image.format or "png").lower())
    except EmbeddingFormatError as exc:
        raise exc.with_path(path) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise EmbeddingFormatError(
            "the picture is a decompression bomb (too many pixels); refusing", path
        ) from None
    except FileNotFoundError:
        raise EmbeddingFormatError("no such file", path) from None
    except MemoryError:
        raise EmbeddingFormatError("the picture needs too much memory to decode", path) from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, zlib.error... on damage
        text = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise EmbeddingFormatError(
            f"not a readable picture (truncated or corrupt?): {type(exc).__name__}: {text}", path
        ) from None
