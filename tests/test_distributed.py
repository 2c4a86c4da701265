"""Data-parallel training: N gloo processes with batch b train exactly like one process with batch N*b."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from extension.backends.tiny import build_tiny_backend
from extension.embedding import load_embedding
from extension.training.config import TrainConfig
from extension.training.demo_data import make_demo_dataset
from extension.training.distributed import World, world_from_env
from extension.training.loop import train
from extension.training.loss import MicroBatch

WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("ddp") / "imgs", n=6, size=32, seed=4)


def options(tmp: Path, data: Path, **changes) -> dict:
    base = dict(
        name="dp", data=str(data), width=32, height=32, template="subject", init_text="cat", vectors=2,
        log_dir=str(tmp / "logs"), embeddings_dir=str(tmp / "emb"), learn_rate="0.02:3, 0.005",
        max_steps=5, batch_size=2, grad_accumulation=2, clip_grad="norm", clip_grad_value="0.05",
        latent_sampling="random", flip_probability=0.5, save_every=0, progress_bar=False, tensorboard=False,
    )  # fmt: skip
    base.update(changes)
    return base


def launch(tmp: Path, opts: dict, world: int = 2, extra: dict[int, list[str]] | None = None, timeout=150):
    """Run ``world`` worker processes to the end; their (returncode, stdout, stderr) by rank."""
    tmp.mkdir(parents=True, exist_ok=True)
    init = tmp / f"init-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(rank), str(world), str(init), json.dumps(opts), *(extra or {}).get(rank, [])],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for rank in range(world)
    ]
    try:
        outputs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:  # never leave a process behind, whatever happened
            if p.poll() is None:
                p.kill()
    return [(p.returncode, *out) for p, out in zip(procs, outputs)]


def single_process(tmp: Path, opts: dict) -> torch.Tensor:
    result = train(TrainConfig(**opts), build_tiny_backend("sd1"))
    return load_embedding(result.embedding_path).vectors


def vectors(tmp: Path) -> torch.Tensor:
    return load_embedding(tmp / "emb" / "dp.safetensors").vectors


def test_world_from_env():
    assert world_from_env({}) == World()
    assert world_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == World(3, 4, 1)


def test_share_takes_this_ranks_rows():
    batch = MicroBatch([f"p{i}" for i in range(4)], torch.arange(4.0).view(4, 1, 1, 1), torch.zeros(4, 1, 1, 1),
                       torch.arange(4))  # fmt: skip
    rows = [World(r, 2).share(batch) for r in range(2)]
    assert [r.prompts for r in rows] == [["p0", "p1"], ["p2", "p3"]]
    assert rows[1].timesteps.tolist() == [2, 3] and rows[1].latents.flatten().tolist() == [2.0, 3.0]
    with pytest.raises(ValueError, match="does not split"):
        World(0, 3).share(batch)


def test_two_processes_equal_one_process_with_the_global_batch(tmp_path, data_dir):
    ranks = launch(tmp_path / "two", options(tmp_path / "two", data_dir))
    assert all(code == 0 for code, _, _ in ranks), ranks
    one = single_process(tmp_path / "one", options(tmp_path / "one", data_dir, batch_size=4))
    torch.testing.assert_close(vectors(tmp_path / "two"), one, rtol=0, atol=1e-5)
    # only rank 0 wrote: one run folder, one embedding
    assert [p.name for p in (tmp_path / "two" / "emb").iterdir() if p.suffix == ".safetensors"] == ["dp.safetensors"]


def test_stop_on_one_rank_stops_both_after_the_same_step_and_resume_is_exact(tmp_path, data_dir):
    two = tmp_path / "two"
    ranks = launch(two, options(two, data_dir, max_steps=6), extra={1: ["--stop-after", "2"]})
    reports = [json.loads(out.strip().splitlines()[-1]) for code, out, _ in ranks if code == 0]
    assert len(reports) == 2 and {(r["steps"], r["reason"]) for r in reports} == {(2, "interrupted")}
    assert load_embedding(two / "emb" / "dp.safetensors").step == 2
    # resume with ONE process and the same global batch: the state is the same
    resumed = train(TrainConfig(**options(two, data_dir, max_steps=6, batch_size=4, resume=True)), build_tiny_backend("sd1"))
    assert resumed.steps_done == 6
    straight = single_process(tmp_path / "one", options(tmp_path / "one", data_dir, max_steps=6, batch_size=4))
    torch.testing.assert_close(load_embedding(resumed.embedding_path).vectors, straight, rtol=0, atol=1e-5)


def test_a_failing_rank_brings_the_other_down_with_its_message(tmp_path, data_dir):
    ranks = launch(tmp_path, options(tmp_path, data_dir, max_steps=6), extra={1: ["--fail-at", "5"]}, timeout=120)
    (code0, _, _err0), (code1, _, err1) = ranks
    assert code1 == 1 and "simulated failure" in err1
    assert code0 == 1  # not left hanging: the collective fails when the other process is gone
    # rank 0 kept what was trained before the failure (steps 1-2: calls 5-6 are step 3)
    assert load_embedding(tmp_path / "emb" / "dp.safetensors").step == 2


def test_torchrun_cli_sigterm_saves_once(tmp_path, data_dir):
    opts = options(tmp_path, data_dir, max_steps=400)
    args = [f"--{k.replace('_', '-')}={v}" for k, v in opts.items() if not isinstance(v, bool)]
    args += ["--no-progress-bar", "--no-tensorboard"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "extension", "train",
         "--model", "tiny-sd1", *args],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    csv = None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        csvs = list((tmp_path / "logs").rglob("loss.csv"))
        if csvs and len(csvs[0].read_text().splitlines()) > 3:  # a few steps done
            csv = csvs[0]
            break
        time.sleep(0.2)
    assert csv is not None, proc.communicate()[0]
    workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    os.kill(int(workers[-1]), signal.SIGTERM)  # one worker only
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "Traceback" not in out, out
    saved = load_embedding(tmp_path / "emb" / "dp.safetensors")
    assert 3 <= saved.step < 400 and f"interrupted after {saved.step} steps" in out
    assert (tmp_path / "emb" / "dp.resume").is_file()
