"""The embeddings in a folder, as the tab and the API list them (name, step, shape, file)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from ..embedding import SUPPORTED_SUFFIXES, Embedding, EmbeddingFormatError, load_embedding
from ..embedding.diffusers_pair import is_second_half, pair_paths


@dataclass(frozen=True)
class EmbeddingInfo:
    """One embedding file: what the picker shows and the inspector needs."""

    name: str
    path: str
    step: int | None
    n_vectors: int
    shape: str  # e.g. "3 x 768" or "3 x (768 + 1280)"
    family: str  # "sd1", "sd2", "sdxl" or "unknown"
    note: str = ""  # e.g. why the host could not register it yet

    def label(self) -> str:
        """``name - step N, 3 x 768`` for the picker."""
        step = "untrained" if not self.step else f"step {self.step}"
        return f"{self.name} ({step}, {self.shape})"

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": self.path,
            "step": self.step,
            "vectors": self.n_vectors,
            "shape": self.shape,
            "family": self.family,
            "note": self.note,
        }


def describe(embedding: Embedding, path: Path) -> EmbeddingInfo:
    """The :class:`EmbeddingInfo` of a loaded embedding."""
    if isinstance(embedding.vectors, dict):
        widths = " + ".join(str(int(t.shape[1])) for t in embedding.vectors.values())
        shape = f"{embedding.n_vectors} x ({widths})"
    else:
        shape = f"{embedding.n_vectors} x {embedding.width}"
    return EmbeddingInfo(
        name=embedding.name,
        path=str(path),
        step=embedding.step,
        n_vectors=embedding.n_vectors,
        shape=shape,
        family=embedding.model_family,
    )


def _listed_with_its_pair(path: Path) -> bool:
    """The CLIP-G file of diffusers' SDXL pair, whose CLIP-L file beside it lists (and loads) both."""
    pair = pair_paths(path)
    return pair is not None and is_second_half(path) and pair[0].is_file()


class EmbeddingCatalog:
    """Lists the readable embeddings under a folder (recursively, like the web UI), caching each
    file by modification time and size so a refresh only reads what changed."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[tuple[int, int], EmbeddingInfo | None, str | None]] = {}
        self._lock = threading.Lock()

    def scan(self, folder: Path) -> tuple[list[EmbeddingInfo], list[str]]:
        """(embeddings sorted by name, one message per unreadable file)."""
        found: list[EmbeddingInfo] = []
        problems: list[str] = []
        folder = Path(folder)
        if not folder.is_dir():
            return found, problems
        with self._lock:
            seen = set()
            for path in sorted(folder.rglob("*")):
                if path.name.startswith(".") or path.suffix.lower() not in SUPPORTED_SUFFIXES:
                    continue
                if _listed_with_its_pair(path):
                    continue
                try:
                    st = path.stat()
                except OSError:
                    continue
                if not path.is_file():
                    continue
                seen.add(path)
                key = (st.st_mtime_ns, st.st_size)
                cached = self._cache.get(path)
                if cached is None or cached[0] != key:
                    try:
                        cached = (key, describe(load_embedding(path), path), None)
                    except EmbeddingFormatError as exc:
                        cached = (key, None, str(exc))
                    self._cache[path] = cached
                if cached[1] is not None:
                    found.append(cached[1])
                elif path.suffix.lower() not in (".png", ".webp", ".jxl", ".avif"):
                    # pictures without an embedding are ordinary pictures, not broken embeddings
                    problems.append(cached[2] or f"{path}: unreadable")
            for stale in set(self._cache) - seen:
                del self._cache[stale]
        found.sort(key=lambda e: (e.name.lower(), e.path))
        return found, problems

    def find(self, folder: Path, name: str) -> EmbeddingInfo | None:
        """The embedding called ``name`` (exact match), or None."""
        for info in self.scan(folder)[0]:
            if info.name == name:
                return info
        return None
