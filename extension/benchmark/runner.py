"""The benchmark run: the real training loop and the bare step, alternating, on the same batches.

:func:`run_benchmark` draws a small procedural dataset (timing its latent caching), then runs the
real :func:`..training.loop.train` with saving, previews, validation, the progress bar and
tensorboard off. Its ``on_step`` callback marks the end of every optimizer step; inside the
callback, outside the trainer's timed interval, the bare step (:mod:`.bare`) runs on the very
micro-batches the trainer has just used. So trainer and bare steps alternate one to one, under
the same load, thread count and caches; a trainer step is the time from the end of one callback
to the start of the next (everything the loop does per step, logging included).

Before the run, the bare loss of the first step's batch is computed with the starting vectors and
compared with the loss the trainer reports for that step; after it, the model's parameters are
checked to be unchanged and free of ``.grad``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..backends.base import Backend
from ..temp_files import create_temp_dir
from . import memory
from .bare import bare_step, prepare_batch
from .flops import count_flops, mfu, peak_flops

TARGET_RATIO = 1.05
EMBEDDING_NAME = "benchtoken"
WEBUI_ONLY = (
    "--compare-builtin is only available inside the web UI (it runs the web UI's own textual-inversion "
    "trainer on the loaded model); run the benchmark from the TI Trainer tab, or drop --compare-builtin"
)

Log = Callable[[str], None]


class BenchError(ValueError):
    """Invalid benchmark settings; the message names the problem and the fix."""


@dataclass(frozen=True)
class BenchSettings:
    """What to measure (the CLI flags have the same names)."""

    model: str = "tiny-sd1"  # tiny-sd1 / tiny-sd2 / tiny-sdxl, a diffusers folder or a .safetensors file
    batch_size: int = 2
    grad_accumulation: int = 2
    steps: int = 50  # timed optimizer steps (each path)
    warmup: int = 5  # untimed steps before them (each path)
    size: int = 0  # image side in pixels; 0: the model's native size (64 for the tiny models)
    images: int = 8  # drawn training images
    vectors: int = 1
    template: str = "subject_filewords"
    precision: str = "auto"
    threads: int = 0  # torch intra-op threads; 0: 1 for the tiny models, else torch's setting
    device: str = ""  # "" : CUDA when available, else the CPU
    cache_repeats: int = 3  # timed passes of latent caching
    seed: int = 0
    compare_builtin: bool = False

    def check(self) -> None:
        """Raise :class:`BenchError` naming every bad value."""
        problems = []
        for key, low in (("batch_size", 1), ("grad_accumulation", 1), ("steps", 1), ("warmup", 1),
                         ("images", 1), ("vectors", 1), ("cache_repeats", 1), ("threads", 0), ("size", 0)):  # fmt: skip
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                problems.append(f"{key} must be a whole number >= {low}, got {value!r}")
        if isinstance(self.size, int) and self.size > 0 and self.size % 8:
            problems.append(
                f"size {self.size} is not a multiple of 8; use e.g. {max(8, round(self.size / 8) * 8)}"
            )
        from ..limits import vectors_problem
        from ..training.config import PRECISIONS, size_problems

        if isinstance(self.size, int) and isinstance(self.vectors, int):  # the trainer's own limits
            problems += size_problems(self.size, self.size) + [p for p in [vectors_problem(self.vectors)] if p]
        for key, high in (("steps", 100_000), ("warmup", 100_000), ("images", 10_000), ("batch_size", 1024),
                          ("grad_accumulation", 10_000), ("threads", 1024)):  # fmt: skip
            value = getattr(self, key)
            if isinstance(value, int) and value > high:
                problems.append(f"{key} must be at most {high}, got {value}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} is unknown; use one of {', '.join(PRECISIONS)}")
        if problems:
            raise BenchError("invalid benchmark settings: " + "; ".join(problems))


@dataclass
class Timing:
    """Step times in seconds of one path, after the warm-up."""

    times: list[float]  # wall-clock seconds per step
    samples_per_step: int
    cpu_times: list[float] = field(default_factory=list)  # CPU seconds of the process per step

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu_times) if self.cpu_times else None

    @property
    def samples_per_second(self) -> float:
        return self.samples_per_step / self.median if self.median > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_step_s": self.median,
            "min_step_s": min(self.times),
            "max_step_s": max(self.times),
            "steps_timed": len(self.times),
            "samples_per_s": self.samples_per_second,
            "step_times_s": list(self.times),
            "median_cpu_s": self.cpu_median,
            "step_cpu_times_s": list(self.cpu_times),
        }


@dataclass
class BenchResult:
    """Every figure of one run; :meth:`to_dict` is the JSON."""

    settings: BenchSettings
    machine: dict[str, Any]
    model: dict[str, Any]
    trainer: Timing
    bare: Timing
    bare_text: str  # how the bare path gets its text input (see bare.PreparedBatch.text_mode)
    caching_per_image_s: float
    caching_images: int
    memory: dict[str, int | None]
    checks: dict[str, Any]
    builtin: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    flops: dict[str, Any] | None = None  # see flop_figures

    @property
    def ratio(self) -> float:
        """The trainer's overhead: its median step time over the bare median."""
        return self.trainer.median / self.bare.median

    @property
    def paired_ratio(self) -> float:
        """The median of trainer/bare over neighbouring step pairs (robust to load drifting)."""
        return statistics.median(t / b for t, b in zip(self.trainer.times, self.bare.times))

    @property
    def cpu_ratio(self) -> float | None:
        """The same ratio in CPU time of the process: insensitive to other processes taking the
        cores, but not a measure of GPU work (use it on CPU runs)."""
        t, b = self.trainer.cpu_median, self.bare.cpu_median
        return t / b if t is not None and b else None

    @property
    def min_ratio(self) -> float:
        """Fastest trainer step over fastest bare step (the least disturbed of each)."""
        return min(self.trainer.times) / min(self.bare.times)

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": dataclasses.asdict(self.settings),
            "machine": self.machine,
            "model": self.model,
            "trainer": self.trainer.to_dict(),
            "bare": {**self.bare.to_dict(), "text_input": self.bare_text},
            "overhead_ratio": self.ratio,
            "overhead_ratio_paired_median": self.paired_ratio,
            "overhead_ratio_min": self.min_ratio,
            "overhead_ratio_cpu": self.cpu_ratio,
            "target_ratio": TARGET_RATIO,
            "caching": {
                "per_image_s": self.caching_per_image_s,
                "images": self.caching_images,
                "passes": self.settings.cache_repeats,
            },
            "memory": self.memory,
            "checks": self.checks,
            "builtin": self.builtin,
            "flops": self.flops,
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------- helpers


def _model_fingerprint(backend: Backend) -> tuple[torch.Tensor, list[bool]]:
    """Per parameter (sum, sum of |x|) in float64, and the ``requires_grad`` flags."""
    params = list(backend.parameters())
    with torch.no_grad():
        sums = [torch.stack([p.sum(dtype=torch.float64), p.abs().sum(dtype=torch.float64)]) for p in params]
    stacked = torch.stack(sums).cpu() if sums else torch.zeros(0, 2, dtype=torch.float64)
    return stacked, [p.requires_grad for p in params]


def _machine(device: torch.device, threads: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "device": str(device),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


FLOPS_COUNTED = (
    "one bare step (text encoders and UNet, forward and backward; matmuls, convolutions and attention) "
    "under torch.utils.flop_counter.FlopCounterMode"
)


def flop_figures(
    flops: int, device: torch.device, precision: str, trainer: Timing, bare: Timing
) -> dict[str, Any]:
    """The FLOP count of one optimizer step, the rates it implies and, where the peak is known, MFU."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    peak = peak_flops(device.type, name, precision)
    return {
        "per_step": flops,
        "per_sample": flops / trainer.samples_per_step,
        "counted": FLOPS_COUNTED,
        "achieved_trainer_flops_per_s": flops / trainer.median if trainer.median > 0 else None,
        "achieved_bare_flops_per_s": flops / bare.median if bare.median > 0 else None,
        "peak_flops_per_s": peak.flops_per_s,
        "peak": peak.description,
        "mfu_trainer": mfu(flops, trainer.median, peak),
        "mfu_bare": mfu(flops, bare.median, peak),
    }


def _no_progress(done: int, total: int) -> None:
    pass


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- the run


def run_benchmark(
    settings: BenchSettings,
    backend: Backend | None = None,
    *,
    log: Log | None = _stderr,
    builtin: Callable[[BenchSettings, Path], dict[str, Any]] | None = None,
    work_dir: Path | None = None,
) -> BenchResult:
    """Measure the trainer against the bare cost; see the module docstring.

    ``backend`` is the model to use (default: ``load_backend(settings.model)``). ``builtin`` runs
    the web UI's own trainer on the same settings and data folder and returns its figures; only
    the web UI can supply it, so ``settings.compare_builtin`` without it raises :class:`BenchError`.
    Files go to a new folder inside ``work_dir`` (kept), or to a temporary folder removed afterwards.
    """
    settings.check()
    if settings.compare_builtin and builtin is None:
        raise BenchError(WEBUI_ONLY)
    if backend is None and settings.device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"--device {settings.device}: no CUDA device is available here; use --device cpu")
    say = log or (lambda _msg: None)
    old_threads = torch.get_num_threads()
    threads = settings.threads or (1 if backend is None and _is_tiny(settings.model) else 0)
    if threads:
        torch.set_num_threads(threads)
    try:
        if backend is None:
            from ..backends import load_backend
            from ..backends.loading import default_device, default_dtype

            say(f"loading {settings.model} ...")
            device = torch.device(settings.device) if settings.device else default_device()
            # weights in the precision the trainer computes in, as `train` loads them
            backend = load_backend(settings.model, device=device, dtype=default_dtype(device, settings.precision))
        if work_dir is not None:  # a fresh folder inside it, so runs never meet each other's files
            Path(work_dir).mkdir(parents=True, exist_ok=True)
            return _run(
                settings, backend, create_temp_dir(work_dir, prefix="bench-"), say, builtin
            )
        with tempfile.TemporaryDirectory(prefix="ti-trainer-bench-") as tmp:
            return _run(settings, backend, Path(tmp), say, builtin)
    finally:
        torch.set_num_threads(old_threads)


def _is_tiny(model: str) -> bool:
    return model.strip().startswith("tiny-")


def _native_size(backend: Backend) -> int:
    size = getattr(backend, "default_size", None)
    if size:
        return int(size)
    return 1024 if backend.family == "sdxl" else 512


def _run(settings: BenchSettings, backend: Backend, work: Path, say: Log, builtin) -> BenchResult:
    from ..training.config import TrainConfig
    from ..training.create import create_embedding, vectors_for_backend
    from ..training.dataset import DatasetOptions, TrainingDataset
    from ..training.demo_data import make_demo_dataset
    from ..training.loop import TrainCallbacks, draw_micro_batch, train
    from ..training.precision import choose_precision

    device = backend.device
    size = settings.size or _native_size(backend)
    batch, accumulation = settings.batch_size, settings.grad_accumulation
    n_images = max(settings.images, batch)
    notes: list[str] = []
    if n_images != settings.images:
        notes.append(f"drew {n_images} images instead of {settings.images} to fill a batch of {batch}")

    # -- latent caching: one untimed pass, then the timed ones
    say(f"drawing {n_images} images of {size}x{size} px and timing latent caching ...")
    data = make_demo_dataset(work / "data", n=n_images, size=size, seed=settings.seed)
    options = DatasetOptions(data_root=data, width=size, height=size, template=settings.template)
    caching: list[float] = []
    dataset = None
    for rep in range(settings.cache_repeats + 1):
        memory.synchronize(device)
        t0 = time.perf_counter()
        dataset = TrainingDataset.prepare(
            options, backend, EMBEDDING_NAME, progress=_no_progress, seed=settings.seed
        )
        memory.synchronize(device)
        if rep:
            caching.append((time.perf_counter() - t0) / len(dataset))
    assert dataset is not None

    config = TrainConfig(
        name=EMBEDDING_NAME, model=settings.model, data=str(data), width=size, height=size,
        template=settings.template, vectors=settings.vectors, init_text="*",
        log_dir=str(work / "logs"), embeddings_dir=str(work / "embeddings"),
        max_steps=settings.warmup + settings.steps, batch_size=batch, grad_accumulation=accumulation,
        precision=settings.precision, seed=settings.seed, save_every=0, preview_every=0,
        validation_every=0, progress_bar=False, tensorboard=False,
    )  # fmt: skip
    config.validate(backend)
    run_precision = choose_precision(
        config.precision, device, weight_dtype=backend.dtype, fp32_hint=getattr(backend, "fp32_hint", "")
    )
    precision = run_precision.name
    autocast = run_precision.autocast_factory()
    embedding = create_embedding(backend, EMBEDDING_NAME, config.init_text, settings.vectors)
    start = vectors_for_backend(embedding, backend)
    bare_vectors = {
        k: v.to(device=device, dtype=torch.float32).clone().requires_grad_(True) for k, v in start.items()
    }
    alphas = backend.noise_schedule.alphas_cumprod.to(device=device, dtype=torch.float32)

    def prepared(stream, step: int):
        return [
            prepare_batch(
                backend,
                draw_micro_batch(dataset, next(stream), backend, settings.seed, step, m),
                EMBEDDING_NAME,
                bare_vectors,
            )
            for m in range(accumulation)
        ]

    def run_bare(batches) -> torch.Tensor:
        for v in bare_vectors.values():
            v.grad = None
        return bare_step(backend, batches, EMBEDDING_NAME, bare_vectors, alphas, autocast)

    before, flags_before = _model_fingerprint(backend)

    # -- reference: the bare loss of the first step's batch with the starting vectors
    with backend.frozen():
        first_batches = prepared(dataset.micro_batches(batch, settings.seed), 0)
        reference_loss = float(run_bare(first_batches))
    text_mode = first_batches[0].text_mode

    # -- the interleaved run
    trainer_times: list[float] = []
    bare_times: list[float] = []
    trainer_cpu: list[float] = []
    bare_cpu: list[float] = []
    peaks = {"rss_trainer": [], "rss_bare": [], "cuda_trainer": [], "cuda_bare": []}
    first_trainer_loss: list[float] = []
    stream = dataset.micro_batches(batch, settings.seed)
    last_exit: list[float] = []
    rss_before_run = memory.peak_rss_bytes()  # model loading and latent caching included
    rss_resettable = memory.reset_peak_rss()
    total_steps = config.max_steps

    def record_peaks(kind: str) -> None:
        rss = memory.peak_rss_bytes() if rss_resettable else None
        if rss is not None:
            peaks[f"rss_{kind}"].append(rss)
        cuda = memory.cuda_peak_bytes(device)
        if cuda is not None:
            peaks[f"cuda_{kind}"].append(cuda)

    def reset_peaks() -> None:
        if rss_resettable:
            memory.reset_peak_rss()
        memory.cuda_reset_peak(device)

    def on_step(done: int, loss: float, _lr: float, _eta: float | None) -> None:
        memory.synchronize(device)
        entered, entered_cpu = time.perf_counter(), time.process_time()
        if last_exit:
            trainer_times.append(entered - last_exit[0])
            trainer_cpu.append(entered_cpu - last_exit[1])
            record_peaks("trainer")
        if done == 1:
            first_trainer_loss.append(loss)
        batches = prepared(stream, done - 1)  # the micro-batches the trainer has just used
        reset_peaks()
        memory.synchronize(device)
        t0, c0 = time.perf_counter(), time.process_time()
        run_bare(batches)
        memory.synchronize(device)
        bare_times.append(time.perf_counter() - t0)
        bare_cpu.append(time.process_time() - c0)
        record_peaks("bare")
        if done % 10 == 0 or done == total_steps:
            say(f"  step {done}/{total_steps}")
        reset_peaks()
        last_exit[:] = [time.perf_counter(), time.process_time()]

    say(
        f"timing {settings.warmup} warm-up + {settings.steps} steps of batch {batch} x accumulation "
        f"{accumulation} ({precision}, {torch.get_num_threads()} threads), trainer and bare alternating ..."
    )
    result = train(
        config, backend, embedding=embedding, callbacks=TrainCallbacks(on_step=on_step), dataset=dataset
    )
    if result.reason != "completed":
        raise BenchError(f"the training run stopped early ({result.reason}): {result.message}")
    # the trainer's first step has no interval before it, so it always counts as warm-up
    w = settings.warmup
    trainer_t = Timing(trainer_times[w - 1 :], batch * accumulation, trainer_cpu[w - 1 :])
    bare_t = Timing(bare_times[w:], batch * accumulation, bare_cpu[w:])

    after, flags_after = _model_fingerprint(backend)
    with_grad = sum(1 for p in backend.parameters() if p.grad is not None)
    trainer_loss = first_trainer_loss[0] if first_trainer_loss else math.nan
    checks = {
        "first_step_loss_trainer": trainer_loss,
        "first_step_loss_bare": reference_loss,
        "first_step_loss_abs_diff": abs(trainer_loss - reference_loss),
        "model_unchanged": bool(torch.equal(before, after)),
        "requires_grad_restored": flags_before == flags_after,
        "params_with_grad": with_grad,
    }

    def peak(values: list[int]) -> int | None:
        return max(values) if values else None

    all_rss = [
        v for v in (rss_before_run, memory.peak_rss_bytes(), *peaks["rss_trainer"], *peaks["rss_bare"]) if v
    ]
    mem = {
        "rss_peak_bytes": max(all_rss) if all_rss else None,  # the whole process, model loading included
        "rss_peak_before_run_bytes": rss_before_run,
        "rss_peak_trainer_bytes": peak(peaks["rss_trainer"]),
        "rss_peak_bare_bytes": peak(peaks["rss_bare"]),
        "cuda_max_allocated_trainer_bytes": peak(peaks["cuda_trainer"]),
        "cuda_max_allocated_bare_bytes": peak(peaks["cuda_bare"]),
    }
    if not rss_resettable:
        notes.append(
            "the peak RSS cannot be reset here (no /proc/self/clear_refs): only the process peak is shown"
        )

    say("counting the FLOPs of one step ...")
    with backend.frozen():  # untimed, after the checks: one more bare step on the first batches
        flops = count_flops(lambda: run_bare(first_batches))
    flops_info = flop_figures(flops, device, precision, trainer_t, bare_t)

    builtin_figures = None
    if settings.compare_builtin and builtin is not None:
        say("running the web UI's own trainer on the same settings ...")
        builtin_figures = builtin(settings, data)

    model_info = {
        "source": settings.model
        if getattr(backend, "checkpoint_name", None) is None
        else backend.checkpoint_name,
        "family": backend.family,
        "dtype": str(backend.dtype).replace("torch.", ""),
        "precision": precision,
        "size": size,
        "prediction_type": backend.noise_schedule.prediction_type,
    }
    return BenchResult(
        settings=settings,
        machine=_machine(device, torch.get_num_threads()),
        model=model_info,
        trainer=trainer_t,
        bare=bare_t,
        bare_text=text_mode,
        caching_per_image_s=statistics.median(caching),
        caching_images=len(dataset),
        memory=mem,
        checks=checks,
        builtin=builtin_figures,
        notes=notes,
        flops=flops_info,
    )
