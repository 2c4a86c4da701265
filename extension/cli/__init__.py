"""Command-line interface: one module per sub-command, imported only when that command runs.

Each command module defines ``HELP: str``, ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# command name -> module in this package
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "train": "train",
    "create": "create",
    "inspect-prompt": "inspect_prompt",
    "inspect": "inspect_file",
    "convert": "convert",
    "bench": "bench",
    "ui": "ui",
}


def _load(module: str):
    return importlib.import_module(f".{module}", __name__)


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The top-level parser with a sub-parser for every available command."""
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
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    only = [argv[0]] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
