"""Temporary files and folders beside a target, created with the user's normal permissions.

``tempfile.mkstemp``/``mkdtemp`` make 0600 files and 0700 folders whatever the umask, and a file
renamed into place keeps that mode: another account (a web UI run as a service, a shared embeddings
folder) could not read what we wrote.  Here the kernel applies the umask as it does for every other
tool's output (0644 files, 0755 folders under umask 022).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

_FILE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
_ATTEMPTS = 100


def _candidates(folder: str | os.PathLike, prefix: str, suffix: str) -> Iterator[Path]:
    for _ in range(_ATTEMPTS):
        yield Path(folder) / f"{prefix}{secrets.token_hex(4)}{suffix}"


def _no_free_name(folder: str | os.PathLike) -> FileExistsError:
    return FileExistsError(errno.EEXIST, f"no free temporary name in {folder}")


def create_temp_file(folder: str | os.PathLike, prefix: str = "", suffix: str = ".tmp") -> tuple[int, Path]:
    """A new empty file in ``folder`` with mode 0666 less the umask, open for reading and writing.

    Returns ``(fd, path)``; the caller closes ``fd`` and renames or removes the file.
    """
    for path in _candidates(folder, prefix, suffix):
        try:
            return os.open(path, _FILE_FLAGS, 0o666), path
        except FileExistsError:
            continue
    raise _no_free_name(folder)


def create_temp_dir(folder: str | os.PathLike, prefix: str = "") -> Path:
    """A new empty folder in ``folder`` with mode 0777 less the umask."""
    for path in _candidates(folder, prefix, ""):
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue
    raise _no_free_name(folder)


def created_mode(fd: int) -> int:
    """The permission bits a file was created with (for a ``create_temp_file`` file: 0666 less the umask)."""
    return stat.S_IMODE(os.fstat(fd).st_mode)


def settle_mode(tmp: Path, target: Path, new_mode: int) -> None:
    """Set ``tmp``'s permissions before it replaces ``target``: ``target``'s own mode when it exists
    (as rewriting it in place would keep it: a file the user made private stays private), else
    ``new_mode``.  Needed after writers that replace the file themselves (safetensors 0.8 writes
    through its own 0600 temporary file)."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode) & 0o777
    except OSError:
        mode = new_mode
    os.chmod(tmp, mode)


def settle_tree_modes(folder: Path) -> None:
    """Give every file and folder under ``folder`` the permissions ``folder`` was created with
    (files without the execute bits), whatever the libraries that wrote them chose."""
    dir_mode = stat.S_IMODE(os.stat(folder).st_mode)
    for path in folder.rglob("*"):
        if path.is_symlink():
            continue
        os.chmod(path, dir_mode if path.is_dir() else dir_mode & 0o666)
