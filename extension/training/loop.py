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

from ..backends.base import Backend
from ..embedding import Embedding, load_embedding, load_optim_file, save_embedding
from ..schedule import LearnRateSchedule
from .config import ConfigError, TrainConfig, effective_batch_size, embedding_fit_problems
from .create import create_embedding, embedding_from_vectors, vectors_for_backend
from .logging import LogRow, TrainLogger
from .loss import MicroBatch, ValidationSet, derive_seed, micro_batch_loss
from .outputs import RunDirs, choose_run_dir, prune_snapshots, resume_state_path
from .resume import ResumeError, ResumeState, load_resume_state, save_resume_state, vectors_hash

Vectors = dict[str, torch.Tensor]

NAN_ADVICE = (
    "try a lower learn rate (e.g. a tenth), gradient clipping (--clip-grad norm), "
    "or --precision bf16 / fp32 instead of fp16"
)


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


def _autocast_factory(precision: str, device_type: str):
    if precision == "fp32":
        return None, None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device_type) if precision == "fp16" else None

    def factory():
        return torch.autocast(device_type=device_type, dtype=dtype)

    return factory, scaler


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` is a CUDA device with bfloat16 support (for precision "auto")."""
    if device.type != "cuda":
        return False
    try:
        return bool(torch.cuda.is_bf16_supported())
    except Exception:  # pragma: no cover - depends on the driver
        return False


@contextlib.contextmanager
def _text_options(backend: Backend, config: TrainConfig):
    """Apply the emphasis mode and CLIP skip on backends that expose ``text_options``."""
    old = getattr(backend, "text_options", None)
    if old is None or not dataclasses.is_dataclass(old):
        yield
        return
    backend.text_options = dataclasses.replace(old, emphasis=config.emphasis, clip_skip=config.clip_skip)
    try:
        yield
    finally:
        backend.text_options = old


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


# ---------------------------------------------------------------------------- the loop


def train(
    config: TrainConfig,
    backend: Backend,
    *,
    embedding: Embedding | None = None,
    callbacks: TrainCallbacks | None = None,
    should_stop: Callable[[], bool] | None = None,
    dataset=None,
) -> TrainResult:
    """Train the embedding ``config.name`` on ``backend``; see the module docstring.

    Bad options raise :class:`ConfigError` (or the dataset's ``DatasetError``) before anything
    is written. ``embedding`` overrides where the vectors start (else: resume file, embedding
    file, or a new embedding from the init text). ``dataset`` may be a prepared
    ``TrainingDataset`` to reuse. Ctrl-C (KeyboardInterrupt) and ``should_stop()`` save the
    current state and return with reason "interrupted".
    """
    cb = callbacks or TrainCallbacks()
    warnings = config.validate(backend)
    messages: list[str] = list(warnings)

    def note(msg: str) -> None:
        messages.append(msg)
        if cb.on_message:
            cb.on_message(msg)

    for w in warnings:
        if cb.on_message:
            cb.on_message(w)

    start, source = _starting_embedding(config, backend, embedding)
    try:
        start_vectors = vectors_for_backend(start, backend)
    except ValueError as exc:
        raise ConfigError([str(exc)]) from None
    problems = embedding_fit_problems(start_vectors, backend, f"embedding {start.name!r}")
    if problems:
        raise ConfigError(problems)
    start_step = int(start.step or 0)
    name = config.name

    if start_step >= config.max_steps:
        return TrainResult(
            None, start_step, "already_done",
            message=f"{name} has already been trained for {start_step} steps (max steps {config.max_steps}); raise --steps to continue",
            warnings=messages,
        )  # fmt: skip
    lr_schedule = LearnRateSchedule.parse(config.learn_rate, config.max_steps)
    clip_schedule = (
        LearnRateSchedule.parse(config.clip_grad_value, config.max_steps, allow_zero=True)
        if config.clip_grad != "none"
        else None
    )
    if lr_schedule.rate_at(start_step) is None:
        return TrainResult(
            None, start_step, "schedule_ended",
            message=f"the learn rate schedule {config.learn_rate!r} ends at step {lr_schedule.end_step}, before step {start_step}",
            warnings=messages,
        )  # fmt: skip

    # -- data (may raise DatasetError; nothing has been written yet)
    from .dataset import DatasetInterrupted, TrainingDataset

    def prepare(root: str | None):
        return TrainingDataset.prepare(
            config.dataset_options(root), backend, name, progress=None if config.progress_bar else _no_progress,
            should_stop=should_stop, seed=config.seed,
        )  # fmt: skip

    try:
        if dataset is None:
            dataset = prepare(None)
        held_out = prepare(config.validation_data) if config.validation_every and config.validation_data else None
    except DatasetInterrupted:
        return TrainResult(None, start_step, "interrupted", message="interrupted while preparing the dataset", warnings=messages)
    for path, why in getattr(dataset, "skipped", []):
        note(f"skipped {path}: {why}")
    batch_size, clamp_warning = effective_batch_size(config, len(dataset) * config.repeats)
    if clamp_warning and clamp_warning not in messages:
        note(clamp_warning)
    accumulation = config.grad_accumulation

    # -- model state
    device = backend.device
    precision = config.resolved_precision(device.type, bf16_supported(device))
    autocast, scaler = _autocast_factory(precision, device.type)
    keys = list(backend.encoder_widths)
    vectors: Vectors = {
        k: start_vectors[k].detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True) for k in keys
    }
    optimizer = torch.optim.AdamW(
        [vectors[k] for k in keys], lr=lr_schedule.rate_at(start_step), weight_decay=config.weight_decay
    )
    continuing = source is not None
    if _restore_optimizer(optimizer, scaler, source, vectors, keys, start_step, config, note):
        note(f"continuing from step {start_step} with the saved optimizer state")
    elif start_step:
        note(f"continuing from step {start_step}; no matching optimizer state, AdamW starts fresh")

    validation = None
    if config.validation_every:
        validation = ValidationSet.build(
            held_out if held_out is not None else dataset,
            backend,
            n_images=config.validation_images,
            timesteps_per_image=config.validation_timesteps,
            batch_size=batch_size,
            seed=config.seed,
        )

    # -- outputs (the first file-system writes happen from here on)
    reuse = config.resume or config.overwrite or continuing
    run_dir = choose_run_dir(
        Path(config.log_dir), name, reuse=reuse, start_step=start_step, keep_log=not config.overwrite
    )
    dirs = RunDirs(run_dir, name, config.save_format)
    logger = TrainLogger(
        dirs.loss_csv,
        dirs.loss_plot,
        total_steps=config.max_steps,
        start_step=start_step,
        append=config.resume or continuing,
        progress_bar=config.progress_bar,
        tensorboard_dir=dirs.tensorboard if config.tensorboard else None,
        title=f"{name} ({backend.family}, batch {batch_size}x{accumulation})",
    )
    result = TrainResult(None, start_step, "completed", run_dir=dirs.root, warnings=messages)

    def make_embedding(emb_name: str, step: int) -> Embedding:
        return embedding_from_vectors(emb_name, vectors, backend, step=step)

    def optimizer_state_for_webui():
        return optimizer.state_dict() if config.save_format == "pt" and len(keys) == 1 else None

    def save_snapshot(step: int) -> None:
        path = save_embedding(
            make_embedding(f"{name}-{step}", step), dirs.snapshot(step), config.save_format,
            overwrite=True, optimizer_state=optimizer_state_for_webui(),
        )  # fmt: skip
        result.files.append(Path(path))
        if config.keep_snapshots > 0:
            # only this run's own snapshots: the log folder may be shared with the web UI's trainer
            own = [f for f in result.files if f.parent == dirs.embeddings]
            for old in prune_snapshots(dirs.embeddings, name, config.keep_snapshots, only=own):
                result.files.remove(old)
        logger.plot()  # keep loss.png current during long runs
        if cb.on_save:
            cb.on_save(Path(path))

    def save_final(step: int, with_state: bool) -> Path:
        emb = make_embedding(name, step)
        path = Path(
            save_embedding(
                emb, config.final_path(), config.save_format, overwrite=True,
                optimizer_state=optimizer_state_for_webui() if with_state else None,
            )
        )  # fmt: skip
        result.files.append(path)
        result.embedding = emb
        if with_state:
            state = ResumeState(
                step=step,
                config_hash=config.config_hash(),
                encoder_keys=keys,
                vectors_hash=vectors_hash(vectors),
                optimizer_state=optimizer.state_dict(),
                scaler_state=scaler.state_dict() if scaler is not None else None,
            )
            result.files.append(save_resume_state(resume_state_path(path), state))
        if cb.on_save:
            cb.on_save(path)
        return path

    def run_validation(step: int) -> float:
        assert validation is not None
        loss = validation.loss(backend, name, vectors, autocast)
        result.validation.append((step, loss))
        if cb.on_validation:
            cb.on_validation(step, loss)
        return loss

    def preview(step: int, training_prompt: str) -> None:
        from .preview import preview_request, save_preview

        files = save_preview(
            backend, preview_request(config, training_prompt), name, vectors, dirs.preview(step),
            card_path=dirs.card(step), embedding=make_embedding(f"{name}-{step}", step), step=step,
        )  # fmt: skip
        result.files.append(files.image)
        if files.card is not None:
            result.files.append(files.card)
        if cb.on_preview:
            cb.on_preview(files.image)

    def epoch_of(step: int) -> float:
        return step * batch_size * accumulation / max(len(dataset) * config.repeats, 1)

    steps_done = start_step
    stream = dataset.micro_batches(batch_size, config.seed, start=start_step * accumulation)
    timing: list[float] = []
    last_prompt = ""
    updating = False  # between the optimizer update and its bookkeeping
    state_ok = True  # the optimizer state matches the vectors of `steps_done`
    last_good: Vectors = {}

    try:
        with backend.frozen(), _text_options(backend, config), _gradient_checkpointing(
            backend, config.gradient_checkpointing
        ):
            if validation is not None and not any(
                r.step == start_step and r.validation_loss is not None for r in logger.history
            ):
                v = run_validation(start_step)
                logger.log(LogRow(start_step, epoch_of(start_step), None, v, None))

            for step in range(start_step, config.max_steps):
                if should_stop is not None and should_stop():
                    result.reason = "interrupted"
                    break
                lr = lr_schedule.rate_at(step)
                if lr is None:
                    result.reason = "schedule_ended"
                    note(f"the learn rate schedule ended at step {step}, before max steps {config.max_steps}")
                    break
                t0 = time.perf_counter()
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                last_good = {k: v.detach().clone() for k, v in vectors.items()}

                def batches(step: int = step) -> Iterator[MicroBatch]:
                    nonlocal last_prompt
                    for micro in range(accumulation):
                        mb = draw_micro_batch(dataset, next(stream), backend, config.seed, step, micro)
                        last_prompt = mb.prompts[0]
                        yield mb

                step_loss = accumulate_gradients(
                    backend, name, vectors, batches(), accumulation,
                    autocast=autocast, scaler=scaler, should_stop=should_stop,
                )  # fmt: skip
                if step_loss is None:  # stop requested between micro-batches: drop the partial step
                    optimizer.zero_grad(set_to_none=True)
                    result.reason = "interrupted"
                    break
                if scaler is not None:
                    scaler.unscale_(optimizer)
                if clip_schedule is not None:
                    limit = clip_schedule.rate_at(step)
                    if limit is None:  # past the clipping schedule's end: its last value holds
                        limit = clip_schedule.stages[-1].rate
                    if limit:
                        params = [vectors[k] for k in keys]
                        if config.clip_grad == "value":
                            torch.nn.utils.clip_grad_value_(params, limit)
                        else:
                            torch.nn.utils.clip_grad_norm_(params, limit)
                updating = True
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()

                # the one host sync of a step: its loss, and whether loss and vectors are finite
                finite = torch.isfinite(step_loss).float()
                for v in vectors.values():
                    finite = finite * torch.isfinite(v).all().float()
                loss_value, ok = torch.stack([step_loss.float(), finite]).tolist()
                if not ok:
                    with torch.no_grad():
                        for k, v in vectors.items():
                            v.copy_(last_good[k])
                    result.reason = "nan"
                    result.last_loss = loss_value
                    note(
                        f"the loss became {loss_value} at step {step + 1}; stopped and kept the vectors "
                        f"of step {step}; {NAN_ADVICE}"
                    )
                    break
                steps_done = step + 1
                updating = False
                result.steps_done = steps_done
                result.last_loss = loss_value
                timing.append(time.perf_counter() - t0)

                val_loss = None
                if validation is not None and steps_done % config.validation_every == 0:
                    val_loss = run_validation(steps_done)
                if config.save_every and steps_done % config.save_every == 0:
                    save_snapshot(steps_done)
                if config.preview_every and steps_done % config.preview_every == 0:
                    preview(steps_done, last_prompt)
                logger.log(LogRow(steps_done, epoch_of(steps_done), loss_value, val_loss, lr))
                recent = timing[-20:]
                eta = (config.max_steps - steps_done) * sum(recent) / len(recent)
                if cb.on_step:
                    cb.on_step(steps_done, loss_value, optimizer.param_groups[0]["lr"], eta)
    except KeyboardInterrupt:
        result.reason = "interrupted"
        if updating:  # cut inside an optimizer update: back to the vectors of `steps_done`
            with torch.no_grad():
                for k, v in vectors.items():
                    v.copy_(last_good[k])
            state_ok = False
        note("interrupted (Ctrl-C); saving the current state")
    except Exception:
        # an error mid-run (out of memory, a full disk...): keep what was trained, then re-raise
        logger.close()
        if steps_done > start_step and not updating:
            with contextlib.suppress(Exception):
                save_final(steps_done, with_state=True)
                note(f"error after {steps_done} steps; the state of step {steps_done} was saved to {config.final_path()}")
        raise
    finally:
        logger.close()

    # -- final save
    result.steps_done = steps_done
    result.embedding_path = save_final(steps_done, with_state=state_ok and result.reason != "nan")
    plot = logger.plot()
    if plot is not None:
        result.files.append(plot)
    if logger.csv_path.is_file():
        result.files.append(logger.csv_path)
    result.message = _summary(result, config)
    return result


def _summary(result: TrainResult, config: TrainConfig) -> str:
    what = {
        "completed": f"trained {result.steps_done} steps",
        "schedule_ended": f"the learn rate schedule ended after {result.steps_done} steps",
        "interrupted": f"interrupted after {result.steps_done} steps; continue with --resume",
        "nan": f"stopped at step {result.steps_done}: the loss was not finite; {NAN_ADVICE}",
    }[result.reason]
    loss = f", last loss {result.last_loss:.5f}" if result.last_loss is not None and math.isfinite(result.last_loss) else ""
    return f"{config.name}: {what}{loss}; saved {result.embedding_path}"
