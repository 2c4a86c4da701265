"""``kill`` / ``docker stop`` (SIGTERM) and a closed terminal (SIGHUP) save a training run like
Ctrl-C: a real ``python -m extension train`` process is signalled after its first steps."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from extension.embedding import load_embedding
from extension.training.demo_data import make_demo_dataset
from extension.training.outputs import resume_state_path

ROOT = Path(__file__).resolve().parents[1]
STEPS = 100_000  # far more than the test waits for


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("sigdata") / "imgs", n=3, size=32, seed=2)


def train_command(tmp_path: Path, data: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "extension", "train", "--data", str(data), "--name", "sig", "--model", "tiny-sd1",
        "--width", "32", "--height", "32", "--template", "subject", "--save-every", "0", "--no-tensorboard",
        "--log-dir", str(tmp_path / "logs"), "--embeddings-dir", str(tmp_path / "emb"), *extra,
    ]  # fmt: skip


class Stderr:
    """Collects a process's stderr on a thread, so the test can wait for a pattern in it."""

    def __init__(self, proc: subprocess.Popen):
        self.text = ""
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        while chunk := proc.stderr.read1(4096):
            self.text += chunk.decode("utf-8", "replace")

    def wait_for(self, pattern: str, proc: subprocess.Popen, timeout: float = 240) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text)
            if found:
                return found
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        proc.kill()
        raise AssertionError(f"never saw {pattern!r}; stderr:\n{self.text[-3000:]}")

    def join(self) -> None:
        self._thread.join(30)


def run_until_signalled(tmp_path: Path, data: Path, sig: signal.Signals) -> tuple[int, str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        train_command(tmp_path, data, "--steps", str(STEPS)),
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    err = Stderr(proc)
    err.wait_for(rf"\b[1-9]\d*/{STEPS}\b", proc)  # the progress bar shows a finished step
    proc.send_signal(sig)
    proc.wait(timeout=240)  # stdout is a few lines: its pipe cannot fill up meanwhile
    out = proc.stdout.read()
    err.join()  # stderr is read by the thread alone (communicate() would race it for the output)
    return proc.returncode, out.decode(), err.text


@pytest.mark.parametrize("sig", [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s])
def test_stop_signal_saves_and_resumes_like_ctrl_c(tmp_path, data_dir, sig):
    code, out, err = run_until_signalled(tmp_path, data_dir, sig)
    assert code == 130, (code, err[-2000:])
    final = tmp_path / "emb" / "sig.safetensors"
    steps = load_embedding(final).step
    assert 1 <= steps < STEPS
    assert resume_state_path(final).is_file()
    assert f"interrupted after {steps} steps; continue with --resume" in out
    # the message names the signal and starts on a line of its own, not glued to the progress bar
    assert re.search(rf"(^|[\r\n])interrupted \({sig.name}\); saving the current state", err), err[-2000:]
    assert "Traceback" not in err

    # --resume continues from the saved step with the saved optimizer state
    done = subprocess.run(
        train_command(tmp_path, data_dir, "--steps", str(steps + 2), "--resume", "--no-progress-bar"),
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"continuing from step {steps} with the saved optimizer state" in done.stderr
    assert load_embedding(final).step == steps + 2


def test_handlers_are_restored_after_the_command(tmp_path, data_dir):
    from extension.cli import main

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    args = train_command(tmp_path, data_dir, "--steps", "1", "--no-progress-bar")[3:]
    assert main(args) == 0
    assert {s: signal.getsignal(s) for s in before} == before
