"""The job runner: a real training run on the tiny SD1 model in a background thread; the host's
interrupt saves the state, resume continues it, a second job is refused while one runs."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from extension.embedding import load_embedding
from extension.training.config import ConfigError
from extension.training.outputs import resume_state_path
from extension.ui.adapter import HostAdapter, JobHooks, StandaloneAdapter
from extension.ui.jobs import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    JobBusyError,
    JobRunner,
    JobStatus,
    format_seconds,
)
from extension.ui.service import TrainerService

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backend():
    from extension.backends.tiny import build_tiny_backend

    return build_tiny_backend("sd1")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from extension.training.demo_data import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("data"), n=4, size=64)


class StopAtStep:
    """Job hooks of a host whose own Interrupt button is pressed once ``stop_at`` is reached."""

    def __init__(self, stop_at: int):
        self.stop_at = stop_at
        self.progress_calls: list[tuple[int, int]] = []
        self.previews = 0

    def progress(self, step: int, total: int, text: str) -> None:
        self.progress_calls.append((step, total))

    def preview(self, image) -> None:
        self.previews += 1

    def interrupted(self) -> bool:
        return bool(self.progress_calls) and self.progress_calls[-1][0] >= self.stop_at


class HostLikeAdapter(StandaloneAdapter):
    """The standalone adapter with a host's job hooks (its interrupt flag and progress)."""

    def __init__(self, hooks: StopAtStep, **kwargs):
        super().__init__(**kwargs)
        self.hooks = hooks
        self.jobs: list[tuple[str, str | None]] = []

    @contextlib.contextmanager
    def hosted_job(self, title: str, task_id: str | None = None):
        self.jobs.append((title, task_id))
        yield self.hooks


def options(data: Path, **extra) -> dict:
    return {"name": "cat", "data": str(data), "width": 64, "height": 64, "max_steps": 5, **extra}


def test_adapters_satisfy_the_protocols(tmp_path: Path) -> None:
    adapter = StandaloneAdapter(embeddings_dir=tmp_path / "e", log_dir=tmp_path / "l")
    assert isinstance(adapter, HostAdapter)
    with adapter.hosted_job("x") as hooks:
        assert isinstance(hooks, JobHooks)
        assert hooks.interrupted() is False


def test_host_interrupt_saves_and_resume_continues(tmp_path: Path, backend, data: Path) -> None:
    hooks = StopAtStep(2)
    adapter = HostLikeAdapter(
        hooks, backend=backend, embeddings_dir=tmp_path / "emb", log_dir=tmp_path / "logs"
    )
    service = TrainerService(adapter)
    service.create("cat", "cat", 2)
    job = service.start_training(options(data, preview_every=2, preview_steps=2), task_id="task(abc)")
    st = service.runner.wait(120)
    assert st.job_id == job and adapter.jobs == [("Train embedding cat", "task(abc)")]
    assert st.state == INTERRUPTED and st.reason == "interrupted", st.summary()
    assert st.step == 2
    saved = tmp_path / "emb" / "cat.safetensors"
    assert load_embedding(saved).step == 2
    assert resume_state_path(saved).is_file()
    assert str(saved) in st.files and any(f.endswith("loss.csv") for f in st.files)
    assert st.last_preview and Path(st.last_preview).is_file() and hooks.previews == 1
    assert adapter.registered[-1] == saved
    assert [r.step for r in service.runner.history() if r.loss is not None] == [1, 2]

    assert st.headline() == "cat: interrupted at step 2"
    run_dir = st.run_dir
    assert run_dir and Path(st.last_preview).parent.parent == Path(run_dir)
    first_preview = st.last_preview

    hooks.stop_at = 10**9
    service.resume_training()
    st = service.runner.wait(120)
    assert st.state == FINISHED and st.reason == "completed", st.summary()
    assert st.headline() == "cat: finished"
    assert st.step == 5 and load_embedding(saved).step == 5
    # the run goes on in view: the preview of the interrupted part is still listed, with the new one
    assert st.previews[0] == first_preview and len(st.previews) == 2 and st.run_dir == run_dir
    assert any("saved optimizer state" in m for m in st.messages), st.messages
    # the history of the interrupted run is kept and continued
    assert [r.step for r in service.runner.history() if r.loss is not None] == [1, 2, 3, 4, 5]
    assert hooks.progress_calls[-1] == (5, 5)

    before = (list(st.previews), list(st.files))

    # a resume with nothing left to do keeps the finished run's previews and files in view
    service.resume_training(max_steps=5)
    st = service.runner.wait(120)
    assert st.reason == "already_done", st.summary()
    assert st.headline() == "cat: nothing to do: already trained for 5 steps"
    assert (st.previews, st.files) == before


def test_runner_interrupt_and_busy(tmp_path: Path, backend, data: Path) -> None:
    adapter = StandaloneAdapter(backend=backend, embeddings_dir=tmp_path / "emb", log_dir=tmp_path / "logs")
    service = TrainerService(adapter)
    service.create("cat", "cat", 1)
    runner: JobRunner = service.runner
    config = service.train_config(options(data, max_steps=8))
    runner.start(config)
    with pytest.raises(JobBusyError, match="is running"):
        runner.start(config)
    assert runner.interrupt() is True
    st = runner.wait(120)
    assert st.state == INTERRUPTED
    assert st.step < 8
    assert runner.interrupt() is False  # nothing runs any more


def test_bad_options_fail_before_the_thread_starts(tmp_path: Path, backend) -> None:
    adapter = StandaloneAdapter(backend=backend, embeddings_dir=tmp_path / "emb", log_dir=tmp_path / "logs")
    runner = JobRunner(adapter)
    from extension.training.config import TrainConfig

    with pytest.raises(ConfigError, match="dataset folder"):
        runner.start(
            TrainConfig(name="x", data=str(tmp_path / "missing"), embeddings_dir=str(tmp_path / "emb"))
        )
    assert runner.status().state == "idle" and not (tmp_path / "emb").exists()


def test_errors_inside_the_job_become_a_failed_status(tmp_path: Path, backend, data: Path) -> None:
    # an SD1-sized embedding (768 wide) does not fit the tiny model: only the model check finds it
    import torch

    from extension.embedding import Embedding, save_embedding

    save_embedding(Embedding("big", torch.zeros(2, 768)), tmp_path / "emb" / "big.safetensors")
    adapter = StandaloneAdapter(backend=backend, embeddings_dir=tmp_path / "emb", log_dir=tmp_path / "logs")
    service = TrainerService(adapter)
    service.start_training(options(data, name="big"))
    st = service.runner.wait(120)
    assert st.state == FAILED and st.error and "width" in st.error, st.summary()
    assert "Error:" in st.summary()
    assert not (tmp_path / "logs").exists()  # nothing was written


def test_status_says_each_outcome_once() -> None:
    def headline(**kw) -> str:
        return JobStatus(job_id="j", name="cat", step=7, max_steps=10, **kw).headline()

    assert headline(state="running") == "cat: running"
    assert headline(state=FINISHED, reason="completed") == "cat: finished"
    assert headline(state=INTERRUPTED, reason="interrupted") == "cat: interrupted at step 7"
    assert headline(state=FINISHED, reason="schedule_ended") == (
        "cat: finished: the learning rate schedule ended at step 7"
    )
    assert headline(state=FAILED, reason="nan") == "cat: stopped at step 7: the loss was not finite"
    assert headline(state=FAILED) == "cat: failed"
    for reason in ("completed", "interrupted"):
        assert f"({reason})" not in JobStatus(name="cat", state=FINISHED, reason=reason).summary()


def test_status_summary_and_time_format() -> None:
    assert JobStatus().summary() == "No training has run yet."
    st = JobStatus(
        job_id="j", state="running", name="cat", step=3, max_steps=10, loss=0.5, lr=0.005, eta_seconds=75
    )
    text = st.summary()
    assert "step 3 / 10" in text and "loss 0.50000" in text and "1m 15s left" in text
    assert st.to_dict()["active"] is True
    assert format_seconds(3725) == "1h 02m" and format_seconds(9.4) == "9s"
