"""Where a training run writes its files.

``<log dir>/<YYYY-MM-DD>/<name>/`` holds ``embeddings/<name>-<step>.<ext>`` (snapshots, the number
is the number of steps done), ``images/<name>-<step>.png`` (previews),
``image_embeddings/<name>-<step>.png`` (PNG cards), ``loss.csv`` and ``loss.png``. The final
embedding goes to ``<embeddings dir>/<name>.<ext>`` with the resume state beside it.
"""

from __future__ import annotations

import csv
import datetime
import os
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from ..temp_files import create_temp_file, created_mode, settle_mode

EXTENSIONS = {"safetensors": ".safetensors", "pt": ".pt"}


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path`` and move it into place.

    A new file gets the user's normal permissions (the umask); a replaced file keeps its mode.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp_file(path.parent, prefix=f".{path.name}.")
    new_mode = created_mode(fd)
    os.close(fd)
    try:
        write(tmp)
        settle_mode(tmp, path, new_mode)  # ``write`` may have put a 0600 file there (safetensors does)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def final_embedding_path(embeddings_dir: Path, name: str, save_format: str) -> Path:
    """``<embeddings dir>/<name>.<ext>``."""
    return Path(embeddings_dir) / f"{name}{EXTENSIONS[save_format]}"


def resume_state_path(embedding_path: Path) -> Path:
    """The resume state beside a final embedding: ``<name>.resume``.

    The extension is one the web UI's embedding loader ignores, so the file never shows up as a
    broken embedding in its list.
    """
    return embedding_path.with_name(embedding_path.stem + ".resume")


@dataclass(frozen=True)
class RunDirs:
    """The folders of one run (the root claimed at the start, the rest created when written)."""

    root: Path
    name: str
    save_format: str = "safetensors"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def image_embeddings(self) -> Path:
        return self.root / "image_embeddings"

    @property
    def loss_csv(self) -> Path:
        return self.root / "loss.csv"

    @property
    def loss_plot(self) -> Path:
        return self.root / "loss.png"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def snapshot(self, step: int) -> Path:
        return self.embeddings / f"{self.name}-{step}{EXTENSIONS[self.save_format]}"

    def preview(self, step: int) -> Path:
        return self.images / f"{self.name}-{step}.png"

    def card(self, step: int) -> Path:
        return self.image_embeddings / f"{self.name}-{step}.png"


def choose_run_dir(
    log_dir: Path,
    name: str,
    *,
    reuse: bool,
    today: datetime.date | None = None,
    start_step: int = 0,
    keep_log: bool = True,
) -> Path:
    """``<log dir>/<date>/<name>``; a fresh ``<name>-2``, ``-3``... when that folder already has
    files, so an earlier run is never overwritten.

    With ``reuse`` (a run continuing from ``start_step``) the newest of those folders is taken
    again, unless it holds numbered outputs (snapshots, previews, cards) of a step after
    ``start_step``: those belong to another run, which the new one would overwrite. With
    ``keep_log`` a ``loss.csv`` row after ``start_step`` counts too (``--overwrite`` lets the new
    run replace the log of the run it replaces).
    """
    day = (today or datetime.date.today()).strftime("%Y-%m-%d")
    base = Path(log_dir) / day
    candidate, newest = base / name, None
    n = 2
    while candidate.exists() and any(candidate.iterdir()):
        newest = candidate
        candidate = base / f"{name}-{n}"
        n += 1
    if reuse and newest is not None and _last_step(newest, name, keep_log) <= start_step:
        return newest
    return candidate


CLAIM_FILE = ".ti-trainer-run"  # marks a run folder as taken from the moment a run chooses it


def claim_run_dir(log_dir: Path, name: str, *, reuse: bool, start_step: int = 0, keep_log: bool = True) -> Path:
    """:func:`choose_run_dir`, and the folder taken for this run at once: a run started at the same
    moment with the same name gets the next folder instead of writing into the same one.

    A folder being reused (a continuing run) is returned as it is; a new one gets :data:`CLAIM_FILE`,
    created exclusively, which :func:`release_run_dir` removes again if the run wrote nothing else.
    """
    while True:
        run_dir = choose_run_dir(log_dir, name, reuse=reuse, start_step=start_step, keep_log=keep_log)
        if reuse and run_dir.is_dir() and any(run_dir.iterdir()):
            return run_dir  # the newest folder, taken again by a continuing run
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            os.close(os.open(run_dir / CLAIM_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue  # another run took it between the two calls: the next folder
        return run_dir


def release_run_dir(run_dir: Path) -> None:
    """Remove a claimed run folder again when the run wrote nothing into it."""
    claim = Path(run_dir) / CLAIM_FILE
    try:
        if [p.name for p in Path(run_dir).iterdir()] == [CLAIM_FILE]:
            claim.unlink()
            Path(run_dir).rmdir()
    except OSError:
        pass  # written to meanwhile, or already gone: nothing to tidy


def _last_step(run_dir: Path, name: str, with_log: bool) -> int:
    """The highest step of a run folder's ``<name>-<step>.<ext>`` files (and, ``with_log``, of its
    ``loss.csv`` rows); -1 when there is none."""
    pattern = re.compile(re.escape(name) + r"-(\d+)\.[^.]+")
    last = -1
    for sub in ("embeddings", "images", "image_embeddings"):
        folder = run_dir / sub
        for path in folder.iterdir() if folder.is_dir() else ():
            m = pattern.fullmatch(path.name)
            if m:
                last = max(last, int(m.group(1)))
    log = run_dir / "loss.csv"
    if with_log and log.is_file():
        with open(log, newline="", encoding="utf-8", errors="replace") as f:
            for row in csv.reader(f):
                if row and row[0].isdigit():
                    last = max(last, int(row[0]))
    return last


def prune_snapshots(folder: Path, name: str, keep: int, *, only: Collection[Path] | None = None) -> list[Path]:
    """Delete all but the newest ``keep`` numbered snapshots ``<name>-<step>.<ext>`` in ``folder``.

    Only files this trainer names that way are touched (with their ``.optim`` side files), and with
    ``only`` just those of them; returns the deleted snapshot paths.
    """
    allowed = None if only is None else {Path(p) for p in only}
    pattern = re.compile(re.escape(name) + r"-(\d+)(" + "|".join(re.escape(e) for e in EXTENSIONS.values()) + r")")
    found = []
    for path in Path(folder).iterdir() if Path(folder).is_dir() else ():
        m = pattern.fullmatch(path.name)
        if m and path.is_file() and (allowed is None or path in allowed):
            found.append((int(m.group(1)), path))
    found.sort()
    deleted = []
    for _, path in found[: max(0, len(found) - keep)]:
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".optim").unlink(missing_ok=True)
        deleted.append(path)
    return deleted
