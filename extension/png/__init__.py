"""Embeddings in pictures: the web UI's PNG cards (text chunk + pixel bands) and their extraction."""

from .card import (
    NoPixelBandsWarning,
    can_embed_in_pixels,
    caption_overlay,
    embed_in_png,
    payload_for,
    plain_card_image,
    save_png_card,
)
from .extract import TEXT_KEY, extract_from_image
from .payload_json import decode_payload, encode_payload

__all__ = [
    "TEXT_KEY",
    "NoPixelBandsWarning",
    "can_embed_in_pixels",
    "caption_overlay",
    "decode_payload",
    "embed_in_png",
    "encode_payload",
    "extract_from_image",
    "payload_for",
    "plain_card_image",
    "save_png_card",
]
