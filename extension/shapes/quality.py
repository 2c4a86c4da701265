"""The quality benchmark: how fast textual inversion finds held-out concepts on tiny-shapes.

For every held-out concept x seed, the real trainer (:func:`..training.loop.train`) runs the
demo's recipe (8 drawn pictures, the unrelated init word "cat", 2 vectors, learning rate
"0.02:40, 0.01", batch 2 x accumulation 2, subject_filewords); every ``every`` steps the snapshot is scored (judged share of ``samples``
seeded previews of "a photo of <name>") and the validation loss recorded. Reported: both against
steps, and the first step at which the score reaches :data:`TARGET`.

``python -m extension.shapes.quality [--steps 100] [--every 20] [--seeds 0,1] [--json FILE]``.
Another trainer's snapshots (any layout :func:`..embedding.load_embedding` reads: diffusers'
``learned_embeds-steps-N.safetensors``, the web UI's ``name-N.pt``...) are scored the same way with
``--score FOLDER --concept "cyan triangle"`` (:func:`score_files`); ``python -m extension.shapes.peers``
writes the model and data for such a trainer.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .draw import HELD_OUT

TARGET = 0.8
NAME = "quality-shape"


@dataclass
class Curve:
    """One run: ``scores`` and ``validation`` as (steps done, value); ``seconds`` of training + scoring."""

    concept: str
    seed: int
    scores: list[tuple[int, float]] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def steps_to_target(self) -> int | None:
        """The first step whose score is at least :data:`TARGET` (None: never within the run)."""
        return next((step for step, score in self.scores if score >= TARGET), None)

    @property
    def mean_score(self) -> float | None:
        """The mean score of the snapshots after step 0: less at the mercy of one lucky snapshot than
        :attr:`steps_to_target` (None: no trained snapshot)."""
        trained = [score for step, score in self.scores if step > 0]
        return sum(trained) / len(trained) if trained else None


def score_curve(
    backend, concept: str, snapshots: list[tuple[int, dict]], *, samples: int = 8, seed: int = 0
) -> list[tuple[int, float]]:
    """Score ``(step, {encoder key: vectors})`` snapshots of an embedding of ``concept`` (any trainer's)."""
    from .score import score_embedding

    return [
        (
            step,
            score_embedding(
                backend, f"a photo of {NAME}", {NAME: vectors}, concept, samples=samples, seed=seed
            ).value,
        )
        for step, vectors in snapshots
    ]


SNAPSHOT_SUFFIXES = (".pt", ".safetensors", ".bin", ".png", ".webp")


def snapshot_files(folder: Path) -> list[tuple[int, Path]]:
    """The embedding files in ``folder`` by step: the step stored in the file, else the number that
    ends its name (``learned_embeds-steps-40``, ``name-40``); files with neither are skipped."""
    from ..embedding import load_embedding

    found = []
    for path in sorted(Path(folder).iterdir()):
        if path.suffix.lower() not in SNAPSHOT_SUFFIXES or not path.is_file():
            continue
        step = load_embedding(path).step
        if step is None:
            number = re.search(r"(\d+)$", path.stem)
            step = int(number.group(1)) if number else None
        if step is not None:
            found.append((step, path))
    return sorted(found)


def score_files(
    backend, concept: str, folder: Path, *, samples: int = 16, seed: int = 0, validation_config=None
) -> Curve:
    """Score every snapshot in ``folder`` (another trainer's, or ours) as :func:`score_curve` does;
    with ``validation_config`` (a :func:`recipe_config` of the pictures it was trained on) also its
    validation loss, on the same validation set as our run of that config."""
    from ..embedding import load_embedding
    from ..training.create import vectors_for_backend

    curve = Curve(concept, seed)
    start = time.monotonic()
    snapshots = [(step, vectors_for_backend(load_embedding(path), backend)) for step, path in snapshot_files(folder)]
    for step, vectors in snapshots:
        curve.scores += score_curve(backend, concept, [(step, vectors)], samples=samples)
    if validation_config is not None:
        curve.validation = validation_losses(backend, validation_config, snapshots)
    curve.seconds = time.monotonic() - start
    return curve


def recipe_config(
    data: Path, seed: int, work: Path, *, steps: int = 100, every: int = 20, learn_rate: str = "0.02:40, 0.01",
    init_text: str = "cat", vectors: int = 2, template: str = "subject_filewords", batch_size: int = 2,
    grad_accumulation: int = 2, side: int = 32,
):  # fmt: skip
    """The benchmark's :class:`..training.config.TrainConfig`: ``data``'s pictures, a snapshot and a
    validation loss every ``every`` steps (4 pictures, fixed noise and timesteps from ``seed``)."""
    from ..training.config import TrainConfig

    return TrainConfig(
        name=NAME, model="tiny-shapes", init_text=init_text, vectors=vectors, data=str(data),
        width=side, height=side, template=template,
        log_dir=str(work / "logs"), embeddings_dir=str(work / "final"), learn_rate=learn_rate,
        max_steps=steps, batch_size=batch_size, grad_accumulation=grad_accumulation, save_every=every, preview_every=0,
        validation_every=every, validation_images=4, seed=seed, progress_bar=False, tensorboard=False,
    )  # fmt: skip


def validation_losses(backend, config, snapshots: list[tuple[int, dict]]) -> list[tuple[int, float]]:
    """The validation loss of each ``(step, vectors)`` on the validation set a run of ``config`` uses
    (the same pictures, prompts, noise and timesteps), so any trainer's snapshots compare with ours."""
    from ..training.dataset import TrainingDataset
    from ..training.loss import ValidationSet

    dataset = TrainingDataset.prepare(config.dataset_options(), backend, NAME, progress=lambda done, total: None,
                                      seed=config.seed)  # fmt: skip
    validation = ValidationSet.build(
        dataset, backend, n_images=config.validation_images, timesteps_per_image=config.validation_timesteps,
        batch_size=min(config.batch_size, len(dataset)), seed=config.seed,
    )  # fmt: skip
    with backend.frozen(), backend.text_settings(config.emphasis, config.clip_skip):
        return [(step, validation.loss(backend, NAME, vectors)) for step, vectors in snapshots]


def run_ours(
    backend, concept: str, seed: int, *, steps: int, every: int, samples: int, learn_rate: str, work: Path,
    init_text: str = "cat", vectors: int = 2, template: str = "subject_filewords", batch_size: int = 2,
    grad_accumulation: int = 2, log: Callable[[str], None] = lambda m: None,
) -> Curve:  # fmt: skip
    """Train ``concept`` with our trainer and score every ``every`` steps (step 0 included)."""
    from ..embedding import load_embedding
    from ..training.create import create_embedding, vectors_for_backend
    from ..training.demo_data import make_shapes_dataset
    from ..training.loop import TrainCallbacks, train

    curve = Curve(concept, seed)
    start = time.monotonic()
    data = make_shapes_dataset(work / "data", concept, n=8, size=backend.default_size, seed=seed)
    embedding = create_embedding(backend, NAME, init_text, vectors)
    curve.scores += score_curve(backend, concept, [(0, vectors_for_backend(embedding, backend))], samples=samples)

    def on_save(path: Path) -> None:
        if path.parent.name == "embeddings":  # the numbered snapshots, not the final file
            snapshot = load_embedding(path)
            scored = score_curve(
                backend, concept, [(snapshot.step, vectors_for_backend(snapshot, backend))], samples=samples
            )
            curve.scores += scored
            log(f"{concept} seed {seed}: step {scored[0][0]} score {scored[0][1]:.0%}")

    config = recipe_config(
        data, seed, work, steps=steps, every=every, learn_rate=learn_rate, init_text=init_text, vectors=vectors,
        template=template, batch_size=batch_size, grad_accumulation=grad_accumulation, side=backend.default_size,
    )  # fmt: skip
    result = train(config, backend, embedding=embedding,
                   callbacks=TrainCallbacks(on_save=on_save, on_validation=lambda s, v: curve.validation.append((s, v))))  # fmt: skip
    curve.validation = sorted(set(curve.validation) | set(result.validation))
    curve.scores.sort()
    curve.seconds = time.monotonic() - start
    return curve


def summary_table(curves: list[Curve]) -> str:
    """A plain-text table: one row per run, the score at each scored step and the steps to the target."""
    steps = sorted({s for c in curves for s, _ in c.scores})
    head = f"{'concept':<16}{'seed':>5} " + "".join(f"{s:>6}" for s in steps) + f"  {'mean':>5}  steps to {TARGET:.0%}"
    lines = [head]
    for c in curves:
        by_step = dict(c.scores)
        cells = "".join(f"{by_step[s]:>6.0%}" if s in by_step else f"{'':>6}" for s in steps)
        mean = f"{c.mean_score:>5.0%}" if c.mean_score is not None else f"{'':>5}"
        reached = c.steps_to_target if c.steps_to_target is not None else "not reached"
        lines.append(f"{c.concept:<16}{c.seed:>5} {cells}  {mean}  {reached}")
    return "\n".join(lines)


HELP = "score textual inversion of held-out concepts on tiny-shapes against steps (ours, or another trainer's files)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The quality benchmark's options (shared by ``python -m extension quality`` and this module)."""
    a = parser.add_argument
    a(
        "--concepts",
        default=",".join(f"{c} {s}" for c, s in HELD_OUT),
        help="held-out concepts, comma-separated (default: all four)",
    )
    a("--seeds", default="0,1", help="data and training seeds, comma-separated (default: 0,1)")
    a("--steps", type=int, default=100, help="optimizer steps per run (default: 100)")
    a("--every", type=int, default=20, help="score a snapshot every N steps (default: 20)")
    a("--samples", type=int, default=16, help="judged previews per snapshot (default: 16)")
    a("--learn-rate", default="0.02:40, 0.01", help="learning-rate schedule (default: '0.02:40, 0.01')")
    a("--init-text", default="cat", help="the embedding's initial words (default: cat)")
    a("--vectors", type=int, default=2, help="vectors per token (default: 2)")
    a(
        "--template",
        default="subject_filewords",
        help="a template name or a file of prompts (default: subject_filewords)",
    )
    a("--batch-size", type=int, default=2, help="pictures per micro-batch (default: 2)")
    a("--grad-accumulation", type=int, default=2, help="micro-batches per optimizer step (default: 2)")
    a(
        "--score",
        type=Path,
        default=None,
        metavar="FOLDER",
        help="do not train: score the embedding snapshots in FOLDER (another trainer's) as the first of --concepts",
    )
    a(
        "--data",
        type=Path,
        default=None,
        metavar="FOLDER",
        help="with --score: the pictures those snapshots were trained on, for their validation loss (the same "
        "validation set as our run with the first of --seeds, --template and --batch-size)",
    )
    a("--json", type=Path, default=None, help="also write every curve to this JSON file")


def _train_all(backend, args: argparse.Namespace, concepts: list[str]) -> list[Curve]:
    curves = []
    for concept in concepts:
        for seed in [int(s) for s in args.seeds.split(",")]:
            with tempfile.TemporaryDirectory(prefix="ti-quality-") as work:
                curves.append(run_ours(backend, concept, seed, steps=args.steps, every=args.every,
                                       samples=args.samples, learn_rate=args.learn_rate, work=Path(work),
                                       init_text=args.init_text, vectors=args.vectors, template=args.template,
                                       batch_size=args.batch_size, grad_accumulation=args.grad_accumulation,
                                       log=lambda m: print(m, file=sys.stderr)))  # fmt: skip
    return curves


def _input_problems(args: argparse.Namespace, concepts: list[str]) -> list[str]:
    from .draw import parse_concept

    problems = []
    for concept in concepts:
        try:
            parse_concept(concept)
        except ValueError as exc:
            problems.append(str(exc))
    if not concepts:
        problems.append("--concepts names no concept; e.g. --concepts 'cyan triangle'")
    if not re.fullmatch(r"\s*\d+\s*(,\s*\d+\s*)*", args.seeds):
        problems.append(f"--seeds {args.seeds!r} must be whole numbers separated by commas, e.g. 0,1")
    for option in ("steps", "every", "samples"):
        if getattr(args, option) < 1:
            problems.append(f"--{option} must be at least 1, got {getattr(args, option)}")
    if args.score is not None and not args.score.is_dir():
        problems.append(f"--score {args.score} is not a folder of embedding snapshots")
    if args.data is not None and (args.score is None or not args.data.is_dir()):
        problems.append(f"--data {args.data} must be a folder of pictures, given with --score")
    return problems


def _score_peer(backend, args: argparse.Namespace, concept: str) -> Curve:
    seed = int(args.seeds.split(",")[0])
    with tempfile.TemporaryDirectory(prefix="ti-quality-") as work:
        config = None if args.data is None else recipe_config(
            args.data, seed, Path(work), template=args.template, batch_size=args.batch_size, side=backend.default_size
        )  # fmt: skip
        return score_files(backend, concept, args.score, samples=args.samples, seed=seed, validation_config=config)


def _curve_json(curve: Curve) -> dict:
    return asdict(curve) | {"steps_to_target": curve.steps_to_target, "mean_score": curve.mean_score}


def run(args: argparse.Namespace) -> int:
    """Train and score (or only score ``--score``'s files); prints the table, returns the exit code."""
    concepts = [c.strip() for c in args.concepts.split(",") if c.strip()]
    problems = _input_problems(args, concepts)
    if problems:
        print("\n".join(f"error: {p}" for p in problems), file=sys.stderr)
        return 2
    import torch

    from ..backends.loading import load_backend

    torch.set_num_threads(1)
    backend = load_backend("tiny-shapes", device="cpu")
    if args.score is not None:
        from ..embedding import EmbeddingFormatError

        try:
            curves = [_score_peer(backend, args, concepts[0])]
        except (EmbeddingFormatError, ValueError) as exc:  # an unreadable snapshot, pictures that do not fit
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if not curves[0].scores:
            print(f"error: {args.score} holds no embedding snapshot with a step (name-<step>.pt, "
                  "learned_embeds-steps-<step>.safetensors...)", file=sys.stderr)  # fmt: skip
            return 2
    else:
        from ..training.config import ConfigError

        try:
            curves = _train_all(backend, args, concepts)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(summary_table(curves))
    if args.json:
        from ..training.outputs import atomic_write

        text = json.dumps([_curve_json(c) for c in curves], indent=1)
        try:
            atomic_write(args.json, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
        except OSError as exc:
            print(f"error: cannot write {args.json}: {exc.strerror or exc}; choose another --json file", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
