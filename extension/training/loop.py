"""The training loop: AdamW over the embedding vectors only, everything else frozen.

One *step* is one optimizer update made of ``grad_accumulation`` micro-batches of ``batch_size``
examples; each micro-batch loss is divided by ``grad_accumulation``, so k micro-batches of b give
the gradient of one batch of k*b. All randomness of a step (prompt templates, latent sampling,
noise, timesteps) comes from generators seeded by ``(seed, step, micro-batch)``, and the dataset's
micro-batch stream is a pure function of the seed, so a run resumed at step k repeats the
uninterrupted run exactly, with only the optimizer state saved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..backends.base import Backend, describe_model
from ..embedding import Embedding, load_embedding, load_optim_file, save_embedding
from ..schedule import LearnRateSchedule
from .config import ConfigError, TrainConfig, effective_batch_size, embedding_fit_problems
from .create import create_embedding, embedding_from_vectors, vectors_for_backend
from .distributed import SINGLE, World
from .logging import LogRow, TrainLogger
from .loss import MicroBatch, ValidationSet, derive_seed, micro_batch_loss
from .outputs import RunDirs, claim_run_dir, prune_snapshots, release_run_dir, resume_state_path
from .precision import Precision, PrecisionError, bf16_native, choose_precision, nan_advice
from .resume import ResumeError, ResumeState, load_resume_state, save_resume_state, vectors_hash

Vectors = dict[str, torch.Tensor]
ETA_WINDOW = 50  # steps averaged for the time left (longer than the usual preview / save periods)



@dataclass
class TrainCallbacks:
    """Hooks for a UI; every one is optional."""

    on_step: Callable[[int, float, float, float | None], None] | None = None  # steps done, loss, lr, eta s
    on_preview: Callable[[Path], None] | None = None
    on_save: Callable[[Path], None] | None = None
    on_validation: Callable[[int, float], None] | None = None  # steps done, validation loss
    on_message: Callable[[str], None] | None = None


@dataclass
class TrainResult:
    """What a run did."""

    embedding_path: Path | None
    steps_done: int
    reason: str  # "completed", "schedule_ended", "interrupted", "nan", "already_done"
    files: list[Path] = field(default_factory=list)
    last_loss: float | None = None
    validation: list[tuple[int, float]] = field(default_factory=list)
    run_dir: Path | None = None
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    embedding: Embedding | None = None
    precision: str = ""  # what actually ran, e.g. "bf16 autocast over float16 weights on cuda"


# ---------------------------------------------------------------------------- pieces


def step_generator(seed: int, step: int, micro: int, purpose: str) -> torch.Generator:
    """The CPU generator of one purpose ("prompt", "latent", "noise", "timestep") of one micro-batch."""
    return torch.Generator().manual_seed(derive_seed(seed, step, micro, purpose))


def draw_micro_batch(dataset, indices: list[int], backend: Backend, seed: int, step: int, micro: int) -> MicroBatch:
    """Prompts, latents, noise and timesteps of one micro-batch, from the per-step generators."""
    prompts = dataset.prompts(indices, step_generator(seed, step, micro, "prompt"))
    latents = dataset.latents(indices, step_generator(seed, step, micro, "latent")).float()
    noise = torch.randn(latents.shape, generator=step_generator(seed, step, micro, "noise"))
    timesteps = torch.randint(
        0, backend.noise_schedule.num_timesteps, (len(indices),), generator=step_generator(seed, step, micro, "timestep")
    )
    sizes = dataset.sizes(indices) if backend.family == "sdxl" else None
    return MicroBatch(prompts, latents, noise, timesteps, dataset.loss_weights(indices), sizes)


def accumulate_gradients(
    backend: Backend,
    name: str,
    vectors: Vectors,
    micro_batches: Iterator[MicroBatch] | list[MicroBatch],
    accumulation: int,
    *,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    scaler=None,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor | None:
    """Backpropagate ``accumulation`` micro-batches into ``vectors[k].grad``; each loss is divided
    by ``accumulation``. Returns the mean loss as a device tensor (no host sync), or None when
    ``should_stop`` fired between micro-batches."""
    total = None
    for i, batch in enumerate(micro_batches):
        if i >= accumulation:
            break
        if should_stop is not None and should_stop():
            return None
        with autocast() if autocast is not None else contextlib.nullcontext():
            loss = micro_batch_loss(backend, name, vectors, batch)
        scaled = loss / accumulation
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total = scaled.detach() if total is None else total + scaled.detach()
    return total


def _no_progress(done: int, total: int) -> None:
    pass


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` is a CUDA GPU that computes bfloat16 natively (for precision "auto")."""
    return bf16_native(device)


@contextlib.contextmanager
def _gradient_checkpointing(backend: Backend, enabled: bool):
    if not enabled:
        yield
        return
    backend.set_gradient_checkpointing(True)
    try:
        yield
    finally:
        backend.set_gradient_checkpointing(False)


def _starting_embedding(config: TrainConfig, backend: Backend, embedding: Embedding | None) -> tuple[Embedding, Path | None]:
    """The embedding to start from, and the file it came from (for resume / .optim state)."""
    if embedding is not None:
        return embedding, None
    if config.resume:
        path = config.final_path()
        return load_embedding(path), path
    if config.embedding_file:
        path = Path(config.embedding_file)
        return load_embedding(path), path
    return create_embedding(backend, config.name, config.init_text, config.vectors, zeros=config.zeros), None


def _restore_optimizer(
    optimizer: torch.optim.Optimizer,
    scaler,
    source: Path | None,
    vectors: Vectors,
    keys: list[str],
    step: int,
    config: TrainConfig,
    warn: Callable[[str], None],
) -> bool:
    """Load the optimizer state saved for these exact vectors, if any. True when loaded."""
    if source is None:
        return False
    state_file = resume_state_path(source)
    if state_file.is_file():
        try:
            rs = load_resume_state(state_file)
        except ResumeError as exc:
            warn(f"{exc}; the optimizer starts fresh")
            return False
        if rs.step != step or rs.encoder_keys != keys or rs.vectors_hash != vectors_hash(vectors):
            warn(f"{state_file} belongs to other vectors (step {rs.step}); the optimizer starts fresh")
            return False
        if rs.config_hash != config.config_hash():
            warn("training options changed since the saved state: the run continues but will not repeat the original exactly")
        optimizer.load_state_dict(rs.optimizer_state)
        if scaler is not None and rs.scaler_state:
            scaler.load_state_dict(rs.scaler_state)
        return True
    if source.suffix == ".pt" and len(keys) == 1:  # the web UI's own .optim side file
        try:
            state = load_optim_file(source, vectors[keys[0]].detach().cpu())
        except ValueError as exc:
            warn(f"cannot use the .optim file: {exc}; the optimizer starts fresh")
            return False
        if state is not None:
            try:
                optimizer.load_state_dict(state)
                return True
            except (ValueError, KeyError) as exc:
                warn(f"cannot use the .optim file: {exc}; the optimizer starts fresh")
    return False


# ---------------------------------------------------------------------------- the run


class _Stop(Exception):
    """Ends the step loop early; ``reason`` goes into the result."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class TrainingRun:
    """One training run, in the phases of the algorithm:

    :meth:`prepare` (check options, pick the starting vectors, data, precision, optimizer) →
    :meth:`restore` (the optimizer state saved with those vectors) → :meth:`open_outputs` →
    :meth:`step` for each step, with :meth:`after_step` (validate, save, preview, log) →
    :meth:`finish` (the final save and the summary).
    """

    def __init__(
        self,
        config: TrainConfig,
        backend: Backend,
        *,
        embedding: Embedding | None = None,
        callbacks: TrainCallbacks | None = None,
        should_stop: Callable[[], bool] | None = None,
        dataset=None,
        world: World = SINGLE,
    ):
        self.world = world
        self.config = config
        self.backend = backend
        self.cb = callbacks or TrainCallbacks()
        self.should_stop = should_stop
        self.dataset = dataset
        self._given_embedding = embedding
        self.messages: list[str] = []
        self.name = config.name
        self.keys = list(backend.encoder_widths)
        self.vectors: Vectors = {}
        self.last_good: Vectors = {}
        self.last_prompt = ""
        self.timing: list[float] = []
        self.updating = False  # between the optimizer update and its bookkeeping

    # -- messages ----------------------------------------------------------------------------------

    def note(self, msg: str) -> None:
        self.messages.append(msg)
        if self.cb.on_message:
            self.cb.on_message(msg)

    def _early_result(self, reason: str, message: str) -> TrainResult:
        return TrainResult(None, self.start_step, reason, message=message, warnings=self.messages)

    # -- prepare -----------------------------------------------------------------------------------

    def prepare(self) -> TrainResult | None:
        """Check everything and build the run's state; nothing is written. A result means "stop here"."""
        backend = self.backend
        self.config, size_warnings = self.config.with_model_size(backend)
        config = self.config
        for w in [*config.validate(backend), *size_warnings]:
            self.note(w)
        start, self.source = _starting_embedding(config, backend, self._given_embedding)
        try:
            start_vectors = vectors_for_backend(start, backend)
        except ValueError as exc:
            raise ConfigError([str(exc)]) from None
        problems = embedding_fit_problems(start_vectors, backend, f"embedding {start.name!r}")
        if problems:
            raise ConfigError(problems)
        self.start_step = self.steps_done = int(start.step or 0)
        try:
            self.precision: Precision = choose_precision(
                config.precision, backend.device, weight_dtype=backend.dtype, fp32_hint=getattr(backend, "fp32_hint", "")
            )
        except PrecisionError as exc:
            raise ConfigError([str(exc)]) from None

        if self.start_step >= config.max_steps:
            return self._early_result(
                "already_done",
                f"{self.name} has already been trained for {self.start_step} steps (max steps {config.max_steps}); "
                "raise --steps to continue",
            )
        self.lr_schedule = LearnRateSchedule.parse(config.learn_rate, config.max_steps)
        self.clip_schedule = (
            LearnRateSchedule.parse(config.clip_grad_value, config.max_steps, allow_zero=True)
            if config.clip_grad != "none"
            else None
        )
        if self.lr_schedule.rate_at(self.start_step) is None:
            return self._early_result(
                "schedule_ended",
                f"the learn rate schedule {config.learn_rate!r} ends at step {self.lr_schedule.end_step}, "
                f"before step {self.start_step}",
            )
        if not self._prepare_data():
            return self._early_result("interrupted", "interrupted while preparing the dataset")
        self._prepare_optimizer(start_vectors)
        self._prepare_validation()
        return None

    def _prepare_data(self) -> bool:
        """Cache the dataset (and the held-out validation set); False when interrupted."""
        from .dataset import DatasetInterrupted, TrainingDataset

        config = self.config

        world = self.world
        shard = (world.rank, world.size)

        def prepare(root: str | None, shard: tuple[int, int] = (0, 1)):
            return TrainingDataset.prepare(
                config.dataset_options(root), self.backend, self.name,
                progress=None if config.progress_bar and world.is_main else _no_progress,
                should_stop=self.should_stop, seed=config.seed, shard=shard,
            )  # fmt: skip

        try:
            if self.dataset is None:
                self.dataset = prepare(None, shard)
                if world.distributed:  # every rank encoded its share; each gets all the latents
                    for entries in world.all_gather_objects(self.dataset.latent_entries(shard)):
                        self.dataset.add_latent_entries(entries)
            self.held_out = prepare(config.validation_data) if config.validation_every and config.validation_data else None
        except DatasetInterrupted:
            return False
        for path, why in getattr(self.dataset, "skipped", []):
            self.note(f"skipped {path}: {why}")
        # the global batch (all processes together) is what the dataset and the clamp see
        global_batch, clamp_warning = effective_batch_size(
            dataclasses.replace(config, batch_size=config.batch_size * world.size), len(self.dataset) * config.repeats
        )
        self.batch_size = max(global_batch // world.size, 1)
        if clamp_warning and clamp_warning not in self.messages:
            self.note(clamp_warning)
        self.accumulation = config.grad_accumulation
        return True

    def _prepare_optimizer(self, start_vectors: Vectors) -> None:
        device = self.backend.device
        self.note(f"model: {describe_model(self.backend)}")
        self.note(f"precision: {self.precision.describe()}")
        self.autocast = self.precision.autocast_factory()
        self.scaler = self.precision.grad_scaler()
        self.vectors = {
            k: start_vectors[k].detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True)
            for k in self.keys
        }
        self.world.broadcast_(list(self.vectors.values()))  # identical on every rank from the start
        self.optimizer = torch.optim.AdamW(
            [self.vectors[k] for k in self.keys],
            lr=self.lr_schedule.rate_at(self.start_step),
            weight_decay=self.config.weight_decay,
        )

    def _prepare_validation(self) -> None:
        config = self.config
        self.validation = None
        if config.validation_every and self.world.is_main:
            self.validation = ValidationSet.build(
                self.held_out if self.held_out is not None else self.dataset,
                self.backend,
                n_images=config.validation_images,
                timesteps_per_image=config.validation_timesteps,
                batch_size=self.batch_size,
                seed=config.seed,
            )

    # -- restore -----------------------------------------------------------------------------------

    def restore(self) -> None:
        """Load the optimizer (and loss scaler) state saved with the starting vectors, if any."""
        if _restore_optimizer(
            self.optimizer, self.scaler, self.source, self.vectors, self.keys, self.start_step, self.config, self.note
        ):
            self.note(f"continuing from step {self.start_step} with the saved optimizer state")
        elif self.start_step:
            self.note(f"continuing from step {self.start_step}; no matching optimizer state, AdamW starts fresh")

    # -- outputs -----------------------------------------------------------------------------------

    def open_outputs(self) -> None:
        """The run folder, logger and result: the first file-system writes happen here (rank 0 only)."""
        config = self.config
        self.stream = self.dataset.micro_batches(
            self.batch_size * self.world.size, config.seed, start=self.start_step * self.accumulation
        )
        if not self.world.is_main:
            self.dirs = None
            self.logger = _SilentLogger()
            self.result = TrainResult(None, self.start_step, "completed", warnings=self.messages,
                                      precision=self.precision.describe())  # fmt: skip
            return
        continuing = self.source is not None
        reuse = config.resume or config.overwrite or continuing
        run_dir = claim_run_dir(
            Path(config.log_dir), self.name, reuse=reuse, start_step=self.start_step, keep_log=not config.overwrite
        )
        self.dirs = RunDirs(run_dir, self.name, config.save_format)
        self.logger = TrainLogger(
            self.dirs.loss_csv,
            self.dirs.loss_plot,
            total_steps=config.max_steps,
            start_step=self.start_step,
            append=config.resume or continuing,
            progress_bar=config.progress_bar,
            tensorboard_dir=self.dirs.tensorboard if config.tensorboard else None,
            title=f"{self.name} ({self.backend.family}, batch {self.batch_size}x{self.accumulation})",
        )
        self.result = TrainResult(
            None, self.start_step, "completed", run_dir=self.dirs.root, warnings=self.messages,
            precision=self.precision.describe(),
        )  # fmt: skip

    def model_context(self) -> contextlib.ExitStack:
        """The frozen model with the run's text settings and gradient checkpointing."""
        stack = contextlib.ExitStack()
        stack.enter_context(self.backend.frozen())
        stack.enter_context(self.backend.text_settings(self.config.emphasis, self.config.clip_skip))
        stack.enter_context(_gradient_checkpointing(self.backend, self.config.gradient_checkpointing))
        return stack

    # -- one step ----------------------------------------------------------------------------------

    def _micro_batches(self, step: int) -> Iterator[MicroBatch]:
        for micro in range(self.accumulation):
            mb = draw_micro_batch(self.dataset, next(self.stream), self.backend, self.config.seed, step, micro)
            self.last_prompt = mb.prompts[0]
            yield self.world.share(mb)

    def _stop_requested(self) -> bool:
        asked = self.should_stop is not None and self.should_stop()
        return self.world.any(asked, self.backend.device)

    def _clip_gradients(self, step: int) -> None:
        if self.clip_schedule is None:
            return
        limit = self.clip_schedule.rate_at(step)
        if limit is None:  # past the clipping schedule's end: its last value holds
            limit = self.clip_schedule.stages[-1].rate
        if limit:
            params = [self.vectors[k] for k in self.keys]
            if self.config.clip_grad == "value":
                torch.nn.utils.clip_grad_value_(params, limit)
            else:
                torch.nn.utils.clip_grad_norm_(params, limit)

    def _update(self) -> None:
        # the optimizer's state before the update (a few vectors' moments: cheap), so that an
        # interrupt inside it can go back to the state of `steps_done` and still save a resumable one
        moments = {
            param: {k: t.clone() if torch.is_tensor(t) else t for k, t in state.items()}
            for param, state in self.optimizer.state.items()
        }
        self.last_good_state = (moments, None if self.scaler is None else self.scaler.state_dict())
        self.updating = True
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    def _back_to_last_good(self) -> None:
        with torch.no_grad():
            for k, v in self.vectors.items():
                v.copy_(self.last_good[k])

    def _loss_and_finite(self, step_loss: torch.Tensor) -> tuple[float, bool]:
        """The one host sync of a step: its loss, and whether loss and vectors are finite."""
        finite = torch.isfinite(step_loss).float()
        for v in self.vectors.values():
            finite = finite * torch.isfinite(v).all().float()
        loss_value, ok = torch.stack([step_loss.float(), finite]).tolist()
        return loss_value, bool(ok)

    def step(self, step: int) -> None:
        """One optimizer update made of ``accumulation`` micro-batches; raises :class:`_Stop` to end."""
        if self._stop_requested():
            raise _Stop("interrupted")
        lr = self.lr_schedule.rate_at(step)
        if lr is None:
            self.note(f"the learn rate schedule ended at step {step}, before max steps {self.config.max_steps}")
            raise _Stop("schedule_ended")
        self._step_started = time.perf_counter()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        self.last_good = {k: v.detach().clone() for k, v in self.vectors.items()}
        step_loss = accumulate_gradients(
            self.backend, self.name, self.vectors, self._micro_batches(step), self.accumulation,
            autocast=self.autocast, scaler=self.scaler,
            # several processes agree on stopping at step boundaries only
            should_stop=None if self.world.distributed else self.should_stop,
        )  # fmt: skip
        if step_loss is None:  # stop requested between micro-batches: drop the partial step
            self.optimizer.zero_grad(set_to_none=True)
            raise _Stop("interrupted")
        self.world.average_gradients([self.vectors[k] for k in self.keys])
        step_loss = self.world.average(step_loss)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        self._clip_gradients(step)
        self._update()
        loss_value, ok = self._loss_and_finite(step_loss)
        if not ok:
            self._back_to_last_good()
            self.result.last_loss = loss_value
            self.note(
                f"the loss became {loss_value} at step {step + 1}; stopped and kept the vectors "
                f"of step {step}; {nan_advice(self.precision.name)}"
            )
            raise _Stop("nan")
        self.steps_done = step + 1
        self.updating = False
        self.result.steps_done = self.steps_done
        self.result.last_loss = loss_value
        self.after_step(loss_value, lr)

    # -- after a step: validate, save, preview, log ---------------------------------------------

    def after_step(self, loss_value: float, lr: float) -> None:
        config, done = self.config, self.steps_done
        val_loss = None
        if self.validation is not None and done % config.validation_every == 0:
            val_loss = self.validate(done)
        if config.save_every and done % config.save_every == 0:
            self.save_snapshot(done)
        if config.preview_every and done % config.preview_every == 0:
            self.preview(done, self.last_prompt)
        self.logger.log(LogRow(done, self.epoch_of(done), loss_value, val_loss, lr))
        # a step's time includes its validation, snapshot and preview, so the time left does too
        self.timing.append(time.perf_counter() - self._step_started)
        recent = self.timing[-ETA_WINDOW:]
        eta = (config.max_steps - done) * sum(recent) / len(recent)
        if self.cb.on_step:
            self.cb.on_step(done, loss_value, self.optimizer.param_groups[0]["lr"], eta)

    def epoch_of(self, step: int) -> float:
        return step * self.batch_size * self.accumulation / max(len(self.dataset) * self.config.repeats, 1)

    def validate_at_start(self) -> None:
        """The validation loss of the starting vectors, unless the log already has it."""
        if self.validation is None:
            return
        if any(r.step == self.start_step and r.validation_loss is not None for r in self.logger.history):
            return
        v = self.validate(self.start_step)
        self.logger.log(LogRow(self.start_step, self.epoch_of(self.start_step), None, v, None))

    def validate(self, step: int) -> float:
        assert self.validation is not None
        loss = self.validation.loss(self.backend, self.name, self.vectors, self.autocast)
        self.result.validation.append((step, loss))
        if self.cb.on_validation:
            self.cb.on_validation(step, loss)
        return loss

    def make_embedding(self, emb_name: str, step: int) -> Embedding:
        return embedding_from_vectors(emb_name, self.vectors, self.backend, step=step)

    def _optimizer_state_for_webui(self):
        return self.optimizer.state_dict() if self.config.save_format == "pt" and len(self.keys) == 1 else None

    def save_snapshot(self, step: int) -> None:
        if not self.world.is_main:
            return
        path = Path(
            save_embedding(
                self.make_embedding(f"{self.name}-{step}", step), self.dirs.snapshot(step), self.config.save_format,
                overwrite=True, optimizer_state=self._optimizer_state_for_webui(),
            )
        )  # fmt: skip
        files = self.result.files
        files.append(path)
        if self.config.keep_snapshots > 0:
            # only this run's own snapshots: the log folder may be shared with the web UI's trainer
            own = [f for f in files if f.parent == self.dirs.embeddings]
            for old in prune_snapshots(self.dirs.embeddings, self.name, self.config.keep_snapshots, only=own):
                files.remove(old)
        self.logger.plot()  # keep loss.png current during long runs
        if self.cb.on_save:
            self.cb.on_save(path)

    def preview(self, step: int, training_prompt: str) -> None:
        if not self.world.is_main:
            return
        from .preview import preview_request, save_preview

        try:
            files = save_preview(
                self.backend, preview_request(self.config, training_prompt), self.name, self.vectors,
                self.dirs.preview(step), card_path=self.dirs.card(step),
                embedding=self.make_embedding(f"{self.name}-{step}", step), step=step,
            )  # fmt: skip
        except Exception as exc:  # a preview is a view of the run, never a reason to lose it
            self.note(f"the preview at step {step} failed ({type(exc).__name__}: {exc}); training goes on")
            return
        self.result.files.append(files.image)
        if files.card is not None:
            self.result.files.append(files.card)
        if self.cb.on_preview:
            self.cb.on_preview(files.image)

    # -- finish ------------------------------------------------------------------------------------

    def save_final(self, step: int, with_state: bool) -> Path | None:
        emb = self.make_embedding(self.name, step)
        if not self.world.is_main:
            self.result.embedding = emb
            return None
        path = Path(
            save_embedding(
                emb, self.config.final_path(), self.config.save_format, overwrite=True,
                optimizer_state=self._optimizer_state_for_webui() if with_state else None,
            )
        )  # fmt: skip
        self.result.files.append(path)
        self.result.embedding = emb
        if with_state:
            state = ResumeState(
                step=step,
                config_hash=self.config.config_hash(),
                encoder_keys=self.keys,
                vectors_hash=vectors_hash(self.vectors),
                optimizer_state=self.optimizer.state_dict(),
                scaler_state=self.scaler.state_dict() if self.scaler is not None else None,
            )
            self.result.files.append(save_resume_state(resume_state_path(path), state))
        if self.cb.on_save:
            self.cb.on_save(path)
        return path

    def on_keyboard_interrupt(self, cause: str = "Ctrl-C") -> None:  # one process only: several processes stop by agreement
        self.result.reason = "interrupted"
        if self.updating:  # cut inside an optimizer update: back to the vectors and state of `steps_done`
            self._back_to_last_good()
            moments, scaler_state = self.last_good_state
            self.optimizer.state.clear()
            self.optimizer.state.update(moments)
            if scaler_state is not None:
                self.scaler.load_state_dict(scaler_state)
            self.updating = False
        self.note(f"interrupted ({cause}); saving the current state")

    def on_error(self) -> None:
        """An error mid-run (out of memory, a full disk...): keep what was trained (the caller re-raises)."""
        self.logger.close()
        if self.steps_done > self.start_step and not self.updating:
            with contextlib.suppress(Exception):
                self.save_final(self.steps_done, with_state=True)
                self.note(
                    f"error after {self.steps_done} steps; the state of step {self.steps_done} was saved to "
                    f"{self.config.final_path()}"
                )

    def finish(self) -> TrainResult:
        result = self.result
        result.steps_done = self.steps_done
        result.embedding_path = self.save_final(self.steps_done, with_state=result.reason != "nan")
        plot = self.logger.plot()
        if plot is not None:
            result.files.append(plot)
        if self.logger.csv_path is not None and self.logger.csv_path.is_file():
            result.files.append(self.logger.csv_path)
        result.message = _summary(result, self.config, self.precision)
        return result

    # -- the whole run -----------------------------------------------------------------------------

    def run(self) -> TrainResult:
        early = self.prepare()
        if early is not None:
            return early
        self.restore()
        self.open_outputs()
        try:
            self.train_steps()
            return self.finish()
        finally:
            if self.dirs is not None:
                release_run_dir(self.dirs.root)

    def train_steps(self) -> None:
        """The steps, ending on a stop, an interrupt (saved) or an error (saved, then raised)."""
        try:
            with self.model_context():
                self.validate_at_start()
                for step in range(self.start_step, self.config.max_steps):
                    self.step(step)
        except _Stop as stop:
            self.result.reason = stop.reason
        except KeyboardInterrupt as exc:  # Ctrl-C, or the CLI's SIGTERM/SIGHUP ("SIGTERM")
            self.on_keyboard_interrupt(str(exc) or "Ctrl-C")
        except Exception:
            self.on_error()
            raise
        finally:
            self.logger.close()


def train(
    config: TrainConfig,
    backend: Backend,
    *,
    embedding: Embedding | None = None,
    callbacks: TrainCallbacks | None = None,
    should_stop: Callable[[], bool] | None = None,
    dataset=None,
    world: World = SINGLE,
) -> TrainResult:
    """Train the embedding ``config.name`` on ``backend``; see the module docstring.

    Bad options raise :class:`ConfigError` (or the dataset's ``DatasetError``) before anything
    is written. ``embedding`` overrides where the vectors start (else: resume file, embedding
    file, or a new embedding from the init text). ``dataset`` may be a prepared
    ``TrainingDataset`` to reuse. Ctrl-C (KeyboardInterrupt) and ``should_stop()`` save the
    current state and return with reason "interrupted". ``world`` is this process's place among
    several data-parallel processes (see :mod:`.distributed`); only rank 0 writes files.
    """
    run = TrainingRun(
        config, backend, embedding=embedding, callbacks=callbacks, should_stop=should_stop, dataset=dataset,
        world=world,
    )  # fmt: skip
    return run.run()


class _SilentLogger:
    """The logger of ranks other than 0: they write nothing."""

    history: tuple = ()
    csv_path = None

    def log(self, row: LogRow) -> None:
        pass

    def plot(self) -> None:
        return None

    def close(self) -> None:
        pass


def _summary(result: TrainResult, config: TrainConfig, precision: Precision) -> str:
    what = {
        "completed": f"trained {result.steps_done} steps",
        "schedule_ended": f"the learn rate schedule ended after {result.steps_done} steps",
        "interrupted": f"interrupted after {result.steps_done} steps; continue with --resume",
        "nan": f"stopped at step {result.steps_done}: the loss was not finite; {nan_advice(precision.name)}",
    }[result.reason]
    loss = f", last loss {result.last_loss:.5f}" if result.last_loss is not None and math.isfinite(result.last_loss) else ""
    return f"{config.name}: {what}{loss} ({precision.name}); saved {result.embedding_path}"
