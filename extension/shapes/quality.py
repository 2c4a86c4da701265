"""The quality benchmark: how fast textual inversion finds held-out concepts on tiny-shapes.

For every held-out concept x seed, the real trainer (:func:`..training.loop.train`) runs the
demo's recipe (8 drawn pictures, the unrelated init word "cat", 2 vectors, learning rate
"0.02:40, 0.01", batch 2 x accumulation 2, subject_filewords); every ``every`` steps the snapshot is scored (judged share of ``samples``
seeded previews of "a photo of <name>") and the validation loss recorded. Reported: both against
steps, and the first step at which the score reaches :data:`TARGET`.

``python -m extension.shapes.quality [--steps 100] [--every 20] [--seeds 0,1] [--json FILE]``.
The same curves can be measured for another trainer's embeddings with :func:`score_curve`.
"""

from __future__ import annotations

import argparse
import json
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


def score_curve(
    backend, concept: str, snapshots: list[tuple[int, dict]], *, samples: int = 8, seed: int = 0
) -> list[tuple[int, float]]:
    """Score ``(step, {encoder key: vectors})`` snapshots of an embedding of ``concept`` (any trainer's)."""
    from .score import score_embedding

    return [
        (step, score_embedding(backend, f"a photo of {NAME}", {NAME: vectors}, concept, samples=samples, seed=seed).value)
        for step, vectors in snapshots
    ]


def run_ours(
    backend, concept: str, seed: int, *, steps: int, every: int, samples: int, learn_rate: str, work: Path,
    init_text: str = "cat", vectors: int = 2, log: Callable[[str], None] = lambda m: None,
) -> Curve:  # fmt: skip
    """Train ``concept`` with our trainer and score every ``every`` steps (step 0 included)."""
    from ..embedding import load_embedding
    from ..training.config import TrainConfig
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
            scored = score_curve(backend, concept, [(snapshot.step, vectors_for_backend(snapshot, backend))], samples=samples)
            curve.scores += scored
            log(f"{concept} seed {seed}: step {scored[0][0]} score {scored[0][1]:.0%}")

    config = TrainConfig(
        name=NAME, model="tiny-shapes", init_text=init_text, vectors=vectors, data=str(data),
        width=backend.default_size, height=backend.default_size, template="subject_filewords",
        log_dir=str(work / "logs"), embeddings_dir=str(work / "final"), learn_rate=learn_rate,
        max_steps=steps, batch_size=2, grad_accumulation=2, save_every=every, preview_every=0,
        validation_every=every, validation_images=4, seed=seed, progress_bar=False, tensorboard=False,
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
    head = f"{'concept':<16}{'seed':>5} " + "".join(f"{s:>6}" for s in steps) + f"  steps to {TARGET:.0%}"
    lines = [head]
    for c in curves:
        by_step = dict(c.scores)
        cells = "".join(f"{by_step[s]:>6.0%}" if s in by_step else f"{'':>6}" for s in steps)
        lines.append(f"{c.concept:<16}{c.seed:>5} {cells}  {c.steps_to_target if c.steps_to_target is not None else 'not reached'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Score textual inversion of held-out concepts on tiny-shapes.")
    parser.add_argument("--concepts", default=",".join(f"{c} {s}" for c, s in HELD_OUT))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--learn-rate", default="0.02:40, 0.01")
    parser.add_argument("--init-text", default="cat")
    parser.add_argument("--vectors", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="write every curve here")
    args = parser.parse_args(argv)
    import torch

    from ..backends.loading import load_backend

    torch.set_num_threads(1)
    backend = load_backend("tiny-shapes", device="cpu")
    curves = []
    for concept in [c.strip() for c in args.concepts.split(",") if c.strip()]:
        for seed in [int(s) for s in args.seeds.split(",")]:
            with tempfile.TemporaryDirectory(prefix="ti-quality-") as work:
                curves.append(run_ours(backend, concept, seed, steps=args.steps, every=args.every,
                                       samples=args.samples, learn_rate=args.learn_rate, work=Path(work),
                                       init_text=args.init_text, vectors=args.vectors,
                                       log=lambda m: print(m, file=sys.stderr)))  # fmt: skip
    print(summary_table(curves))
    if args.json:
        args.json.write_text(json.dumps([asdict(c) | {"steps_to_target": c.steps_to_target} for c in curves], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
