"""Atomic file writes: a temporary file in the target folder, then a rename.

New files get the user's normal permissions (the umask); a replaced file's mode is kept.

An existing file is never replaced unless ``overwrite=True``; then the old file is kept as
``<file>.bak`` until the new one is in place, and removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from ..temp_files import create_temp_file, created_mode, settle_mode


def _fsync_dir(folder: Path) -> None:
    # Makes the rename durable on POSIX; not possible (nor needed) on Windows.
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def free_backup_path(path: Path) -> Path:
    """``<file>.bak`` beside ``path``, or ``.bak1``, ``.bak2``... (an existing backup is never replaced)."""
    bak = path.with_name(path.name + ".bak")
    n = 1
    while bak.exists() or bak.is_symlink():
        bak = path.with_name(f"{path.name}.bak{n}")
        n += 1
    return bak


def _backup(path: Path) -> Path:
    """A copy of ``path`` beside it under a name nothing else uses (a user's own ``.bak`` is kept)."""
    bak = free_backup_path(path)
    try:
        os.link(path, bak)  # cheap and keeps the original untouched
    except OSError:
        shutil.copy2(path, bak)
    return bak


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path.

    Raises FileExistsError when ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, expected a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (or --overwrite) to replace it")
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp_file(folder, prefix=f".{path.name[:60]}.")
    new_mode = created_mode(fd)
    bak: Path | None = None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite and path.exists():
            settle_mode(tmp, path, new_mode)
            bak = _backup(path)
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if someone created the file meanwhile: never clobber
            except FileExistsError:
                raise FileExistsError(
                    f"{path} already exists; pass overwrite=True (or --overwrite) to replace it"
                ) from None
            except OSError:
                if path.exists():
                    raise FileExistsError(f"{path} already exists") from None
                os.replace(tmp, path)  # filesystem without hard links
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        _fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if bak is not None and path.exists():  # the original is still in place
            with contextlib.suppress(OSError):
                bak.unlink()
        raise
    if bak is not None:
        with contextlib.suppress(OSError):
            bak.unlink()
    return path
