"""``python -m extension export-checkpoint``: write a model as one web-UI style ``.safetensors`` file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "write a model (e.g. random-sd15) as a single-file checkpoint in the original ldm/sgm layout"

EXAMPLES = """examples:
  python -m extension export-checkpoint random-sd15 /tmp/random-sd15.safetensors
  python -m extension export-checkpoint random-sdxl@3 sdxl.safetensors --dtype bf16
  python -m extension export-checkpoint ./my-diffusers-folder model.safetensors --overwrite

The file loads in the web UI (put it in models/Stable-diffusion) and with --model <file> here.
Sizes in fp16: random-sd15 2.1 GB, random-sd2v 2.6 GB, random-sdxl 6.9 GB.
"""


DTYPE_NAMES = ("fp16", "bf16", "fp32")  # the keys of ldm_export.DTYPES (kept here: --help must not load torch)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLES
    parser.add_argument(
        "model",
        help="random-sd15 / random-sd2v / random-sdxl (optionally @<seed>), tiny-sd1 / tiny-sd2 / tiny-sdxl, "
        "a diffusers folder or a .safetensors checkpoint",
    )
    parser.add_argument("output", help="the .safetensors file to write")
    parser.add_argument(
        "--dtype",
        choices=DTYPE_NAMES,
        default="fp16",
        help="dtype of the weights in the file (default: fp16)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--device", default="cpu", help="where to build or load the model (default: cpu)")


def run(args: argparse.Namespace) -> int:
    from ..backends import ModelLoadError, load_backend
    from ..backends.ldm_export import DTYPES, ExportError, save_single_file

    output = Path(args.output)
    if output.suffix.lower() != ".safetensors":
        print(
            f"error: {output.name} must end in .safetensors (e.g. {output.stem}.safetensors)", file=sys.stderr
        )
        return 2
    if output.exists() and not args.overwrite:
        print(
            f"error: {output} already exists; pass --overwrite to replace it or choose another name",
            file=sys.stderr,
        )
        return 2
    if output.is_dir():
        print(f"error: {output} is a folder; give a file name ending in .safetensors", file=sys.stderr)
        return 2
    dtype = DTYPES[args.dtype]
    try:
        # random models are built straight in the file's dtype: no second copy
        backend = load_backend(args.model, device=args.device, dtype=dtype)
    except (ModelLoadError, ValueError, OSError) as exc:
        print(f"error: cannot load model {args.model!r}: {exc}", file=sys.stderr)
        return 2
    try:
        written = save_single_file(backend, output, dtype=dtype, overwrite=args.overwrite)
    except (ExportError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {output}: {exc}; check the folder and the free space", file=sys.stderr)
        return 1
    size = written.stat().st_size
    print(f"wrote {written} ({backend.family}, {args.dtype}, {size / 1e9:.2f} GB)")
    return 0
