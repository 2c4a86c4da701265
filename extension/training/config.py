"""Every option of a training run, loadable from TOML, checked before any work starts."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..backends.base import Backend
from ..embedding.names import sanitize_name
from .precision import PRECISIONS, bf16_native, precision_problem, resolve_name

CLIP_MODES = ("none", "value", "norm")
SAVE_FORMATS = ("safetensors", "pt")
EMPHASIS_MODES = ("Original", "No norm", "Ignore", "None")
LATENT_SAMPLING = ("once", "deterministic", "random")
SIZE_FOR_CHECKS = 512  # the size option checks assume before the model is known
SDXL_NATIVE = 1024
SDXL_SMALLEST = 768  # below this SDXL training gets a warning

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
            if key == "model" and value.startswith("tiny-"):
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
        """Check every option without touching the file system; returns warnings.

        Raises :class:`ConfigError` naming every problem and its fix. With ``backend`` the checks
        that need the model run too (precision on the device, the width of an embedding file).
        """
        problems: list[str] = []
        warnings: list[str] = []
        p = problems.append

        # --- name and files
        if not self.name:
            p("no embedding name; pass --name NAME")
        elif sanitize_name(self.name) != self.name:
            p(
                f"embedding name {self.name!r} is not a safe file name; use only letters, digits and "
                f"'._- ' (e.g. {sanitize_name(self.name)!r})"
            )
        if self.save_format not in SAVE_FORMATS:
            p(f"save_format {self.save_format!r} is unknown; use one of {', '.join(SAVE_FORMATS)}")
        elif self.name and sanitize_name(self.name) == self.name:
            final = self.final_path()
            in_place = bool(self.embedding_file) and _same_file(Path(self.embedding_file), final)
            if self.resume and self.embedding_file and not in_place:
                p("--resume and --embedding-file both given; use one (resume continues the embedding in the embeddings folder)")
            elif self.resume and not final.is_file():
                p(f"nothing to resume: {final} does not exist; drop --resume to start a new embedding")
            elif final.exists() and not (self.resume or self.overwrite or in_place):
                p(f"{final} already exists; pass --resume to continue training it or --overwrite to replace it")
        if self.embedding_file and not Path(self.embedding_file).is_file():
            p(f"embedding file {self.embedding_file} does not exist; check the path")

        # --- dataset
        dataset_ok = False
        if not self.data:
            p("no dataset folder; pass --data DIR (a folder of images)")
        else:
            data = Path(self.data)
            if not data.is_dir():
                p(f"dataset folder {data} does not exist or is not a folder; check --data")
            elif not _count_images(data):
                p(f"dataset folder {data} has no images (png, jpg, webp); add some or check --data")
            else:
                dataset_ok = True
                n_examples = _count_images(data) * max(self.repeats, 1)
                if self.batch_size > n_examples:
                    msg = (
                        f"batch size {self.batch_size} is larger than the dataset "
                        f"({n_examples} examples per epoch)"
                    )
                    if self.clamp_batch:
                        warnings.append(f"{msg}; clamped to {n_examples}")
                    else:
                        p(f"{msg}; lower --batch-size or pass --clamp-batch")
        for key in ("width", "height"):
            value = getattr(self, key)
            if value and (value < 8 or value % 8):
                p(
                    f"{key} {value} is not a positive multiple of 8; use e.g. {max(8, round(value / 8) * 8)} "
                    "(0 = the model's native size)"
                )
        for key in ("preview_width", "preview_height"):
            value = getattr(self, key)
            if value and (value < 0 or value % 8):
                p(f"{key} {value} is not a multiple of 8; use e.g. {max(8, round(value / 8) * 8)} (0 = training size)")
        if self.repeats < 1:
            p(f"repeats {self.repeats} must be at least 1")
        if not 0.0 <= self.tag_dropout <= 1.0:
            p(f"tag_dropout {self.tag_dropout} must be between 0 and 1")
        if not 0.0 <= self.flip_probability <= 1.0:
            p(f"flip_probability {self.flip_probability} must be between 0 and 1")
        if self.latent_sampling not in LATENT_SAMPLING:
            p(f"latent_sampling {self.latent_sampling!r} is unknown; use one of {', '.join(LATENT_SAMPLING)}")
        if dataset_ok and not problems:  # template, regex and image headers (reads only)
            problems.extend(self._dataset_problems(self.data))
        if self.validation_data and not Path(self.validation_data).is_dir():
            p(f"validation folder {self.validation_data} does not exist; check --validation-data (empty = training set)")

        # --- optimisation
        for key in ("max_steps", "batch_size", "grad_accumulation", "vectors", "validation_images", "validation_timesteps"):
            if getattr(self, key) < 1:
                p(f"{key} {getattr(self, key)} must be at least 1")
        for key in ("save_every", "preview_every", "validation_every", "preview_steps"):
            if getattr(self, key) < 0:
                p(f"{key} {getattr(self, key)} must be 0 (off) or positive")
        if self.weight_decay < 0:
            p(f"weight_decay {self.weight_decay} must not be negative")
        problems.extend(_schedule_problem("learn_rate", self.learn_rate, max(self.max_steps, 1)))
        if self.clip_grad not in CLIP_MODES:
            p(f"clip_grad {self.clip_grad!r} is unknown; use one of {', '.join(CLIP_MODES)}")
        elif self.clip_grad != "none":
            problems.extend(
                _schedule_problem("clip_grad_value", self.clip_grad_value, max(self.max_steps, 1), allow_zero=True)
            )
        if self.precision not in PRECISIONS:
            p(f"precision {self.precision!r} is unknown; use one of {', '.join(PRECISIONS)}")
        if self.emphasis not in EMPHASIS_MODES:
            p(f"emphasis {self.emphasis!r} is unknown; use one of {', '.join(EMPHASIS_MODES)}")
        if self.clip_skip < 1:
            p(f"clip_skip {self.clip_skip} must be at least 1 (1 = last layer)")

        # --- model-dependent
        if backend is not None:
            if self.precision in PRECISIONS:
                problem = precision_problem(
                    self.precision, backend.device.type, bf16_is_native=bf16_native(backend.device),
                    weight_dtype=backend.dtype, fp32_hint=getattr(backend, "fp32_hint", ""),
                )  # fmt: skip
                if problem:
                    p(problem)
            if self.embedding_file and Path(self.embedding_file).is_file():
                problems.extend(_embedding_file_problems(Path(self.embedding_file), backend))
            elif self.resume and self.save_format in SAVE_FORMATS and self.name and self.final_path().is_file():
                problems.extend(_embedding_file_problems(self.final_path(), backend))

        if problems:
            raise ConfigError(problems)
        return warnings

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


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


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
