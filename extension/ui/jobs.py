"""One training job at a time, on a background thread, with a status snapshot for polling.

The tab's timer and the API's ``GET status`` read :meth:`JobRunner.status`; Interrupt sets a flag
the trainer checks between micro-batches (it then saves the current state); Resume starts the last
job again with ``resume=True``, continuing from that saved state.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..training.config import ConfigError, TrainConfig
from ..training.logging import LogRow
from .adapter import HostAdapter

TrainFn = Callable[..., object]  # loop.train's signature

IDLE, PREPARING, RUNNING, STOPPING = "idle", "preparing", "running", "stopping"
FINISHED, INTERRUPTED, FAILED = "finished", "interrupted", "failed"
ACTIVE_STATES = (PREPARING, RUNNING, STOPPING)


class JobBusyError(RuntimeError):
    """A job is already running: only one at a time (the model is shared)."""


class NothingToResumeError(RuntimeError):
    """Resume was asked for but no earlier job exists in this session."""


@dataclass
class JobStatus:
    """A snapshot of the current (or last) job."""

    job_id: str | None = None
    state: str = IDLE
    name: str = ""
    step: int = 0
    start_step: int = 0
    max_steps: int = 0
    loss: float | None = None
    val_loss: float | None = None
    lr: float | None = None
    eta_seconds: float | None = None
    elapsed_seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    previews: list[str] = field(default_factory=list)
    last_preview: str | None = None
    embedding_path: str | None = None
    messages: list[str] = field(default_factory=list)
    error: str | None = None
    reason: str | None = None  # the trainer's: completed, interrupted, schedule_ended, nan, already_done
    run_dir: str | None = None  # the run's folder under the log dir, once it wrote something there

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def to_dict(self) -> dict[str, object]:
        d = dataclasses.asdict(self)
        d["active"] = self.active
        return d

    def headline(self) -> str:
        """``cat: running``, ``cat: finished``, ``cat: interrupted at step 12``... said once."""
        if self.state == IDLE:
            return "No training has run yet."
        if self.active or (self.state == FAILED and not self.reason):
            return f"{self.name}: {self.state}"
        outcome = {
            "completed": "finished",
            "schedule_ended": f"finished: the learning rate schedule ended at step {self.step}",
            "interrupted": f"interrupted at step {self.step}",
            "nan": f"stopped at step {self.step}: the loss was not finite",
            "already_done": f"nothing to do: already trained for {self.step} steps",
        }.get(self.reason or "", self.state)
        return f"{self.name}: {outcome}"

    def figures(self) -> str:
        """``loss 0.12345, validation loss 0.1, LR 0.005``, or an empty string."""
        parts = []
        if self.loss is not None:
            parts.append(f"loss {self.loss:.5f}")
        if self.val_loss is not None:
            parts.append(f"validation loss {self.val_loss:.5f}")
        if self.lr is not None:
            parts.append(f"LR {self.lr:.3g}")
        return ", ".join(parts)

    def timing(self) -> str:
        """``elapsed 1m 05s, about 3m 10s left``."""
        text = f"elapsed {format_seconds(self.elapsed_seconds)}"
        if self.active and self.eta_seconds is not None:
            text += f", about {format_seconds(self.eta_seconds)} left"
        return text

    def summary(self) -> str:
        """A few lines of plain text: headline, step, figures, timing, error, recent messages."""
        if self.state == IDLE:
            return self.headline()
        lines = [self.headline()]
        if self.max_steps:
            lines.append(f"step {self.step} / {self.max_steps}")
        if self.figures():
            lines.append(self.figures())
        lines.append(self.timing())
        if self.error:
            lines.append(f"Error: {self.error}")
        lines += self.messages[-5:]
        return "\n".join(lines)


def step_of(path: str | Path) -> int | None:
    """The step of a numbered run file ``<name>-<step>.<ext>``, else None."""
    m = re.search(r"-(\d+)$", Path(path).stem)
    return int(m.group(1)) if m else None


def run_folder_of(path: Path, log_dir: Path) -> str | None:
    """The run folder ``<log dir>/<date>/<run>`` that ``path`` lies in, else None."""
    try:
        parts = path.resolve().relative_to(log_dir.resolve()).parts
    except (ValueError, OSError):
        return None
    return str(log_dir / parts[0] / parts[1]) if len(parts) > 2 else None


def format_seconds(seconds: float) -> str:
    """``1h 02m``, ``3m 05s`` or ``12s``."""
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


class JobRunner:
    """Runs ``train(config, backend, callbacks=..., should_stop=...)`` on a background thread.

    ``train_fn`` defaults to :func:`training.loop.train` (tests may pass another with its
    signature). Within the thread the whole run happens inside ``adapter.hosted_job``.
    """

    def __init__(self, adapter: HostAdapter, *, train_fn: TrainFn | None = None):
        self.adapter = adapter
        self._train_fn = train_fn
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._status = JobStatus()
        self._history: list[LogRow] = []
        self._config: TrainConfig | None = None
        self._started_at = 0.0

    # ------------------------------------------------------------------ control

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._status.active

    def start(self, config: TrainConfig, *, task_id: str | None = None) -> str:
        """Check ``config`` (without the model) and start the job; returns its id.

        Raises JobBusyError while another job runs and ConfigError for bad options.
        """
        config.validate()
        with self._lock:
            if self._status.active:
                raise JobBusyError(
                    f"training {self._status.name!r} is running (step {self._status.step}); "
                    "interrupt it or wait until it ends"
                )
            keep = config.resume or bool(config.embedding_file)
            continues = keep and self._config is not None and self._config.name == config.name
            if not continues:
                self._history = []
            job_id = uuid.uuid4().hex[:12]
            earlier = self._status
            self._status = JobStatus(
                job_id=job_id, state=PREPARING, name=config.name, max_steps=config.max_steps
            )
            if continues:  # the run goes on: its previews and files stay in view
                self._status.previews = list(earlier.previews)
                self._status.files = list(earlier.files)
                self._status.last_preview = earlier.last_preview
                self._status.run_dir = earlier.run_dir
            self._config = config
            self._stop.clear()
            self._started_at = time.monotonic()
            self._thread = threading.Thread(
                target=self._run, args=(config, task_id), name=f"ti_trainer_job_{job_id}", daemon=True
            )
            self._thread.start()
        return job_id

    def resume(self, *, task_id: str | None = None, max_steps: int | None = None) -> str:
        """Start the last job again, continuing from its saved state (optionally to more steps)."""
        with self._lock:
            last = self._config
        if last is None:
            raise NothingToResumeError(
                "nothing to resume in this session; pick the embedding and press Train"
            )
        changes: dict[str, object] = {"resume": True, "embedding_file": "", "overwrite": False}
        if max_steps is not None:
            changes["max_steps"] = int(max_steps)
        return self.start(dataclasses.replace(last, **changes), task_id=task_id)

    def interrupt(self) -> bool:
        """Ask the running job to stop (it saves first). False when nothing is running."""
        with self._lock:
            if not self._status.active:
                return False
            self._stop.set()
            self._status.state = STOPPING
            return True

    def wait(self, timeout: float | None = None) -> JobStatus:
        """Wait for the current job's thread to end (or ``timeout``); returns the status."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.status()

    # ------------------------------------------------------------------ reading

    def status(self) -> JobStatus:
        """A copy of the current status (safe to read while the job runs)."""
        with self._lock:
            snap = dataclasses.replace(
                self._status,
                files=list(self._status.files),
                previews=list(self._status.previews),
                messages=list(self._status.messages),
            )
            if snap.active:
                snap.elapsed_seconds = time.monotonic() - self._started_at
        return snap

    def history(self) -> list[LogRow]:
        """The logged steps of the current run (and, after a resume, the run it continues)."""
        with self._lock:
            return list(self._history)

    def last_config(self) -> TrainConfig | None:
        with self._lock:
            return self._config

    # ------------------------------------------------------------------ the thread

    def _train(self) -> TrainFn:
        if self._train_fn is None:
            from ..training.loop import train

            self._train_fn = train
        return self._train_fn

    def _update(self, **changes) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self._status, key, value)

    def _add_file(self, path: Path) -> None:
        with self._lock:
            if str(path) not in self._status.files:
                self._status.files.append(str(path))
            if self._status.run_dir is None and self._config is not None:
                self._status.run_dir = run_folder_of(Path(path), Path(self._config.log_dir))

    def _drop_after(self, step: int) -> None:
        """Forget the history and previews after ``step`` (a run continued from an earlier step
        replaces them). Called with the lock held."""
        self._history = [r for r in self._history if r.step <= step]
        kept = [p for p in self._status.previews if (step_of(p) or 0) <= step]
        if kept != self._status.previews:
            self._status.previews = kept
            self._status.last_preview = kept[-1] if kept else None

    def _run(self, config: TrainConfig, task_id: str | None) -> None:
        from ..training.loop import TrainCallbacks

        pending_val: dict[int, float] = {}
        hooks_ref: list = []

        def on_step(step: int, loss: float, lr: float, eta: float | None) -> None:
            val = pending_val.pop(step, None)
            with self._lock:
                if self._status.state == PREPARING:
                    self._status.state = RUNNING
                self._status.step, self._status.loss, self._status.lr, self._status.eta_seconds = (
                    step,
                    loss,
                    lr,
                    eta,
                )
                if self._history and self._history[-1].step >= step:  # continuing from an earlier step
                    self._drop_after(step - 1)
                self._history.append(LogRow(step, 0.0, loss, val, lr))
            if hooks_ref:
                hooks_ref[0].progress(step, config.max_steps, f"{config.name}: step {step}, loss {loss:.5f}")

        def on_validation(step: int, loss: float) -> None:
            with self._lock:
                self._status.val_loss = loss
                if self._status.state == PREPARING:  # the validation before the first step
                    self._drop_after(step - 1)
                    self._history.append(LogRow(step, 0.0, None, loss, None))
                    return
            pending_val[step] = loss

        def on_preview(path: Path) -> None:
            with self._lock:
                self._status.previews.append(str(path))
                self._status.last_preview = str(path)
            self._add_file(path)
            if hooks_ref:
                try:
                    from PIL import Image

                    with Image.open(path) as im:
                        hooks_ref[0].preview(im.copy())
                except OSError:
                    pass

        def on_message(message: str) -> None:
            with self._lock:
                self._status.messages.append(message)

        callbacks = TrainCallbacks(
            on_step=on_step,
            on_preview=on_preview,
            on_save=self._add_file,
            on_validation=on_validation,
            on_message=on_message,
        )
        try:
            with self.adapter.hosted_job(f"Train embedding {config.name}", task_id) as hooks:
                hooks_ref.append(hooks)
                backend = self.adapter.backend()

                def should_stop() -> bool:
                    return self._stop.is_set() or hooks.interrupted()

                result = self._train()(config, backend, callbacks=callbacks, should_stop=should_stop)
            self._finish(result)
        except ConfigError as exc:
            self._fail("; ".join(exc.problems))
        except ValueError as exc:  # DatasetError, EmbeddingFormatError...: bad input, clear message
            self._fail(str(exc))
        except OSError as exc:  # a full disk, a folder that cannot be written: what was trained is saved
            where = f" {exc.filename}" if exc.filename else ""
            self._fail(f"cannot write{where}: {exc.strerror or exc}")
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            self._fail(f"unexpected {type(exc).__name__}: {exc}")

    def _finish(self, result) -> None:
        path = getattr(result, "embedding_path", None)
        if path is not None:
            try:
                self.adapter.register_embedding(Path(path))
            except Exception as exc:  # the file is saved; only the host's registration failed
                self._update(error=f"saved {path} but could not register it: {exc}")
        reason = getattr(result, "reason", "completed")
        with self._lock:
            for f in getattr(result, "files", []):
                if str(f) not in self._status.files:
                    self._status.files.append(str(f))
            run_dir = getattr(result, "run_dir", None)
            if run_dir is not None:
                self._status.run_dir = str(run_dir)
            self._status.step = int(getattr(result, "steps_done", self._status.step))
            self._status.reason = reason
            self._status.embedding_path = str(path) if path is not None else None
            self._status.eta_seconds = None
            self._status.elapsed_seconds = time.monotonic() - self._started_at
            message = getattr(result, "message", "")
            if message:
                self._status.messages.append(message)
            self._status.state = INTERRUPTED if reason == "interrupted" else FINISHED
            if reason == "nan":
                self._status.state = FAILED
                self._status.error = message

    def _fail(self, error: str) -> None:
        with self._lock:
            self._status.state = FAILED
            self._status.error = error
            self._status.eta_seconds = None
            self._status.elapsed_seconds = time.monotonic() - self._started_at
