"""The one exception type that every embedding reader and writer raises for bad input."""

from __future__ import annotations

import os


class EmbeddingFormatError(ValueError):
    """An embedding file (or object) is unreadable, unsafe or inconsistent.

    ``path`` (when known) is part of the message, so a caller can show ``str(exc)`` as it is.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.problem = message
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)

    def with_path(self, path: str | os.PathLike) -> EmbeddingFormatError:
        """The same problem, re-stated for ``path`` (keeps an existing path)."""
        if self.path is not None:
            return self
        return EmbeddingFormatError(self.problem, path)
