"""Picking the best snapshot of a run: the runs of an embedding, each snapshot's step, losses and
preview, and making a snapshot the embedding (the file it replaces is kept as a backup).

A run folder is ``<log dir>/<date>/<name>`` or ``<name>-N`` (see ``training.outputs``); its
snapshots are ``embeddings/<name>-<step>.<ext>``, its previews ``images/<name>-<step>.png`` and its
log ``loss.csv``. Clients name a run by its folder relative to the log dir and a snapshot by its
step, never by a path.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..embedding import EmbeddingFormatError, load_embedding, save_embedding
from ..embedding.atomic import free_backup_path
from ..training.charts import smooth
from ..training.logging import read_loss_csv
from ..training.outputs import EXTENSIONS, final_embedding_path, resume_state_path

SNAPSHOT_SUFFIXES = tuple(EXTENSIONS.values())


class SnapshotError(ValueError):
    """A run or snapshot cannot be found or used; the message says why and what to do."""


@dataclass(frozen=True)
class Snapshot:
    """One saved snapshot of a run."""

    step: int
    path: Path
    loss: float | None  # the smoothed training loss at that step (what the plot's solid line shows)
    validation_loss: float | None  # measured at exactly that step, when validation ran there
    preview: Path | None
    best: bool = False  # the lowest validation loss of the run

    def to_dict(self) -> dict[str, object]:
        return {
            "step": self.step,
            "path": str(self.path),
            "loss": self.loss,
            "validation_loss": self.validation_loss,
            "preview": str(self.preview) if self.preview else None,
            "best": self.best,
        }


@dataclass(frozen=True)
class UsedSnapshot:
    """What "Use this snapshot" did."""

    path: Path  # the embedding file now holding the snapshot
    step: int
    backups: list[Path]  # the replaced files, kept under new names


def _numbered(name: str, suffixes: tuple[str, ...]) -> re.Pattern:
    return re.compile(re.escape(name) + r"-(\d+)(" + "|".join(re.escape(s) for s in suffixes) + r")")


def snapshot_files(run_dir: Path, name: str) -> dict[int, Path]:
    """step -> snapshot file of ``name`` in ``run_dir``."""
    folder = Path(run_dir) / "embeddings"
    pattern = _numbered(name, SNAPSHOT_SUFFIXES)
    found: dict[int, Path] = {}
    for path in folder.iterdir() if folder.is_dir() else ():
        m = pattern.fullmatch(path.name)
        if m and path.is_file():
            found[int(m.group(1))] = path
    return found


def run_folders(log_dir: Path, name: str) -> list[Path]:
    """The run folders of embedding ``name`` under ``log_dir`` that hold snapshots, newest first."""
    log_dir = Path(log_dir)
    folder_name = re.compile(re.escape(name) + r"(-\d+)?")
    runs: list[tuple[float, Path]] = []
    for day in log_dir.iterdir() if log_dir.is_dir() else ():
        for run in day.iterdir() if day.is_dir() else ():
            if not (run.is_dir() and folder_name.fullmatch(run.name)):
                continue
            files = snapshot_files(run, name)
            if files:
                runs.append((max(p.stat().st_mtime for p in files.values()), run))
    return [run for _, run in sorted(runs, key=lambda t: t[0], reverse=True)]


def run_id(log_dir: Path, run_dir: Path) -> str:
    """How clients name a run: its folder relative to the log dir, e.g. ``2024-06-01/cat``."""
    return Path(run_dir).relative_to(log_dir).as_posix()


def find_run(log_dir: Path, name: str, run: str | None = None) -> Path:
    """The run folder ``run`` (a :func:`run_id`) of ``name``, or its newest run. Raises SnapshotError."""
    runs = run_folders(log_dir, name)
    if not runs:
        raise SnapshotError(
            f"{name!r} has no saved snapshots in {log_dir}; train it with snapshots turned on "
            "(save a snapshot every N steps)"
        )
    if not run:
        return runs[0]
    for candidate in runs:
        if run_id(log_dir, candidate) == run:
            return candidate
    raise SnapshotError(
        f"no run {run!r} of {name!r} with snapshots; runs: {', '.join(run_id(log_dir, r) for r in runs)}"
    )


def list_snapshots(run_dir: Path, name: str) -> list[Snapshot]:
    """The snapshots of ``name`` in ``run_dir`` by step, with their losses from ``loss.csv`` and
    their previews; the one with the lowest validation loss is marked ``best``."""
    files = snapshot_files(run_dir, name)
    rows = read_loss_csv(Path(run_dir) / "loss.csv")
    trained = [(r.step, r.loss) for r in rows if r.loss is not None and math.isfinite(r.loss)]
    smoothed = dict(zip((s for s, _ in trained), smooth([v for _, v in trained])))
    validation = {
        r.step: r.validation_loss
        for r in rows
        if r.validation_loss is not None and math.isfinite(r.validation_loss)
    }
    measured = [validation[s] for s in files if s in validation]
    lowest = min(measured) if measured else None
    out = []
    for step in sorted(files):
        preview = Path(run_dir) / "images" / f"{name}-{step}.png"
        val = validation.get(step)
        out.append(
            Snapshot(
                step=step,
                path=files[step],
                loss=smoothed.get(step),
                validation_loss=val,
                preview=preview if preview.is_file() else None,
                best=val is not None and val == lowest,
            )
        )
    return out


def latest_preview(log_dir: Path, name: str) -> Path | None:
    """The preview of the highest step in the newest run of ``name`` that has previews."""
    pattern = _numbered(name, (".png",))
    log_dir = Path(log_dir)
    best: tuple[float, int, Path] | None = None
    folder_name = re.compile(re.escape(name) + r"(-\d+)?")
    for day in log_dir.iterdir() if log_dir.is_dir() else ():
        for run in day.iterdir() if day.is_dir() else ():
            images = run / "images"
            if not (folder_name.fullmatch(run.name) and images.is_dir()):
                continue
            for path in images.iterdir():
                m = pattern.fullmatch(path.name)
                if m:
                    key = (path.stat().st_mtime, int(m.group(1)), path)
                    best = key if best is None or key[:2] > best[:2] else best
    return best[2] if best else None


def _keep_as_backup(path: Path) -> Path:
    """Move ``path`` aside to its backup name; returns that name."""
    backup = free_backup_path(path)
    os.replace(path, backup)
    return backup


def use_snapshot(snapshot: Snapshot, name: str, embeddings_dir: Path) -> UsedSnapshot:
    """Make ``snapshot`` the embedding ``name``: it is written to ``<embeddings dir>/<name>.<ext>``
    (named ``name``, its step kept), and the file it replaces, any other ``name`` file of a
    trainable format there, and the replaced file's resume state are kept as ``<file>.bak``.

    The snapshot is read (and checked) before anything is moved. Raises SnapshotError.
    """
    try:
        embedding = load_embedding(snapshot.path).replace(name=name)
    except (EmbeddingFormatError, OSError) as exc:
        raise SnapshotError(f"cannot read the snapshot {snapshot.path}: {exc}") from None
    fmt = "pt" if snapshot.path.suffix == ".pt" else "safetensors"
    target = final_embedding_path(Path(embeddings_dir), name, fmt)
    replaced = [final_embedding_path(Path(embeddings_dir), name, f) for f in EXTENSIONS]
    backups: list[Path] = []
    if target.exists():  # a copy first: the embedding stays in place until the new one is written
        backup = free_backup_path(target)
        shutil.copy2(target, backup)
        backups.append(backup)
    try:
        save_embedding(embedding, target, fmt, overwrite=True)
    except (EmbeddingFormatError, OSError) as exc:
        for backup in backups:
            backup.unlink(missing_ok=True)
        raise SnapshotError(f"cannot write {target}: {exc}") from None
    for other in replaced:
        if other != target and other.exists():
            backups.append(_keep_as_backup(other))
    # optimizer state belongs to the replaced vectors; the snapshot's own .optim (web UI format) moves along
    for side in {resume_state_path(p) for p in replaced} | {p.with_name(p.name + ".optim") for p in replaced}:
        if side.exists():
            backups.append(_keep_as_backup(side))
    optim = snapshot.path.with_name(snapshot.path.name + ".optim")
    if fmt == "pt" and optim.is_file():
        shutil.copy2(optim, target.with_name(target.name + ".optim"))
    return UsedSnapshot(path=target, step=snapshot.step, backups=backups)
