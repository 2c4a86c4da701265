"""One training process of a data-parallel run, for tests/test_distributed.py.

Usage: python distributed_worker.py RANK WORLD INIT_FILE CONFIG_JSON [--stop-after N] [--fail-at N]

Joins a gloo group through a shared file, then trains the tiny SD1 model with ``World(RANK, WORLD)``.
``--stop-after N`` makes only this rank ask to stop once N steps are done; ``--fail-at N`` makes
only this rank's denoiser raise in step N.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from extension.backends.tiny import build_tiny_backend
from extension.training.config import TrainConfig
from extension.training.distributed import World, destroy_process_group, init_process_group
from extension.training.loop import TrainCallbacks, train


class FailingDenoiser:
    """The tiny backend whose denoiser raises from its ``fail_at``-th training call on."""

    def __init__(self, inner, fail_at: int):
        self._inner, self._left = inner, fail_at

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def denoise(self, x_t, timesteps, cond):
        if torch.is_grad_enabled():
            self._left -= 1
            if self._left <= 0:
                raise RuntimeError("simulated failure in this process")
        return self._inner.denoise(x_t, timesteps, cond)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("rank", type=int)
    parser.add_argument("world", type=int)
    parser.add_argument("init_file")
    parser.add_argument("config")
    parser.add_argument("--stop-after", type=int, default=0)
    parser.add_argument("--fail-at", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = World(args.rank, args.world)
    init_process_group(world, torch.device("cpu"), init_method=f"file://{args.init_file}")
    backend = build_tiny_backend("sd1")
    if args.fail_at:
        backend = FailingDenoiser(backend, args.fail_at)
    done: list[int] = []
    should_stop = (lambda: bool(done) and done[-1] >= args.stop_after) if args.stop_after else None
    try:
        result = train(
            TrainConfig(**json.loads(args.config)), backend, world=world, should_stop=should_stop,
            callbacks=TrainCallbacks(on_step=lambda step, *_: done.append(step)),
        )  # fmt: skip
        print(json.dumps({"rank": args.rank, "steps": result.steps_done, "reason": result.reason}))
        return 0
    except Exception as exc:
        print(f"rank {args.rank} failed: {exc}", file=sys.stderr)
        return 1
    finally:
        destroy_process_group(world)


if __name__ == "__main__":
    sys.exit(main())
