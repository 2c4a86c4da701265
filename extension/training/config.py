"""Every option of a training run, loadable from TOML, checked before any work starts."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..backends.base import Backend

# No torch at import time: the CLI builds its parsers from this module, and `--help` and argument
# errors must be instant. Torch-using modules (precision, names, dataset) are imported where needed.
PRECISIONS = ("auto", "fp32", "fp16", "bf16")  # the names .precision accepts (a test checks they agree)
CLIP_MODES = ("none", "value", "norm")
SAVE_FORMATS = ("safetensors", "pt")
EMPHASIS_MODES = ("Original", "No norm", "Ignore", "None")
LATENT_SAMPLING = ("once", "deterministic", "random")
BUILT_IN_MODEL = re.compile(r"(tiny|random)-[a-z0-9]+(@\d+)?")  # model names that are not paths
SIZE_FOR_CHECKS = 512  # the size option checks assume before the model is known
SDXL_NATIVE = 1024
SDXL_SMALLEST = 768  # below this SDXL training gets a warning

# Sizes (one rule for the CLI, the API, the tab and the benchmark): an image side above MAX_SIDE or
# an area above MAX_PIXELS (4x SDXL's native 1024x1024) is refused before any work; a size that big
# would only exhaust the memory of the machine (and take the web UI down with it).
MAX_SIDE = 4096
MAX_PIXELS = 2048 * 2048
_UNBOUNDED = sys.maxsize
MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds
MIN_SEED = -(2**63)
# option -> (lowest, highest, what it means); values outside are refused with this text
NUMBER_LIMITS: dict[str, tuple[int, int, str]] = {
    "max_steps": (1, 10_000_000, ""),
    "batch_size": (1, 1024, ""),
    "grad_accumulation": (1, 10_000, ""),
    "repeats": (1, 10_000, " (times each image appears per epoch)"),
    "bucket_step": (8, MAX_SIDE, " (a multiple of 8)"),
    "save_every": (0, _UNBOUNDED, " (0 = off)"),
    "keep_snapshots": (0, _UNBOUNDED, " (0 = keep all)"),
    "preview_every": (0, _UNBOUNDED, " (0 = off)"),
    "preview_steps": (1, 1000, " (sampling steps; the models have 1000 timesteps)"),
    "validation_every": (0, _UNBOUNDED, " (0 = off)"),
    "validation_images": (1, 10_000, ""),
    "validation_timesteps": (1, 1000, " (the models have 1000 timesteps)"),
    "clip_skip": (1, 12, " (1 = last layer; CLIP has 12)"),
}

# TOML tables whose keys are field names with a prefix ("[preview] every = 50" -> preview_every)
_TABLE_PREFIX = {"dataset": "", "training": "", "output": "", "preview": "preview_", "validation": "validation_"}

# Options that change what a step computes: a resume with different values cannot be exact.
_HASHED = (
    "data", "width", "height", "repeats", "template", "caption_extension", "filename_word_regex",
    "filename_join", "shuffle_tags", "tag_dropout", "flip_probability", "alpha_as_loss_weight",
    "latent_sampling", "buckets", "bucket_step", "template_dir", "learn_rate", "batch_size", "grad_accumulation", "weight_decay",
    "clip_grad", "clip_grad_value", "precision", "seed", "emphasis", "clip_skip",
)  # fmt: skip


# Options that name files or folders (resolved against a TOML file's folder).
_PATH_FIELDS = ("model", "embedding_file", "data", "template_dir", "log_dir", "embeddings_dir", "validation_data")


class ConfigError(ValueError):
    """One or more options are invalid; ``problems`` lists each with how to fix it."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid training options ({len(self.problems)}):\n{lines}")


@dataclass
class TrainConfig:
    """All options of one training run (the CLI flags and TOML keys have the same names).

    Paths are relative to the current folder, except in a TOML file, where they are relative to the file.
    """

    # what to train
    name: str = ""
    model: str = "tiny-sd1"
    embedding_file: str = ""  # continue an existing embedding file (its step count continues)
    init_text: str = "*"
    vectors: int = 1
    zeros: bool = False
    # dataset (passed through to DatasetOptions)
    data: str = ""
    width: int = 0  # 0: the model's native size (512 SD1, 768 SD2-v, 1024 SDXL); see with_model_size
    height: int = 0
    repeats: int = 1
    template: str = "subject_filewords"
    caption_extension: str = ".txt"
    filename_word_regex: str = ""
    filename_join: str = " "
    shuffle_tags: bool = False
    tag_dropout: float = 0.0
    flip_probability: float = 0.0
    alpha_as_loss_weight: bool = False
    latent_sampling: str = "once"
    buckets: bool = False
    bucket_step: int = 64  # side lengths of aspect-ratio buckets are multiples of this
    template_dir: str = ""  # another folder of templates (the web UI's, when running in it)
    # outputs
    log_dir: str = "ti_trainer_output/textual_inversion"
    embeddings_dir: str = "ti_trainer_output/embeddings"
    save_format: str = "safetensors"
    save_every: int = 500
    keep_snapshots: int = 0  # keep only the newest N numbered snapshots of a run (0: keep all)
    overwrite: bool = False
    resume: bool = False
    # optimisation
    learn_rate: str = "0.005"
    max_steps: int = 1000
    batch_size: int = 1
    grad_accumulation: int = 1
    clamp_batch: bool = False
    weight_decay: float = 0.0
    clip_grad: str = "none"
    clip_grad_value: str = "0.1"
    precision: str = "auto"
    gradient_checkpointing: bool = False
    seed: int = 0
    # text encoding
    emphasis: str = "Original"
    clip_skip: int = 1
    # previews (empty prompt: the current training prompt; size 0: the training size)
    preview_every: int = 0
    preview_prompt: str = ""
    preview_negative_prompt: str = ""
    preview_steps: int = 20
    preview_cfg_scale: float = 7.0
    preview_seed: int = -1
    preview_width: int = 0
    preview_height: int = 0
    # validation (empty data: the training set at fixed seeds)
    validation_every: int = 0
    validation_data: str = ""
    validation_images: int = 4
    validation_timesteps: int = 4
    # console / logging
    progress_bar: bool = True
    tensorboard: bool = True
    device: str = ""

    def __post_init__(self) -> None:
        # learn_rate=0.005 from Python is the one-stage schedule "0.005", as in TOML and JSON
        for key in ("learn_rate", "clip_grad_value"):
            value = getattr(self, key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                setattr(self, key, str(value))

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, base: TrainConfig | None = None) -> TrainConfig:
        """A config from ``values`` (flat keys, or TOML-style tables) over ``base`` or the defaults."""
        problems: list[str] = []
        flat = _flatten(values, problems)
        known = {f.name: f for f in fields(cls)}
        changes: dict[str, Any] = {}
        for key, value in flat.items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(f"unknown option {key!r}{hint}")
                continue
            try:
                changes[key] = _coerce(key, value, type(getattr(cls(), key)))
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError(problems)
        return dataclasses.replace(base or cls(), **changes)

    @classmethod
    def from_toml(cls, path: str | Path, *, base: TrainConfig | None = None) -> TrainConfig:
        """Read a TOML file (flat keys; tables [dataset], [preview], [validation] are accepted)."""
        path = Path(path)
        tomllib = _toml_module()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError([f"config file {path} does not exist; check the path"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"config file {path} cannot be read: {exc}"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"config file {path} is not valid TOML: {exc}"]) from None
        config = cls.from_dict(data, base=base)
        given = _flatten(data, [])
        # paths written in a config file are relative to that file, not to where it is run from
        changes = {}
        for key in _PATH_FIELDS:
            value = given.get(key)
            if not isinstance(value, str) or not value or Path(value).is_absolute():
                continue
            if key == "model" and BUILT_IN_MODEL.fullmatch(value):  # tiny-sd1, random-sd15@3, ...
                continue
            changes[key] = str((path.parent / value).resolve())
        return dataclasses.replace(config, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """A short hash of the options that decide what each step computes (see resume)."""
        blob = json.dumps({k: getattr(self, k) for k in _HASHED}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def dataset_options(self, data_root: str | None = None):
        """The :class:`DatasetOptions` of the training (or another) folder."""
        from .dataset import DatasetOptions

        return DatasetOptions(
            data_root=Path(data_root if data_root is not None else self.data),
            # 0 ("the model's size") is resolved by with_model_size before training; a plain check of
            # the options (no model yet) uses the SD1 size
            width=self.width or SIZE_FOR_CHECKS,
            height=self.height or SIZE_FOR_CHECKS,
            repeats=self.repeats,
            template=self.template,
            caption_extension=self.caption_extension,
            filename_word_regex=self.filename_word_regex,
            filename_join=self.filename_join,
            shuffle_tags=self.shuffle_tags,
            tag_dropout=self.tag_dropout,
            flip_probability=self.flip_probability,
            alpha_as_loss_weight=self.alpha_as_loss_weight,
            latent_sampling=self.latent_sampling,
            buckets=self.buckets,
            bucket_step=self.bucket_step,
            extra_template_dirs=(Path(self.template_dir),) if self.template_dir else (),
        )

    # ------------------------------------------------------------------ checking

    def resolved_precision(self, device_type: str, bf16_supported: bool = False) -> str:
        """"fp32", "fp16" or "bf16" for ``device_type``: "auto" is bf16 on CUDA GPUs that compute it
        natively, else fp16 on CUDA, and fp32 elsewhere (see :mod:`.precision`)."""
        from .precision import resolve_name

        return resolve_name(self.precision, device_type, bf16_supported)

    def with_model_size(self, backend: Backend) -> tuple[TrainConfig, list[str]]:
        """This config with a width/height of 0 replaced by the model's native size, and warnings
        about sizes the model was not made for (SDXL below 768 px)."""
        native = int(getattr(backend, "default_size", 0) or SIZE_FOR_CHECKS)
        config = dataclasses.replace(self, width=self.width or native, height=self.height or native)
        warnings = []
        if backend.family == "sdxl" and native >= SDXL_NATIVE and min(config.width, config.height) < SDXL_SMALLEST:
            warnings.append(
                f"SDXL trains at {config.width}x{config.height}, below {SDXL_SMALLEST} px: SDXL was trained at "
                f"{SDXL_NATIVE}x{SDXL_NATIVE} and learns poorly from small images; use 1024 (or 0 = the model's size)"
            )
        return config, warnings

    def final_path(self) -> Path:
        from .outputs import final_embedding_path

        return final_embedding_path(Path(self.embeddings_dir), self.name, self.save_format)

    def validate(self, backend: Backend | None = None) -> list[str]:
        """Check every option, reading (never writing) the file system; returns warnings.

        Raises :class:`ConfigError` naming every problem and its fix. With ``backend`` the checks
        that need the model run too (precision on the device, the width of an embedding file).
        """
        from ..limits import name_problem, vectors_problem

        unusable = _unusable_paths(self)
        if unusable:  # nothing below may touch the file system with these
            raise ConfigError(unusable)
        problems: list[str] = [p for p in (name_problem(self.name), vectors_problem(self.vectors)) if p]
        warnings: list[str] = []
        if self.template_dir and not Path(self.template_dir).is_dir():
            problems.append(f"template folder {self.template_dir} does not exist; check --template-dir")
        if self.embedding_file and Path(self.embedding_file).is_file():
            problems.extend(_embedding_file_read_problems(Path(self.embedding_file)))
        if self.save_format not in SAVE_FORMATS:
            problems.append(f"save_format {self.save_format!r} is unknown; use one of {', '.join(SAVE_FORMATS)}")
        elif not problems:
            problems.extend(target_problems(self))
        if self.embedding_file and not Path(self.embedding_file).is_file():
            problems.append(f"embedding file {self.embedding_file} does not exist; check the path")
        if self.device:
            problems.extend(p for p in [device_problem(self.device)] if p)
        problems.extend(self._size_problems())
        problems.extend(self._number_problems())
        problems.extend(self._choice_problems())
        problems.extend(self._folder_problems(warnings, problems))
        if backend is not None:
            problems.extend(self._model_problems(backend))
        if problems:
            raise ConfigError(problems)
        return warnings

    def _size_problems(self) -> list[str]:
        problems = []
        for key in ("width", "height", "preview_width", "preview_height"):
            value = getattr(self, key)
            if value and (value < 8 or value % 8):
                zero = "the training size" if key.startswith("preview") else "the model's native size"
                problems.append(
                    f"{key} {value} is not a positive multiple of 8; use e.g. "
                    f"{min(MAX_SIDE, max(8, round(value / 8) * 8))} (0 = {zero})"
                )
        problems.extend(size_problems(self.width, self.height))
        preview = (self.preview_width or self.width, self.preview_height or self.height)
        problems.extend(size_problems(*preview, what="preview"))
        return problems

    def _number_problems(self) -> list[str]:
        problems = []
        for key, (low, high, meaning) in NUMBER_LIMITS.items():
            value = getattr(self, key)
            if value < low:
                problems.append(f"{key} {value} must be at least {low}{meaning}")
            elif value > high:
                problems.append(f"{key} {value} must be at most {high}{meaning}")
        for key in ("tag_dropout", "flip_probability"):
            if not 0.0 <= getattr(self, key) <= 1.0:  # also refuses NaN
                problems.append(f"{key} {getattr(self, key)} must be between 0 and 1")
        if not 0.0 <= self.weight_decay < math.inf:
            problems.append(f"weight_decay {self.weight_decay} must be a finite number, 0 or more")
        if not math.isfinite(self.preview_cfg_scale):
            problems.append(f"preview_cfg_scale {self.preview_cfg_scale} must be a finite number (e.g. 7)")
        if not MIN_SEED <= self.seed <= MAX_SEED:
            problems.append(f"seed {self.seed} must be between {MIN_SEED} and {MAX_SEED}")
        if not (self.preview_seed == -1 or MIN_SEED <= self.preview_seed <= MAX_SEED):
            problems.append(f"preview_seed {self.preview_seed} must be -1 (the training seed) or a seed up to {MAX_SEED}")
        problems.extend(_schedule_problem("learn_rate", self.learn_rate, max(self.max_steps, 1)))
        if self.clip_grad in CLIP_MODES and self.clip_grad != "none":
            problems.extend(
                _schedule_problem("clip_grad_value", self.clip_grad_value, max(self.max_steps, 1), allow_zero=True)
            )
        return problems

    def _choice_problems(self) -> list[str]:
        problems = []
        for key, choices in (("latent_sampling", LATENT_SAMPLING), ("clip_grad", CLIP_MODES),
                             ("precision", PRECISIONS), ("emphasis", EMPHASIS_MODES)):  # fmt: skip
            if getattr(self, key) not in choices:
                problems.append(f"{key} {getattr(self, key)!r} is unknown; use one of {', '.join(choices)}")
        if self.template and _looks_like_path(self.template):
            problems.extend(_small_text_file_problems(Path(self.template), "template"))
        return problems

    def _folder_problems(self, warnings: list[str], found: list[str]) -> list[str]:
        """The training folder and the held-out validation folder: both exist and hold images, the
        batch fits, the latent cache fits in memory; then (only when all else is fine) the template,
        regex and image headers are read."""
        problems: list[str] = []
        if not self.data:
            problems.append("no dataset folder; pass --data DIR (a folder of images)")
        n_images = _folder_images_problem(self.data, "dataset folder", "--data", problems) if self.data else 0
        n_held_out = 0
        if self.validation_data:
            n_held_out = _folder_images_problem(
                self.validation_data, "validation folder", "--validation-data (empty = the training set)", problems
            )
        if n_images:
            n_examples = n_images * max(self.repeats, 1)
            if self.batch_size > n_examples:
                msg = f"batch size {self.batch_size} is larger than the dataset ({n_examples} examples per epoch)"
                if self.clamp_batch:
                    warnings.append(f"{msg}; clamped to {n_examples}")
                else:
                    problems.append(f"{msg}; lower --batch-size or pass --clamp-batch")
        if problems or found:
            return problems
        problems.extend(self._memory_problems(n_images + n_held_out, warnings))
        for folder in [self.data, *([self.validation_data] if self.validation_data else [])]:
            problems.extend(self._dataset_problems(folder))
        if not problems:
            warnings.extend(self._image_warnings())
        return problems

    def _memory_problems(self, n_images: int, warnings: list[str]) -> list[str]:
        """The latent cache lives in RAM: refuse one that cannot fit, warn about one that nearly does."""
        need = latent_cache_bytes(n_images, self.width or SIZE_FOR_CHECKS, self.height or SIZE_FOR_CHECKS,
                                  flips=self.flip_probability > 0)  # fmt: skip
        have = physical_memory_bytes()
        if not have or need <= have // 2:
            return []
        what = (
            f"caching the latents of {n_images} images at {self.width or SIZE_FOR_CHECKS}x"
            f"{self.height or SIZE_FOR_CHECKS}{' with flips' if self.flip_probability > 0 else ''} "
            f"needs about {_bytes(need)} of RAM; this machine has {_bytes(have)}"
        )
        if need > have * 0.9:
            return [f"{what}: lower --width/--height, use fewer images or no flips"]
        warnings.append(f"{what}: training may swap; lower --width/--height if it does")
        return []

    def _image_warnings(self) -> list[str]:
        """Images the training size makes much bigger (blurry) and captions too long to use whole."""
        from .captions import MAX_CAPTION_CHARS
        from .images import image_size_notes

        size = (self.width or SIZE_FOR_CHECKS, self.height or SIZE_FOR_CHECKS)
        notes = image_size_notes(Path(self.data), size)
        long = _long_captions(Path(self.data), self.caption_extension, MAX_CAPTION_CHARS)
        if long:
            shown = ", ".join(f"{p.name} ({n:,} bytes)" for p, n in long[:3])
            more = f" and {len(long) - 3} more" if len(long) > 3 else ""
            notes.append(
                f"{len(long)} caption file(s) are longer than {MAX_CAPTION_CHARS} characters: {shown}{more}; only "
                f"the first {MAX_CAPTION_CHARS} characters are used (every 75 tokens cost one more text-encoder pass)"
            )
        return [n for n in notes if n]

    def _model_problems(self, backend: Backend) -> list[str]:
        from .precision import bf16_native, precision_problem

        problems = []
        if self.precision in PRECISIONS:
            problem = precision_problem(
                self.precision, backend.device.type, bf16_is_native=bf16_native(backend.device),
                weight_dtype=backend.dtype, fp32_hint=getattr(backend, "fp32_hint", ""),
            )  # fmt: skip
            if problem:
                problems.append(problem)
        if self.embedding_file and Path(self.embedding_file).is_file():
            problems.extend(_embedding_file_problems(Path(self.embedding_file), backend))
        elif self.resume and self.save_format in SAVE_FORMATS and self.name and self.final_path().is_file():
            problems.extend(_embedding_file_problems(self.final_path(), backend))
        return problems

    def _dataset_problems(self, folder: str) -> list[str]:
        from .dataset import DatasetError, check_options

        try:
            check_options(self.dataset_options(folder))
        except DatasetError as exc:
            return [str(exc)]
        return []


def effective_batch_size(config: TrainConfig, n_examples: int) -> tuple[int, str | None]:
    """The batch size to train with for ``n_examples`` per epoch, and a warning when clamped.

    Raises ConfigError when the batch is larger than the dataset and clamping is off.
    """
    if config.batch_size <= n_examples:
        return config.batch_size, None
    msg = f"batch size {config.batch_size} is larger than the dataset ({n_examples} examples per epoch)"
    if config.clamp_batch:
        return n_examples, f"{msg}; clamped to {n_examples}"
    raise ConfigError([f"{msg}; lower --batch-size or pass --clamp-batch"])


def embedding_fit_problems(vectors: dict[str, Any], backend: Backend, what: str) -> list[str]:
    """Problems when per-encoder ``vectors`` do not fit ``backend``'s text encoders."""
    widths = backend.encoder_widths
    have = {k: int(v.shape[-1]) for k, v in vectors.items()}
    if set(have) != set(widths) or any(have[k] != widths[k] for k in widths):
        if len(have) == 1 and len(widths) == 1:
            shown, need = str(next(iter(have.values()))), str(next(iter(widths.values())))
        else:
            shown = ", ".join(f"{k} {w}" for k, w in have.items())
            need = ", ".join(f"{k} {w}" for k, w in widths.items())
        return [
            f"{what} has vectors of width {shown} but the {backend.family} model's text encoder takes {need}; "
            "it was made for another model family - pick a matching model or start a new embedding"
        ]
    return []


def _embedding_file_problems(path: Path, backend: Backend) -> list[str]:
    from ..embedding import EmbeddingFormatError, load_embedding
    from .create import vectors_for_backend

    try:
        emb = load_embedding(path)
    except EmbeddingFormatError as exc:
        return [f"embedding file cannot be read: {exc}"]
    try:
        vectors = vectors_for_backend(emb, backend)
    except ValueError as exc:
        return [str(exc)]
    return embedding_fit_problems(vectors, backend, f"embedding file {path}")


def _schedule_problem(key: str, text: str, max_steps: int, *, allow_zero: bool = False) -> list[str]:
    from ..schedule import LearnRateSchedule

    try:
        LearnRateSchedule.parse(text, max_steps, allow_zero=allow_zero)
    except ValueError as exc:
        return [f"{key} schedule {text!r} is invalid: {exc}"]
    return []


def size_problems(width: int, height: int, *, what: str = "training") -> list[str]:
    """Why ``width`` x ``height`` is too big to train (or preview) at: per side and in total (0 = the
    model's native size, always fine). The one size rule of the CLI, the API, the tab and the benchmark."""
    problems = []
    sides = [(key, value) for key, value in (("width", width), ("height", height)) if value > MAX_SIDE]
    for key, value in sides:
        problems.append(
            f"{what} {key} {value} is larger than {MAX_SIDE} px; use at most {MAX_SIDE} (0 = the model's native size)"
        )
    if not sides and width * height > MAX_PIXELS:
        problems.append(
            f"{what} size {width}x{height} = {width * height} pixels is more than {MAX_PIXELS} (2048x2048, 4x "
            f"SDXL's native 1024x1024) and would exhaust the memory; lower the width or height"
        )
    return problems


def latent_cache_bytes(n_images: int, width: int, height: int, *, flips: bool = False, channels: int = 4) -> int:
    """RAM the cached latents of ``n_images`` take (float32 mean and std per image, twice with flips)."""
    cells = (width // 8) * (height // 8)
    return n_images * (2 if flips else 1) * 2 * channels * cells * 4


def _bytes(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def physical_memory_bytes() -> int | None:
    """This machine's RAM, or None where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def device_problem(device: str) -> str | None:
    """Why torch cannot use ``device`` here (a message with the fix), or None."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as exc:
        return f"device {device!r} is not a torch device ({str(exc).splitlines()[0]}); use cpu, cuda or cuda:N"
    if dev.type == "cuda":
        if not torch.backends.cuda.is_built():
            return (
                f"device {device!r}: this torch ({torch.__version__}) is a CPU-only build; use --device cpu, or "
                "install a CUDA build of torch"
            )
        if not torch.cuda.is_available():
            return f"device {device!r}: no CUDA GPU is visible (check the driver and CUDA_VISIBLE_DEVICES); use --device cpu"
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            return f"device {device!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            return f"device {device!r}: Apple's MPS is not available here; use --device cpu"
    elif dev.type != "cpu":
        return f"device {device!r}: only cpu, cuda[:N] and mps are supported"
    return None


def target_problems(config: TrainConfig) -> list[str]:
    """Whether the embedding to write may be written (see :mod:`.target`)."""
    from .target import target_problems as problems

    return problems(config)


def _unusable_paths(config: TrainConfig) -> list[str]:
    """Paths no file system accepts (a NUL character), named before anything looks them up."""
    return [
        f"{key} {getattr(config, key)!r} contains a NUL character; give a real path"
        for key in (*_PATH_FIELDS, "template", "caption_extension")
        if "\x00" in getattr(config, key)
    ]


def _embedding_file_read_problems(path: Path) -> list[str]:
    """An embedding file that cannot be read is refused before the model is loaded."""
    from ..embedding import EmbeddingFormatError, load_embedding

    try:
        load_embedding(path)
    except EmbeddingFormatError as exc:
        return [f"embedding file cannot be read: {exc}"]
    return []


def _folder_images_problem(folder: str, what: str, flag: str, problems: list[str]) -> int:
    """The number of images in ``folder``; a problem is added when it is not a folder of images."""
    path = Path(folder)
    if not path.is_dir():
        problems.append(f"{what} {folder} does not exist or is not a folder; check {flag}")
        return 0
    n = _count_images(path)
    if not n:
        problems.append(f"{what} {folder} has no images (png, jpg, webp); add some or check {flag}")
    return n


def _looks_like_path(text: str) -> bool:
    path = Path(text)
    return path.suffix != "" or len(path.parts) > 1


MAX_TEXT_FILE_BYTES = 1024 * 1024  # a template is a few lines of prompts


def _small_text_file_problems(path: Path, what: str) -> list[str]:
    """A file read whole as text (a template) must be a small regular file."""
    try:
        size = path.expanduser().stat().st_size
    except OSError:
        return []  # missing: the dataset check says so, with the template names
    if size > MAX_TEXT_FILE_BYTES:
        return [f"{what} file {path} is {size // 1024} KiB; a {what} is a text file of a few prompt lines (at most 1 MiB)"]
    return []


def _long_captions(folder: Path, extension: str, limit: int) -> list[tuple[Path, int]]:
    """Caption files of ``folder`` whose text is longer than ``limit`` characters, with their size in bytes."""
    from .captions import normalise_extension, read_caption_file
    from .images import IMAGE_EXTENSIONS, DatasetError

    try:
        ext = normalise_extension(extension)
        images = [f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS]
    except (OSError, DatasetError):
        return []
    long = []
    for image in sorted(images):
        caption = image.with_suffix(ext)
        try:
            if caption.is_file() and caption.stat().st_size > limit:
                if len(read_caption_file(caption, limit=limit + 1)) > limit:
                    long.append((caption, caption.stat().st_size))
        except (OSError, UnicodeDecodeError):
            continue  # reported by the dataset check
    return long


def _count_images(folder: Path) -> int:
    from .images import IMAGE_EXTENSIONS

    try:
        return sum(1 for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
    except OSError:
        return 0


def _toml_module():
    """``tomllib`` (Python 3.11+) or ``tomli``; imported only when a TOML file is read, so that a
    missing ``tomli`` on Python 3.10 (the web UI) never stops the extension from loading."""
    try:
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            import tomli as tomllib
    except ModuleNotFoundError:
        raise ConfigError(
            ["reading a TOML config needs the 'tomli' package on Python 3.10; pip install tomli"]
        ) from None
    return tomllib


def _flatten(values: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            if key not in _TABLE_PREFIX:
                problems.append(f"unknown table [{key}]; use flat keys or [{'], ['.join(_TABLE_PREFIX)}]")
                continue
            prefix = _TABLE_PREFIX[key]
            for sub, v in value.items():
                name = sub if sub.startswith(prefix) else prefix + sub
                flat[name.replace("-", "_")] = v
        else:
            flat[key.replace("-", "_")] = value
    return flat


def _coerce(key: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"option {key!r} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"option {key!r} must be an integer, got {value!r}")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"option {key!r} must be a number, got {value!r}")
    if key in ("learn_rate", "clip_grad_value") and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # learn_rate = 0.005 in TOML is fine
    if isinstance(value, str):
        return value
    raise ValueError(f"option {key!r} must be a string, got {value!r}")
