"""``python -m extension create``: a new embedding from an init text (or zeros), ready to train."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..training.config import SAVE_FORMATS, TrainConfig
from .errors import describe_os_error

HELP = "create a new embedding from an init text spread over N vectors (or zeros)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    parser.add_argument("--name", required=True, help="embedding name (its trigger word and file name)")
    parser.add_argument("--model", default=defaults.model, help=f"model to take token embeddings from: tiny-sd1, random-sd15, a folder or .safetensors file (default: {defaults.model})")
    parser.add_argument("--init-text", default="*", help="initialisation text (default: '*'; empty: zeros)")
    parser.add_argument("--vectors", type=int, default=1, help="number of vectors per token (default: 1)")
    parser.add_argument("--zeros", action="store_true", help="start from zero vectors")
    parser.add_argument("--out", default=defaults.embeddings_dir, help=f"output folder (default: {defaults.embeddings_dir})")
    parser.add_argument("--format", choices=SAVE_FORMATS, default="safetensors", help="file format (default: safetensors)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing embedding of that name")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def _argument_problems(args: argparse.Namespace) -> list[str]:
    """The same name, vectors and device rules as ``train``, the API and the tab."""
    from ..limits import name_problem, vectors_problem
    from ..training.config import device_problem

    problems = [name_problem(args.name), vectors_problem(args.vectors)]
    if args.device:
        problems.append(device_problem(args.device))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        problems.append(f"--out {out} is a file, not a folder; give the folder the embedding goes into")
    return [p for p in problems if p]


def run(args: argparse.Namespace) -> int:
    from ..training.outputs import final_embedding_path

    problems = _argument_problems(args)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    path = final_embedding_path(Path(args.out), args.name, args.format)
    if path.exists() and not args.overwrite:
        print(f"error: {path} already exists; pass --overwrite to replace it or pick another --name", file=sys.stderr)
        return 2

    from ..backends import ModelLoadError, load_backend
    from ..embedding import save_embedding
    from ..training.create import create_embedding

    try:
        backend = load_backend(args.model, device=args.device)
    except (ModelLoadError, ValueError, OSError, RuntimeError) as exc:
        print(f"error: cannot load model {args.model!r}: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    try:
        embedding = create_embedding(backend, args.name, args.init_text, args.vectors, zeros=args.zeros)
        written = save_embedding(embedding, path, args.format, overwrite=args.overwrite)
    except FileExistsError as exc:  # created meanwhile by someone else
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only or full folder: nothing partial is left (atomic write)
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"created {written} ({embedding.n_vectors} vectors, width {embedding.width}, {backend.family})")
    return 0
