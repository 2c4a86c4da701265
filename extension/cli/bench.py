"""``python -m extension bench``: the trainer's step time against the bare cost of the same work."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "measure the trainer's time per step against the bare forward/backward cost (prints a table and JSON)"

EXAMPLES = """examples:
  python -m extension bench                                   # tiny SD1 model, batch 2 x accumulation 2
  python -m extension bench --steps 60 --warmup 10 --threads 1 --json bench.json
  python -m extension bench --model ./sd15.safetensors --size 512 --steps 30
  python -m extension bench --model random-sd15 --size 512                    # SD 1.5 at full size (GPU)
  python -m extension bench --model random-sd15 --size 512 --batch-size 1 --grad-accumulation 1 \
      --steps 3 --warmup 1 --images 1                                         # the same on a CPU (minutes)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLES
    a = parser.add_argument
    a(
        "--model",
        default="tiny-sd1",
        help="tiny-sd1 / tiny-sd2 / tiny-sdxl, random-sd15 / random-sd2v / random-sdxl (full size, random "
        "weights), a diffusers folder or a .safetensors checkpoint (default: tiny-sd1)",
    )
    a("--batch-size", type=int, default=2, help="examples per micro-batch (default: 2)")
    a("--grad-accumulation", type=int, default=2, help="micro-batches per optimizer step (default: 2)")
    a("--steps", type=int, default=50, help="timed optimizer steps of each path (default: 50)")
    a("--warmup", type=int, default=5, help="untimed warm-up steps before them (default: 5)")
    a(
        "--size",
        type=int,
        default=0,
        help="image side in pixels (default: the model's native size, 64 for tiny)",
    )
    a("--images", type=int, default=8, help="number of drawn training images (default: 8)")
    a("--vectors", type=int, default=1, help="vectors of the embedding (default: 1)")
    a(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "fp16", "bf16"),
        help="auto: bf16/fp16 on CUDA, fp32 on the CPU (default: auto)",
    )
    a(
        "--threads",
        type=int,
        default=0,
        help="torch threads for both paths (default: 1 for the tiny models, else torch's setting)",
    )
    a("--device", default="", help="cpu or cuda[:N] (default: CUDA when available)")
    a("--seed", type=int, default=0, help="random seed (default: 0)")
    a(
        "--json",
        metavar="FILE",
        default="",
        help="also write the JSON to FILE ('-': print only the JSON on stdout, the table on stderr)",
    )
    a("--quality", action="store_true",
      help="run the quality benchmark instead (how many steps textual inversion needs on tiny-shapes; "
           "the same as 'python -m extension quality' with its defaults; --json is passed on)")  # fmt: skip
    a("--compare-builtin", action="store_true",
      help="also run the web UI's own trainer side by side (only available inside the web UI)")  # fmt: skip


def settings_from_args(args: argparse.Namespace):
    """The :class:`~..benchmark.runner.BenchSettings` of parsed arguments."""
    from ..benchmark.runner import BenchSettings

    return BenchSettings(
        model=args.model,
        batch_size=args.batch_size,
        grad_accumulation=args.grad_accumulation,
        steps=args.steps,
        warmup=args.warmup,
        size=args.size,
        images=args.images,
        vectors=args.vectors,
        precision=args.precision,
        threads=args.threads,
        device=args.device,
        seed=args.seed,
        compare_builtin=args.compare_builtin,
    )


def run_quality(args: argparse.Namespace) -> int:
    """``bench --quality``: the quality benchmark with its own defaults (see :mod:`..shapes.quality`)."""
    from ..shapes import quality

    parser = argparse.ArgumentParser(prog="python -m extension quality")
    quality.add_arguments(parser)
    return quality.run(parser.parse_args(["--json", args.json] if args.json not in ("", "-") else []))


def run(args: argparse.Namespace) -> int:
    from ..benchmark.runner import BenchError, run_benchmark

    if args.quality:
        return run_quality(args)
    settings = settings_from_args(args)
    try:
        settings.check()
        if settings.compare_builtin:
            from ..benchmark.runner import WEBUI_ONLY

            raise BenchError(WEBUI_ONLY)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from ..backends.loading import ModelLoadError
    from ..benchmark.report import format_table
    from ..training.config import ConfigError

    try:
        result = run_benchmark(settings)
    except (BenchError, ModelLoadError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result.to_dict(), indent=2)
    table = format_table(result)
    if args.json == "-":
        print(table, file=sys.stderr)
        print(text)
        return 0
    print(table)
    print()
    print(text)
    if args.json:
        from ..training.outputs import atomic_write

        path = Path(args.json)
        try:
            atomic_write(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
        except OSError as exc:
            print(f"error: cannot write {path}: {exc}; choose another --json file", file=sys.stderr)
            return 1
        print(f"\nwrote {path}", file=sys.stderr)
    return 0
