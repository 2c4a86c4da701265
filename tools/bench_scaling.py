"""Data-parallel scaling on the CPU: N processes x 1 thread against 1 process x N threads.

Usage: python tools/bench_scaling.py [--model tiny-sd1] [--procs 2] [--steps 40] [--rounds 2]

Both configurations train the same embedding with the same global batch (procs x batch 2), one
after the other, ``rounds`` times alternating; the figure is the median wall time per step of the
training part: each configuration runs ``steps`` and ``2 * steps`` steps, and the difference of the
two wall times over ``steps`` is the time per step without start-up, model loading and latent
caching. Prints samples/s of each and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], threads: int) -> float:
    """Wall seconds of one whole run."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        sys.exit(f"run failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-sd1")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        subprocess.run(
            [sys.executable, "-c", f"from extension.training.demo_data import make_demo_dataset as m; "
             f"m({str(tmp / 'imgs')!r}, n=8, size={args.size}, seed=1)"],
            check=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        common = [
            "-m", "extension", "train", "--model", args.model, "--data", str(tmp / "imgs"), "--name", "s",
            "--width", str(args.size), "--height", str(args.size), "--template", "subject",
            "--save-every", "0", "--no-progress-bar", "--no-tensorboard",
        ]  # fmt: skip
        results: dict[str, list[float]] = {"parallel": [], "threads": []}
        for r in range(args.rounds):
            for kind in ("parallel", "threads"):
                if kind == "parallel":
                    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.procs),
                           *common, "--batch-size", "2"]  # fmt: skip
                    threads = 1
                else:
                    cmd = [sys.executable, *common, "--batch-size", str(2 * args.procs)]
                    threads = args.procs
                walls = []
                for steps in (args.steps, 2 * args.steps):
                    out = tmp / f"{kind}{r}-{steps}"
                    walls.append(_run([*cmd, "--max-steps", str(steps), "--embeddings-dir", str(out / "e"),
                                       "--log-dir", str(out / "l")], threads))  # fmt: skip
                results[kind].append((walls[1] - walls[0]) / args.steps)
    batch = 2 * args.procs
    par, thr = statistics.median(results["parallel"]), statistics.median(results["threads"])
    print(f"model {args.model}, {args.size}px, global batch {batch}, {args.steps} steps, {args.rounds} rounds")
    print(f"  {args.procs} processes x 1 thread : {par * 1000:8.1f} ms/step  {batch / par:7.1f} samples/s")
    print(f"  1 process x {args.procs} threads   : {thr * 1000:8.1f} ms/step  {batch / thr:7.1f} samples/s")
    print(f"  speed-up of processes over threads: {thr / par:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
