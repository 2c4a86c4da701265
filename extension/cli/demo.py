"""``python -m extension demo``: watch textual inversion learn a concept the model was never shown.

On the shipped tiny-shapes model (:mod:`..shapes.model`) it draws ~8 pictures of a held-out
colour-shape pair (cyan triangles by default: the model knows cyan and triangles, never together),
starts an embedding from an unrelated word, and trains it with a multi-stage learn-rate schedule,
batch 2 and gradient accumulation 2. Before and after, it renders seeded previews of "a photo of
<embedding>", lets the judge (:mod:`..shapes.judge`) say what each shows, and prints the share
recognised as the concept. Every run gets a new dated folder with the embedding, before/after
contact sheets and ``demo_summary.json``; the run's PNG card, loss CSV and loss plot are under its
``logs`` folder. Nothing is overwritten.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

HELP = "watch an embedding learn a held-out concept on the tiny built-in shapes model (offline, CPU, < 1 min)"

DEFAULT_OUT = Path("ti_trainer_output") / "demo"
SCHEDULE = "0.02:40, 0.01"
NAME = "demo-shape"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..shapes.draw import HELD_OUT

    held = ", ".join(f"'{c} {s}'" for c, s in HELD_OUT)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--concept", default="cyan triangle", help=f"colour and shape to learn (held out: {held})")
    parser.add_argument("--init-text", default="cat", help="the embedding's starting word (default: cat)")
    parser.add_argument("--model", default="tiny-shapes", help="model to train on (default: tiny-shapes)")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps (default: 60)")
    parser.add_argument("--learn-rate", default=SCHEDULE, help=f"learning-rate schedule (default: {SCHEDULE!r})")
    parser.add_argument("--images", type=int, default=8, help="number of drawn training pictures (default: 8)")
    parser.add_argument("--samples", type=int, default=16, help="seeded previews judged before and after (default: 16)")
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
    from ..schedule import LearnRateSchedule
    from ..shapes.draw import parse_concept

    problems = [f"--{k} must be at least 1" for k in ("steps", "images", "samples") if getattr(args, k) < 1]
    try:
        parse_concept(args.concept)
    except ValueError as exc:
        problems.append(str(exc))
    try:
        LearnRateSchedule.parse(args.learn_rate, max(args.steps, 1))
    except ValueError as exc:
        problems.append(f"--learn-rate: {exc}")
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return 2
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model's ops are too small to gain from threads
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    from ..backends.loading import ModelLoadError, load_backend
    from ..shapes.score import contact_sheet, score_embedding
    from ..training.create import create_embedding, vectors_for_backend
    from ..training.demo_data import make_shapes_dataset
    from ..training.loop import TrainCallbacks, train
    from ..training.outputs import atomic_write
    from .train import exit_code, print_result

    started = time.monotonic()
    folder = new_run_folder(Path(args.out))
    try:
        backend = load_backend(args.model, device="cpu")
    except (ModelLoadError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    side = backend.default_size
    concept = " ".join(args.concept.replace("-", " ").split())
    print(f"demo: learning '{concept}' on {backend.checkpoint_name} from {args.images} drawn pictures, in {folder}")
    data = make_shapes_dataset(folder / "data", concept, n=args.images, size=side, seed=args.seed)
    prompt = f"a photo of {NAME}"

    def judged(vectors, label: str) -> float:
        score = score_embedding(backend, prompt, {NAME: vectors}, concept, samples=args.samples, seed=args.seed)
        contact_sheet(score.images, folder / f"previews_{label}.png")
        seen = sorted({v.concept or "unrecognised" for v in score.verdicts})
        print(f"{label}: {score.hits}/{args.samples} previews judged '{concept}' (the judge saw: {', '.join(seen)})")
        return score.value

    start = create_embedding(backend, NAME, args.init_text, 2)
    before = judged(vectors_for_backend(start, backend), "before")
    config = _config(args, data, folder, side)
    result = train(
        config, backend, embedding=start, callbacks=TrainCallbacks(on_message=lambda m: print(m, file=sys.stderr))
    )
    if result.embedding is None:
        print_result(result)
        return exit_code(result.reason) or 1
    after = judged(vectors_for_backend(result.embedding, backend), "after")
    summary = {"concept": concept, "score_before": before, "score_after": after, "samples": args.samples,
               "init_text": args.init_text, "steps": result.steps_done, "model": backend.checkpoint_name,
               "seconds": round(time.monotonic() - started, 1)}  # fmt: skip
    summary_path = folder / "demo_summary.json"
    atomic_write(summary_path, lambda tmp: tmp.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8"))
    if result.validation:
        (s0, v0), (s1, v1) = result.validation[0], result.validation[-1]
        print(f"validation loss: {v0:.5f} at step {s0} -> {v1:.5f} at step {s1}")
    print_result(result)
    print(f"  previews:   {folder / 'previews_before.png'} -> {folder / 'previews_after.png'}")
    print(f"  summary:    {summary_path}")
    print(f"score: {before:.0%} -> {after:.0%} of {args.samples} previews recognised as '{concept}' "
          f"({summary['seconds']:.0f} s in all)")  # fmt: skip
    print(f"use it in a prompt as: a photo of {NAME}")
    return exit_code(result.reason)


def _config(args: argparse.Namespace, data: Path, folder: Path, side: int):
    from ..training.config import TrainConfig

    return TrainConfig(
        name=NAME,
        model=args.model,
        init_text=args.init_text,
        vectors=2,
        data=str(data),
        width=side,
        height=side,
        template="subject_filewords",
        log_dir=str(folder / "logs"),
        embeddings_dir=str(folder),
        learn_rate=args.learn_rate,
        max_steps=args.steps,
        batch_size=2,
        grad_accumulation=2,
        save_every=args.steps,
        preview_every=args.steps,
        preview_prompt=f"a photo of {NAME}",
        preview_steps=20,
        preview_cfg_scale=5.0,
        validation_every=max(1, args.steps // 4),
        validation_images=4,
        seed=args.seed,
        progress_bar=args.progress_bar,
        tensorboard=False,
    )
