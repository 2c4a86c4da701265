"""One-line messages for errors from the operating system and the unexpected, instead of tracebacks."""

from __future__ import annotations

import errno
import os

_FIXES = {
    errno.EROFS: "the folder is on a read-only file system; choose another folder",
    errno.EACCES: "you may not write there; choose a folder you own or fix its permissions",
    errno.EPERM: "you may not write there; choose a folder you own or fix its permissions",
    errno.ENOSPC: "the disk is full; free some space or choose another folder",
    errno.EDQUOT: "your disk quota is used up; free some space or choose another folder",
    errno.ENAMETOOLONG: "the file name is too long; choose a shorter name or folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.EISDIR: "the path is a folder; give a file name",
}

TRACEBACK_ENV = "TI_TRAINER_TRACEBACK"  # set to 1 to see the traceback of an unexpected error


def describe_os_error(exc: BaseException) -> str:
    """``cannot use /x/y.safetensors: Read-only file system - the folder is on a read-only ...``;
    other exceptions: their message."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        fix = _FIXES.get(exc.errno or 0)
        return f"cannot use{where}: {exc.strerror}" + (f" - {fix}" if fix else "")
    return str(exc).strip() or type(exc).__name__


def describe_unexpected(exc: BaseException) -> str:
    """One line for an error nobody expected (the traceback only with TI_TRAINER_TRACEBACK=1)."""
    text = str(exc).strip().splitlines()
    return (
        f"unexpected {type(exc).__name__}: {text[0] if text else ''} "
        f"(set {TRACEBACK_ENV}=1 to see where, and please report it)"
    )


def show_traceback() -> bool:
    """Whether the user asked for tracebacks of unexpected errors."""
    return os.environ.get(TRACEBACK_ENV, "") not in ("", "0")
