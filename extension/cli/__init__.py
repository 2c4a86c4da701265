"""Command-line interface: one module per sub-command, imported only when that command runs.

Each command module defines ``HELP: str``, ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .errors import describe_os_error, describe_unexpected, show_traceback

# command name -> module in this package
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "train": "train",
    "create": "create",
    "inspect-prompt": "inspect_prompt",
    "inspect": "inspect_file",
    "convert": "convert",
    "bench": "bench",
    "quality": "quality",
    "export-checkpoint": "export_checkpoint",
    "ui": "ui",
}


def _load(module: str):
    return importlib.import_module(f".{module}", __name__)


def build_parser(commands: Sequence[str] | None = None, *, arguments: bool = True) -> argparse.ArgumentParser:
    """The top-level parser with a sub-parser for every available command (with each command's
    arguments unless ``arguments`` is false: enough for ``--help``, and no command's imports run)."""
    parser = argparse.ArgumentParser(prog="python -m extension", description="TI Trainer")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in commands or COMMANDS:
        try:
            mod = _load(COMMANDS[name])
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(COMMANDS[name]):
                continue  # command not built yet
            raise
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        if arguments:
            mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    only = [argv[0]] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only, arguments=only is not None)  # `--help` alone: no command's imports
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP while a command saves nothing
        print(f"interrupted ({exc})" if str(exc) else "interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # no traceback reaches the user: one line, exit code 1
        if show_traceback():
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        first = (str(exc).strip().splitlines() or [""])[0]
        return (
            f"out of memory ({first or type(exc).__name__}); lower the batch size or the width/height, "
            "or turn on gradient checkpointing"
        )
    return describe_unexpected(exc)
