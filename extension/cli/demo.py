"""``python -m extension demo``: train a small embedding end to end on a tiny model, offline.

Builds the tiny seeded model and a procedurally drawn dataset, trains with a multi-stage learn
rate schedule, batch 2 and gradient accumulation 2, and prints where the embedding, the PNG card,
the loss CSV and the loss plot went. Every run gets a new dated folder, so nothing is overwritten.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

HELP = "train a demo embedding on a tiny built-in model and drawn images (offline, under a minute)"

DEFAULT_OUT = Path("ti_trainer_output") / "demo"
SCHEDULE = "0.05:10, 0.02:25, 0.005"
NAME = "demo-cat"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps (default: 30)")
    parser.add_argument("--family", choices=("sd1", "sd2", "sdxl"), default="sd1", help="tiny model family (default: sd1)")
    parser.add_argument("--images", type=int, default=8, help="number of drawn training images (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--progress-bar", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar"
    )


def new_run_folder(out: Path, now: datetime.datetime | None = None) -> Path:
    """``<out>/<YYYY-MM-DD_HHMMSS>``, with ``-2``, ``-3``... when that already exists."""
    stamp = (now or datetime.datetime.now()).strftime("%Y-%m-%d_%H%M%S")
    candidate, n = out / stamp, 2
    while candidate.exists():
        candidate, n = out / f"{stamp}-{n}", n + 1
    return candidate


def run(args: argparse.Namespace) -> int:
    if args.steps < 1 or args.images < 1:
        print("error: --steps and --images must be at least 1", file=sys.stderr)
        return 2
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model's ops are too small to gain from threads
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    from ..backends.tiny import build_tiny_backend
    from ..training.config import TrainConfig
    from ..training.create import embedding_from_vectors, vectors_for_backend
    from ..training.demo_data import make_demo_dataset
    from ..training.loop import TrainCallbacks, train
    from ..training.preview import preview_request, save_preview
    from .train import exit_code, print_result

    folder = new_run_folder(Path(args.out))
    size = 64
    print(f"demo: building the tiny {args.family} model and {args.images} drawn images in {folder}")
    backend = build_tiny_backend(args.family, seed=args.seed)
    data = make_demo_dataset(folder / "data", n=args.images, size=size, seed=args.seed)
    every = max(1, args.steps // 3)
    config = TrainConfig(
        name=NAME,
        model=f"tiny-{args.family}",
        init_text="cat",
        vectors=2,
        data=str(data),
        width=size,
        height=size,
        template="subject_filewords",
        log_dir=str(folder / "logs"),
        embeddings_dir=str(folder / "embeddings"),
        learn_rate=SCHEDULE,
        max_steps=args.steps,
        batch_size=2,
        grad_accumulation=2,
        save_every=every,
        preview_every=every,
        preview_prompt=f"a photo of {NAME}",
        preview_steps=10,
        validation_every=max(1, every // 2),
        validation_images=4,
        seed=args.seed,
        progress_bar=args.progress_bar,
        tensorboard=False,
    )
    result = train(config, backend, callbacks=TrainCallbacks(on_message=lambda m: print(m, file=sys.stderr)))
    if result.embedding is not None and result.run_dir is not None and result.steps_done % every:
        # make sure the card shows the final vectors
        step = result.steps_done
        vectors = vectors_for_backend(result.embedding, backend)
        files = save_preview(
            backend, preview_request(config, config.preview_prompt), NAME, vectors,
            result.run_dir / "images" / f"{NAME}-{step}.png",
            card_path=result.run_dir / "image_embeddings" / f"{NAME}-{step}.png",
            embedding=embedding_from_vectors(f"{NAME}-{step}", vectors, backend, step=step), step=step,
        )  # fmt: skip
        result.files += [files.image] + ([files.card] if files.card else [])
    if result.validation:
        (s0, v0), (s1, v1) = result.validation[0], result.validation[-1]
        print(f"validation loss: {v0:.5f} at step {s0} -> {v1:.5f} at step {s1}")
    print_result(result)
    print(f"use it in a prompt as: a photo of {NAME}")
    return exit_code(result.reason)
