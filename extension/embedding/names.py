"""Turning embedding names into safe file names, and file names back into embedding names."""

from __future__ import annotations

import os
import unicodedata

# Windows refuses these as file stems whatever the extension.
_RESERVED = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"COM{i}" for i in range(1, 10)),
    *(f"LPT{i}" for i in range(1, 10)),
}
_MAX_STEM_BYTES = 150


def sanitize_name(name: str, fallback: str = "embedding") -> str:
    """A file stem for ``name``: letters, digits and ``._- `` only (the web UI's rule), no leading
    dot, no trailing dot or space, not a Windows device name, at most 150 UTF-8 bytes."""
    name = unicodedata.normalize("NFC", str(name))
    kept = "".join(ch for ch in name if ch.isalnum() or ch in "._- ")
    kept = kept.strip().lstrip(".").rstrip(". ")
    while len(kept.encode("utf-8")) > _MAX_STEM_BYTES:
        kept = kept[:-1].rstrip(". ")
    if not kept or kept.split(".")[0].upper() in _RESERVED:
        kept = f"{fallback}-{kept}" if kept else fallback
    return kept


def name_from_path(path: str | os.PathLike) -> str:
    """The web UI's embedding name for a file: the base name without its last extension."""
    return os.path.splitext(os.path.basename(os.fspath(path)))[0]
