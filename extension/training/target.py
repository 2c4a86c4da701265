"""What training the embedding ``name`` means when a file of that name exists: one rule for the
CLI, the REST API and the tab.

- A **new** name: a new embedding is made from ``init_text`` / ``vectors`` and trained.
- An **existing** name needs an explicit choice; nothing is replaced silently:

  - ``resume``: continue it: its step count, learn-rate schedule and (when its ``.resume`` file
    matches) the optimizer state go on. A ``.pt`` embedding (e.g. trained by the web UI) is
    continued as ``.pt``.
  - ``overwrite``: replace it with a new embedding from ``init_text``.
  - neither: refused (the CLI exits with 2, the API answers 409).

``embedding_file`` starts from another file (under ``name``); when it is the embedding's own file,
that is the same as ``resume``. The tab's Train button trains the embedding picked in its list,
so it asks for ``resume``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import TrainConfig

TRAINABLE_FORMATS = ("safetensors", "pt")


def existing_files(config: TrainConfig) -> dict[str, Path]:
    """The embedding's trainable files in the embeddings folder, by format."""
    from .outputs import final_embedding_path

    folder = Path(config.embeddings_dir)
    found = {}
    for fmt in TRAINABLE_FORMATS:
        path = final_embedding_path(folder, config.name, fmt)
        if path.exists():
            found[fmt] = path
    return found


def with_existing_format(config: TrainConfig) -> TrainConfig:
    """``config`` with ``save_format`` set to the format of the file ``resume`` continues, when the
    embedding exists only in the other format (a ``.pt`` stays ``.pt``)."""
    if not config.resume or config.embedding_file or not config.name:
        return config
    found = existing_files(config)
    if config.save_format in found or not found:
        return config
    return dataclasses.replace(config, save_format=next(iter(found)))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def continues_in_place(config: TrainConfig) -> bool:
    """Whether ``embedding_file`` is the embedding's own final file."""
    return bool(config.embedding_file) and _same_file(Path(config.embedding_file), config.final_path())


def conflict_problem(config: TrainConfig) -> str | None:
    """Why the run would replace an existing embedding nobody said to replace (the API's 409), or None."""
    if config.save_format not in TRAINABLE_FORMATS:
        return None  # an unknown format: the config check names it
    final = config.final_path()
    if config.resume or continues_in_place(config):
        return None
    if final.exists() and not final.is_dir() and not config.overwrite:
        return (
            f"{final} already exists; set resume (--resume) to continue training it or overwrite "
            "(--overwrite) to replace it"
        )
    others = [path for fmt, path in existing_files(config).items() if fmt != config.save_format]
    if others and not final.exists():
        return (
            f"{others[0]} already exists (in the other format); continue it with resume (--resume), or pick "
            f"another name: a second file named {config.name!r} would be two embeddings with one trigger word"
        )
    return None


def target_problems(config: TrainConfig) -> list[str]:
    """Why the run may not write ``<embeddings dir>/<name>``, each with the fix (empty: it may)."""
    if config.save_format not in TRAINABLE_FORMATS:
        return []  # the config check names it
    final = config.final_path()
    if final.is_dir():
        return [f"{final} is a folder; pick another name or embeddings folder"]
    if config.resume and config.embedding_file and not continues_in_place(config):
        return ["resume and embedding_file both given; use one (resume continues the embedding in the embeddings folder)"]
    if config.resume and not final.is_file():
        return [f"nothing to resume: {final} does not exist; drop resume (--resume) to start a new embedding"]
    conflict = conflict_problem(config)
    return [conflict] if conflict else []
