"""Turning embedding names into safe file names, and file names back into embedding names."""

from __future__ import annotations

import os

from ..limits import sanitize_name

__all__ = ["name_from_path", "sanitize_name"]  # the rule itself lives in extension/limits.py


def name_from_path(path: str | os.PathLike) -> str:
    """The web UI's embedding name for a file: the base name without its last extension."""
    return os.path.splitext(os.path.basename(os.fspath(path)))[0]
