"""``--compare-builtin``: the web UI's own textual-inversion trainer, timed on the same settings.

:func:`make_builtin` gives :func:`..benchmark.runner.run_benchmark` its ``builtin`` callable. It
runs the web UI's Train tab entry point (``modules.textual_inversion.ui.train_embedding``, which
turns cross-attention optimizations off unless the user's setting keeps them, then calls
``textual_inversion.train_embedding``) on the loaded model, the benchmark's data folder, batch
size, gradient accumulation, steps, learning rate, template and image size, with previews and
snapshots off. The embedding starts from the same vectors as ours, under a throwaway name.

Its time per optimizer step comes from its own progress bar: the module's ``tqdm`` is swapped for
a subclass whose ``update`` (called once after every optimizer step) marks a step boundary, so the
figures are per-step medians after the same warm-up as ours, with the peak memory of each step.

Everything it leaves behind is removed: the final ``<name>.pt`` (and ``.pt.optim``) it saves in
the embeddings folder, its log folder, the template entry, the embedding registration, and the
``.grad`` it leaves on every model parameter that required grad.

The pure parts (:class:`StepRecorder`, :func:`trainer_arguments`, :func:`order_arguments`,
:func:`comparison`, :func:`format_comparison`) import no ``modules.*``; :func:`run_builtin` only
works inside the web UI.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import inspect
import os
import secrets
import shutil
import tempfile
import time
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..benchmark import memory
from ..benchmark.runner import WEBUI_ONLY, BenchError, BenchResult, BenchSettings, Timing

TARGET_SPEEDUP = 1.5  # issue 6: at least 1.5x the web UI's trainer in steps per second
NAME_PREFIX = "ti_trainer_bench_"
TRAINER_LABEL = "AUTOMATIC1111 textual_inversion.train_embedding"
SDXL_MESSAGE = (
    "the web UI's own trainer cannot train SDXL embeddings, so there is nothing to compare; "
    "load an SD1 or SD2 checkpoint, or run the benchmark without the comparison"
)


# --------------------------------------------------------------------------- per-step recording


class StepRecorder:
    """Step boundaries of a training loop: wall and CPU time per step and each step's peak memory.

    Call :meth:`mark` at the end of every optimizer step. The interval between two marks is one
    step; the first mark only starts the clock (what came before it, dataset preparation
    included, is not a step). The peaks are reset at every mark, so each interval's peak is
    that step's. ``sync`` waits for queued device work before a clock is read.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.perf_counter,
        cpu_clock: Callable[[], float] = time.process_time,
        sync: Callable[[], None] = lambda: None,
        peak_rss: Callable[[], int | None] = memory.peak_rss_bytes,
        cuda_peak: Callable[[], int | None] = lambda: None,
        reset_peaks: Callable[[], None] = lambda: None,
        on_first_mark: Callable[[], None] | None = None,
    ):
        self._clock, self._cpu_clock, self._sync = clock, cpu_clock, sync
        self._peak_rss, self._cuda_peak, self._reset_peaks = peak_rss, cuda_peak, reset_peaks
        self._on_first_mark = on_first_mark
        self._last: tuple[float, float] | None = None
        self.marks = 0
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.rss_peaks: list[int] = []
        self.cuda_peaks: list[int] = []

    def mark(self) -> None:
        """One optimizer step has just ended."""
        self._sync()
        now, cpu = self._clock(), self._cpu_clock()
        self.marks += 1
        if self._last is None:
            if self._on_first_mark is not None:
                self._on_first_mark()
        else:
            self.times.append(now - self._last[0])
            self.cpu_times.append(cpu - self._last[1])
            rss, cuda = self._peak_rss(), self._cuda_peak()
            if rss is not None:
                self.rss_peaks.append(rss)
            if cuda is not None:
                self.cuda_peaks.append(cuda)
        self._reset_peaks()
        self._last = (self._clock(), self._cpu_clock())  # our own bookkeeping is not the step's

    def timing(self, warmup: int, samples_per_step: int) -> Timing:
        """The steps after ``warmup`` warm-up steps (as the benchmark counts them: the first step
        has no interval before it, so ``warmup - 1`` intervals are dropped)."""
        if warmup < 1:
            raise ValueError(f"warmup must be at least 1, got {warmup}")
        drop = warmup - 1
        if len(self.times) <= drop:
            raise BenchError(
                f"the web UI's trainer made {self.marks} step(s), too few to time after {warmup} warm-up "
                "step(s); it was interrupted or failed (see the console), or give it more steps"
            )
        return Timing(self.times[drop:], samples_per_step, self.cpu_times[drop:])

    def figures(self, warmup: int, samples_per_step: int) -> dict[str, Any]:
        """The timing (:meth:`Timing.to_dict`) plus the peaks over every step after the first."""
        return {
            **self.timing(warmup, samples_per_step).to_dict(),
            "steps_total": self.marks,
            "rss_peak_bytes": max(self.rss_peaks) if self.rss_peaks else None,
            "cuda_max_allocated_bytes": max(self.cuda_peaks) if self.cuda_peaks else None,
        }


# --------------------------------------------------------------------------- the trainer's arguments


def builtin_problem(settings: BenchSettings) -> str | None:
    """Why the web UI's trainer would not do the same work as ours on ``settings`` (or None).

    It clamps gradient accumulation to ``images // batch size``, where our loop draws the
    micro-batches from the repeated dataset; so the comparison needs batch x accumulation images.
    """
    images = max(settings.images, settings.batch_size)  # what the benchmark draws
    needed = settings.batch_size * settings.grad_accumulation
    if images < needed:
        return (
            f"the web UI's trainer clamps gradient accumulation to images // batch size "
            f"({images // settings.batch_size} here), so it would not do the same work as ours; "
            f"with batch {settings.batch_size} x accumulation {settings.grad_accumulation} use at least "
            f"{needed} images"
        )
    return None


def trainer_arguments(
    settings: BenchSettings,
    *,
    name: str,
    data_dir: str | os.PathLike,
    log_dir: str | os.PathLike,
    template_key: str,
    size: int,
    learn_rate: str,
) -> dict[str, Any]:
    """Keyword arguments of the web UI's ``train_embedding`` for ``settings``: the same batch,
    accumulation, step count (warm-up included), learning rate, template and square size as our
    run; no snapshots, no previews, no tag shuffling or dropout, no loss weighting, latents
    sampled once (our default)."""
    return {
        "id_task": "ti-trainer-bench",
        "embedding_name": name,
        "learn_rate": learn_rate,
        "batch_size": settings.batch_size,
        "gradient_step": settings.grad_accumulation,
        "data_root": str(data_dir),
        "log_directory": str(log_dir),
        "training_width": size,
        "training_height": size,
        "varsize": False,
        "steps": settings.warmup + settings.steps,
        "clip_grad_mode": "disabled",
        "clip_grad_value": "0.1",
        "shuffle_tags": False,
        "tag_drop_out": 0.0,
        "latent_sampling_method": "once",
        "use_weight": False,
        "create_image_every": 0,
        "save_embedding_every": 0,
        "template_filename": template_key,
        "save_image_with_stored_embedding": False,
        "preview_from_txt2img": False,
        "preview_prompt": "",
        "preview_negative_prompt": "",
        "preview_steps": 20,
        "preview_sampler_name": "Euler a",
        "preview_cfg_scale": 7.0,
        "preview_seed": -1,
        "preview_width": size,
        "preview_height": size,
    }


def order_arguments(parameters: Sequence[str], values: Mapping[str, Any]) -> list[Any]:
    """``values`` as a positional list in the order of ``parameters`` (the web UI's Train tab
    passes them positionally). Raises :class:`BenchError` when the names differ, i.e. this web
    UI version's trainer takes other arguments than the ones we know."""
    missing = [p for p in parameters if p not in values]
    extra = [k for k in values if k not in parameters]
    if missing or extra:
        detail = "; ".join(
            part
            for part in (
                f"it wants {', '.join(missing)}" if missing else "",
                f"it no longer takes {', '.join(extra)}" if extra else "",
            )
            if part
        )
        raise BenchError(
            f"this web UI's train_embedding takes other arguments than TI Trainer knows ({detail}); "
            "--compare-builtin supports AUTOMATIC1111 v1.10.x - run the benchmark without the comparison"
        )
    return [values[p] for p in parameters]


def log_folders(log_dir: Path, name: str, today: datetime.date) -> list[Path]:
    """The folders the web UI's trainer writes its settings and loss CSV to: it makes
    ``<log>/<date>/<name>`` only when snapshots or previews are on, yet writes the settings file
    there anyway, so they are made beforehand (for today and tomorrow, in case the run starts
    across midnight)."""
    days = (today, today + datetime.timedelta(days=1))
    return [Path(log_dir) / day.strftime("%Y-%m-%d") / name for day in days]


def throwaway_name(
    taken: Callable[[str], bool], token: Callable[[], str] = lambda: secrets.token_hex(4)
) -> str:
    """An embedding name starting with :data:`NAME_PREFIX` for which ``taken(name)`` is false."""
    for _ in range(100):
        name = NAME_PREFIX + token()
        if not taken(name):
            return name
    raise BenchError("could not find a free throwaway embedding name; clean up ti_trainer_bench_* embeddings")


# --------------------------------------------------------------------------- ours vs theirs


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def comparison(result: BenchResult) -> dict[str, Any] | None:
    """Our trainer against the web UI's from one benchmark result (None without ``builtin``).

    ``speedup`` is steps per second ours / theirs (their median step time over ours);
    ``memory_ratio_*`` is our peak over theirs (below 1: we need less).
    """
    theirs = result.builtin
    if not theirs:
        return None
    ours_step = result.trainer.median
    their_step = float(theirs["median_step_s"])
    ours_rss = result.memory.get("rss_peak_trainer_bytes")
    ours_cuda = result.memory.get("cuda_max_allocated_trainer_bytes")
    speedup = their_step / ours_step if ours_step > 0 else None
    out = {
        "steps_per_s_ours": 1.0 / ours_step if ours_step > 0 else None,
        "steps_per_s_webui": 1.0 / their_step if their_step > 0 else None,
        "speedup": speedup,
        "speedup_fastest_steps": _ratio(float(theirs["min_step_s"]), min(result.trainer.times)),
        "speedup_cpu_time": _ratio(theirs.get("median_cpu_s"), result.trainer.cpu_median),
        "rss_peak_ours_bytes": ours_rss,
        "rss_peak_webui_bytes": theirs.get("rss_peak_bytes"),
        "memory_ratio_rss": _ratio(ours_rss, theirs.get("rss_peak_bytes")),
        "cuda_max_allocated_ours_bytes": ours_cuda,
        "cuda_max_allocated_webui_bytes": theirs.get("cuda_max_allocated_bytes"),
        "memory_ratio_cuda": _ratio(ours_cuda, theirs.get("cuda_max_allocated_bytes")),
        "target_speedup": TARGET_SPEEDUP,
    }
    out["meets_target"] = bool(speedup is not None and speedup >= TARGET_SPEEDUP)
    return out


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_comparison(result: BenchResult) -> str:
    """The side-by-side table of :func:`comparison` ("" without the web UI's figures)."""
    c = comparison(result)
    if c is None:
        return ""
    theirs = result.builtin or {}
    s = result.settings
    row = "{:<26}{:>14}{:>14}{:>16}"
    lines = [
        f"TI Trainer vs the web UI's own trainer ({theirs.get('trainer', TRAINER_LABEL)}): same model, data, "
        f"batch {s.batch_size} x accumulation {s.grad_accumulation}, {s.warmup} warm-up + {s.steps} timed steps each",
        "",
        row.format("", "TI Trainer", "web UI", "ours / theirs"),
        row.format(
            "median step",
            _ms(result.trainer.median),
            _ms(theirs.get("median_step_s")),
            _x(c["speedup"]) + " steps/s",
        ),
        row.format(
            "fastest step",
            _ms(min(result.trainer.times)),
            _ms(theirs.get("min_step_s")),
            _x(c["speedup_fastest_steps"]) + " steps/s",
        ),
    ]
    if c["speedup_cpu_time"] is not None:
        lines.append(
            row.format(
                "CPU time per step",
                _ms(result.trainer.cpu_median),
                _ms(theirs.get("median_cpu_s")),
                _x(c["speedup_cpu_time"]) + " less",
            )
        )
    lines += [
        row.format(
            "samples/s",
            f"{result.trainer.samples_per_second:.2f}",
            f"{theirs.get('samples_per_s', 0.0):.2f}",
            "",
        ),
        row.format(
            "peak RSS during steps",
            _mib(c["rss_peak_ours_bytes"]),
            _mib(c["rss_peak_webui_bytes"]),
            _x(c["memory_ratio_rss"]),
        ),
    ]
    if c["cuda_max_allocated_webui_bytes"] is not None or c["cuda_max_allocated_ours_bytes"] is not None:
        lines.append(
            row.format(
                "CUDA max allocated",
                _mib(c["cuda_max_allocated_ours_bytes"]),
                _mib(c["cuda_max_allocated_webui_bytes"]),
                _x(c["memory_ratio_cuda"]),
            )
        )
    verdict = "meets" if c["meets_target"] else "misses"
    lines.append("")
    lines.append(
        f"speed-up {_x(c['speedup'])} in steps per second ({verdict} the target >= {TARGET_SPEEDUP}x)"
    )
    run = theirs.get("run") or {}
    if run:
        lines.append(
            f"web UI run: attention {run.get('attention', '?')}, gradient checkpointing "
            f"{'on' if run.get('gradient_checkpointing') else 'off'}, "
            f"{run.get('params_requiring_grad', '?')} of {run.get('params_total', '?')} model parameters "
            f"requiring grad, {run.get('params_given_grad', '?')} given a .grad"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- inside the web UI


def make_builtin(backend) -> WebUIBuiltin:
    """The ``builtin`` callable of :func:`..benchmark.runner.run_benchmark` for a ``HostBackend``.

    Raises :class:`BenchError` at once outside the web UI or on a model its trainer cannot
    train, so the benchmark does not run first only to fail at the comparison.
    """
    if (
        importlib.util.find_spec("modules") is None
        or importlib.util.find_spec("modules.textual_inversion") is None
    ):
        raise BenchError(WEBUI_ONLY)
    if getattr(backend, "family", None) == "sdxl":
        raise BenchError(SDXL_MESSAGE)

    return WebUIBuiltin(backend)


class WebUIBuiltin:
    """``builtin(settings, data_dir) -> figures`` over one ``HostBackend``; :meth:`check` refuses
    settings the web UI's trainer would not run the same way, before anything runs."""

    def __init__(self, backend):
        self.backend = backend

    def check(self, settings: BenchSettings) -> None:
        problem = builtin_problem(settings)
        if problem:
            raise BenchError(problem)

    def __call__(self, settings: BenchSettings, data_dir: Path) -> dict[str, Any]:
        return run_builtin(self.backend, settings, data_dir)


def _recording_tqdm(real, recorder: StepRecorder):
    """A stand-in for the ``tqdm`` module whose progress bars mark a step at every ``update``."""

    class RecordingBar(real.tqdm):
        def update(self, n=1):
            recorder.mark()
            return super().update(n)

    return types.SimpleNamespace(tqdm=RecordingBar)


def _remove_files(paths: Iterable[Path]) -> list[str]:
    removed = []
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(str(path))
    return removed


def run_builtin(backend, settings: BenchSettings, data_dir: Path) -> dict[str, Any]:
    """Run the web UI's own trainer on ``settings`` and ``data_dir`` and return its figures.

    Only inside the web UI, on the model ``backend`` (a ``HostBackend``) wraps; see the module
    docstring for what is run and what is cleaned up. Raises :class:`BenchError` when the loaded
    model is one the web UI's trainer cannot train (SDXL) or when its run fails.
    """
    try:
        import ldm.modules.attention as ldm_attention
        import modules.textual_inversion.textual_inversion as ti
        from modules import devices, sd_hijack, sd_hijack_checkpoint, shared
        from modules.hypernetworks import hypernetwork
    except ImportError as exc:
        raise BenchError(f"{WEBUI_ONLY} ({exc})") from None

    from ..training.config import TrainConfig
    from ..training.create import create_embedding, vectors_for_backend
    from ..training.templates import load_template
    from . import glue

    try:
        import modules.textual_inversion.ui as ti_ui

        entry = ti_ui.train_embedding  # the Train tab's: attention optimizations off unless set
    except ImportError:  # pragma: no cover - a web UI without the Train tab module
        entry = ti.train_embedding

    if backend.family == "sdxl":
        raise BenchError(SDXL_MESSAGE)
    problem = builtin_problem(settings)
    if problem:
        raise BenchError(problem)
    if not backend.is_current:
        raise BenchError("the web UI has loaded another checkpoint since the benchmark started; run it again")
    model = backend.model
    db = sd_hijack.model_hijack.embedding_db
    emb_dir = Path(shared.cmd_opts.embeddings_dir)
    name = throwaway_name(
        lambda n: n in db.word_embeddings or any((emb_dir / f"{n}{s}").exists() for s in (".pt", ".pt.optim"))
    )
    size = settings.size or int(backend.default_size)
    learn_rate = TrainConfig().learn_rate  # the rate our run trained with
    total = settings.warmup + settings.steps
    device = torch.device(devices.device)

    # the same starting vectors as ours (init text "*"), as the web UI's create_embedding makes them
    ours = create_embedding(backend, name, "*", settings.vectors)
    vec = glue.host_vec(backend.family, vectors_for_backend(ours, backend))
    vec = vec.to(device=devices.device, dtype=torch.float32)
    host_emb = ti.Embedding(vec, name, step=0)
    host_emb.vectors, host_emb.shape = glue.vec_rows_and_width(vec)

    params = list(model.parameters())
    had_no_grad = [p for p in params if p.grad is None]
    run_info: dict[str, Any] = {}

    def first_mark() -> None:  # the web UI's training setup is in effect now
        plain = ldm_attention.CrossAttention.forward is hypernetwork.attention_CrossAttention_forward
        current = getattr(sd_hijack.current_optimizer, "name", None)
        run_info["attention"] = "plain (optimizations off for training)" if plain else (current or "?")
        run_info["gradient_checkpointing"] = bool(sd_hijack_checkpoint.stored)
        run_info["params_requiring_grad"] = sum(1 for p in params if p.requires_grad)
        run_info["params_total"] = len(params)

    rss_resettable = memory.reset_peak_rss()

    def reset_peaks() -> None:
        if rss_resettable:
            memory.reset_peak_rss()
        memory.cuda_reset_peak(device)

    recorder = StepRecorder(
        sync=lambda: memory.synchronize(device),
        peak_rss=memory.peak_rss_bytes if rss_resettable else (lambda: None),
        cuda_peak=lambda: memory.cuda_peak_bytes(device),
        reset_peaks=reset_peaks,
        on_first_mark=first_mark,
    )
    real_tqdm = ti.tqdm
    saved_state = glue.save_fields(shared.state)
    template_key = f"{name}.txt"
    work = Path(tempfile.mkdtemp(prefix="ti-trainer-builtin-"))
    try:
        template = work / template_key
        template.write_text("\n".join(load_template(settings.template)) + "\n", encoding="utf-8")
        args = trainer_arguments(
            settings, name=name, data_dir=data_dir, log_dir=work / "log", template_key=template_key,
            size=size, learn_rate=learn_rate,
        )  # fmt: skip
        ordered = order_arguments(list(inspect.signature(ti.train_embedding).parameters), args)
        for folder in log_folders(work / "log", name, datetime.date.today()):
            folder.mkdir(parents=True, exist_ok=True)
        ti.textual_inversion_templates[template_key] = ti.TextualInversionTemplate(
            template_key, str(template)
        )
        db.register_embedding(host_emb, model)
        ti.tqdm = _recording_tqdm(real_tqdm, recorder)
        started = time.perf_counter()
        try:
            entry(*ordered)
        except Exception as exc:  # its own errors are reported to the console and swallowed; these are not
            raise BenchError(f"the web UI's trainer failed: {exc}") from exc
        finally:
            ti.tqdm = real_tqdm
        wall = time.perf_counter() - started
        run_info["params_given_grad"] = sum(1 for p in had_no_grad if p.grad is not None)
        if shared.state.interrupted:
            raise BenchError("the web UI's trainer was interrupted; run the benchmark again")
        if (host_emb.step or 0) < total or recorder.marks < total:
            raise BenchError(
                f"the web UI's trainer stopped after {host_emb.step or 0} of {total} steps; "
                "its error is in the web UI's console"
            )
        figures = recorder.figures(settings.warmup, settings.batch_size * settings.grad_accumulation)
    finally:
        ti.tqdm = real_tqdm
        for p in had_no_grad:  # it never clears the model's weight gradients
            p.grad = None
        if db.word_embeddings.get(name) is host_emb:
            db.register_embedding_by_name(None, model, name)
        ti.textual_inversion_templates.pop(template_key, None)
        _remove_files([emb_dir / f"{name}.pt", emb_dir / f"{name}.pt.optim"])
        shutil.rmtree(work, ignore_errors=True)
        glue.restore_fields(shared.state, saved_state)
        devices.torch_gc()
    notes = []
    if not rss_resettable:
        notes.append("the peak RSS cannot be reset here: no per-step RSS peak")
    return {
        "trainer": TRAINER_LABEL,
        **figures,
        "run_wall_s": wall,  # the whole call: dataset preparation and saving included
        "run": {
            **run_info,
            "learn_rate": learn_rate,
            "size": size,
            "template": settings.template,
            "latent_sampling": "once",
            "unload_models_when_training": bool(getattr(shared.opts, "unload_models_when_training", False)),
            "training_xattention_optimizations": bool(
                getattr(shared.opts, "training_xattention_optimizations", False)
            ),
        },
        "notes": notes,
    }


__all__ = [
    "TARGET_SPEEDUP",
    "StepRecorder",
    "WebUIBuiltin",
    "builtin_problem",
    "comparison",
    "format_comparison",
    "make_builtin",
    "order_arguments",
    "run_builtin",
    "throwaway_name",
    "trainer_arguments",
]
