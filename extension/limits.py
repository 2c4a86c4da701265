"""The limits on an embedding that every entry point checks the same way: the CLI (create, train,
convert), the REST API, the tab and the training config all call these functions. Torch-free, so
that the CLI reports a bad argument at once.

- A name is a safe file stem as it is (letters, digits and ``._- ``, see :func:`sanitize_name`):
  it becomes the file name and the trigger word, so it is refused, never silently changed.
- Vectors per token: 1 to :data:`MAX_VECTORS`. The web UI, Forge and this trainer put an
  embedding into one 75-token prompt chunk; more vectors than a chunk holds cannot be used.
"""

from __future__ import annotations

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


MAX_VECTORS = 75  # tokens in one CLIP prompt chunk (77 minus the start and end tokens)
_SHOWN_NAME = 60  # characters of a bad name echoed in a message


def _shown(name: str) -> str:
    return repr(name if len(name) <= _SHOWN_NAME else name[:_SHOWN_NAME] + "...")


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be an embedding's name (a message with the fix), or None."""
    if not isinstance(name, str):
        return f"the embedding name must be text, got {type(name).__name__}"
    if not name.strip():
        return "no embedding name; give a name (letters, digits and '._- ')"
    safe = sanitize_name(name)
    if safe != name:
        return (
            f"embedding name {_shown(name)} is not a safe file name; use only letters, digits and "
            f"'._- ', no leading dot, at most 150 bytes (e.g. {_shown(safe)})"
        )
    return None


def vectors_problem(vectors: object) -> str | None:
    """Why ``vectors`` is not a usable number of vectors per token (a message with the fix), or None."""
    if isinstance(vectors, bool) or not isinstance(vectors, int):
        return f"vectors per token must be a whole number from 1 to {MAX_VECTORS}, got {vectors!r}"
    if not 1 <= vectors <= MAX_VECTORS:
        return (
            f"vectors per token must be between 1 and {MAX_VECTORS} (one prompt chunk holds "
            f"{MAX_VECTORS} tokens), got {vectors}"
        )
    return None
