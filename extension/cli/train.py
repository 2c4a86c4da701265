"""``python -m extension train``: train an embedding from a folder of images (or a TOML config)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from ..training.config import (
    CLIP_MODES,
    EMPHASIS_MODES,
    LATENT_SAMPLING,
    PRECISIONS,
    SAVE_FORMATS,
    ConfigError,
    TrainConfig,
)
from ..training.target import with_existing_format
from .errors import describe_os_error
from .signals import signals_interrupt

HELP = "train a textual-inversion embedding on a folder of images"

EXAMPLES = """examples:
  python -m extension train --data ./photos --name my-cat --init-text cat --vectors 4 \\
      --learn-rate "0.005:100, 1e-3:1000, 1e-5" --steps 2000 --batch-size 2 --grad-accumulation 2
  python -m extension train --config my-cat.toml --steps 3000 --resume
"""

# option -> (help, choices); every TrainConfig field becomes --<field-with-dashes>
OPTION_HELP: dict[str, str] = {
    "name": "embedding name: the word that triggers it in prompts and its file name",
    "model": "model: tiny-sd1 / tiny-sd2 / tiny-sdxl, random-sd15 / random-sd2v / random-sdxl (full size, "
    "random weights), a diffusers folder or a .safetensors checkpoint",
    "embedding_file": "continue training this embedding file (its step count and schedule continue)",
    "init_text": "initialisation text, spread over the vectors as the web UI does (empty: zeros)",
    "vectors": "number of vectors per token",
    "zeros": "start from zero vectors instead of the init text",
    "data": "folder of training images (png, jpg, webp; captions from same-name .txt files)",
    "width": "training width in pixels, a multiple of 8 (default 0: the model's native size, 512 SD1, 768 SD2-v, 1024 SDXL)",
    "height": "training height in pixels, a multiple of 8 (default 0: the model's native size)",
    "repeats": "times each image appears per epoch",
    "template": "prompt template: subject, style, subject_filewords, style_filewords, none, or a .txt path",
    "caption_extension": "extension of caption files",
    "filename_word_regex": "regex picking words from file names used as captions",
    "filename_join": "string joining the words picked from file names",
    "shuffle_tags": "shuffle the comma-separated tags of [filewords]",
    "tag_dropout": "probability of dropping each tag of [filewords]",
    "flip_probability": "probability of a horizontal flip of each example",
    "alpha_as_loss_weight": "use the alpha channel of RGBA images as a per-pixel loss weight",
    "latent_sampling": "latent sampling: once, deterministic or random",
    "buckets": "train at variable sizes with aspect-ratio buckets (max area width*height)",
    "bucket_step": "bucket side lengths are multiples of this many pixels",
    "template_dir": "another folder of prompt templates to choose --template names from",
    "log_dir": "log folder; a run writes to <log dir>/<date>/<name>/",
    "embeddings_dir": "folder for the final embedding (and its .resume state)",
    "save_format": "file format of saved embeddings",
    "save_every": "save a numbered copy every N steps (0: off)",
    "keep_snapshots": "keep only the newest N numbered copies of this run (0: keep all)",
    "overwrite": "replace an existing embedding of the same name",
    "resume": "continue the embedding <embeddings dir>/<name> with its saved optimizer state",
    "learn_rate": 'learn rate schedule, e.g. "0.005:100, 1e-3:1000, 1e-5"',
    "max_steps": "total number of optimizer steps (also --steps)",
    "batch_size": "examples per micro-batch",
    "grad_accumulation": "micro-batches per optimizer step",
    "clamp_batch": "clamp a batch size larger than the dataset instead of stopping",
    "weight_decay": "AdamW weight decay",
    "clip_grad": "gradient clipping: none, value or norm",
    "clip_grad_value": 'clipping limit schedule, e.g. "0.1" or "1:100, 0.1"',
    "precision": "auto (bf16/fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16",
    "gradient_checkpointing": "trade compute for memory in the denoiser",
    "seed": "random seed (the run is deterministic on the CPU)",
    "emphasis": "emphasis mode of (weights:1.2) in prompts",
    "clip_skip": "CLIP skip (1 = last layer)",
    "preview_every": "render a preview image every N steps (0: off)",
    "preview_prompt": "preview prompt (empty: the current training prompt)",
    "preview_negative_prompt": "preview negative prompt",
    "preview_steps": "sampling steps of a preview",
    "preview_cfg_scale": "CFG scale of a preview",
    "preview_seed": "preview seed (-1: the training seed)",
    "preview_width": "preview width (0: the training width)",
    "preview_height": "preview height (0: the training height)",
    "validation_every": "compute a validation loss every N steps (0: off)",
    "validation_data": "held-out image folder for validation (empty: the training set at fixed seeds)",
    "validation_images": "number of images in the validation loss",
    "validation_timesteps": "fixed timesteps per validation image",
    "progress_bar": "show a progress bar",
    "tensorboard": "also log to tensorboard when it is installed",
    "device": "torch device (default: cuda if available, else cpu)",
}
CHOICES = {
    "save_format": SAVE_FORMATS,
    "clip_grad": CLIP_MODES,
    "precision": PRECISIONS,
    "emphasis": EMPHASIS_MODES,
    "latent_sampling": LATENT_SAMPLING,
}
ALIASES = {"max_steps": ["--steps"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLES
    parser.add_argument("--config", metavar="FILE.toml", help="read options from a TOML file (flags override it)")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = OPTION_HELP.get(f.name, f.name.replace("_", " "))
        flags = [flag, *ALIASES.get(f.name, [])]
        if isinstance(default, bool):
            parser.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            continue
        kind = type(default)
        parser.add_argument(
            *flags,
            dest=f.name,
            type=kind,
            default=None,
            choices=CHOICES.get(f.name),
            metavar=None if f.name in CHOICES else f.name.split("_")[-1].upper(),
            help=_with_default(help_text, default),
        )


def _with_default(help_text: str, default: object) -> str:
    """The help text with its default, unless the text already says it (or there is none to say)."""
    if "default" in help_text or default == "":
        return help_text
    return f"{help_text} (default: {default!r})"


def say(message: str) -> None:
    """A message on stderr on a line of its own, above the progress bar when one is drawn."""
    try:
        from tqdm import tqdm
    except ImportError:
        print(message, file=sys.stderr, flush=True)
        return
    tqdm.write(message, file=sys.stderr)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the TOML file, then the flags given on the command line."""
    base = TrainConfig.from_toml(args.config) if getattr(args, "config", None) else TrainConfig()
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    return with_existing_format(TrainConfig.from_dict(given, base=base))


def print_result(result, out=None) -> None:
    """Where everything went."""
    out = out or sys.stdout
    print(result.message, file=out)
    if result.embedding_path:
        print(f"  embedding:  {result.embedding_path}", file=out)
    by_kind = {"card": None, "csv": None, "plot": None}
    for path in result.files:
        path = Path(path)
        if path.parent.name == "image_embeddings":
            by_kind["card"] = path
        elif path.name == "loss.csv":
            by_kind["csv"] = path
        elif path.name == "loss.png":
            by_kind["plot"] = path
    labels = {"card": "PNG card:  ", "csv": "loss CSV:  ", "plot": "loss plot: "}
    for kind, path in by_kind.items():
        if path is not None:
            print(f"  {labels[kind]} {path}", file=out)
    if result.run_dir:
        print(f"  run folder: {result.run_dir}", file=out)


def exit_code(reason: str) -> int:
    return {"interrupted": 130, "nan": 1}.get(reason, 0)


def run(args: argparse.Namespace) -> int:
    from ..training.distributed import world_from_env

    world = world_from_env()
    if world.distributed:  # started by torchrun with several processes
        from .train_distributed import run_distributed

        return run_distributed(args, world)
    try:
        config = config_from_args(args)
        config.validate()  # fail fast, before loading a model
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    backend = _load(config)
    if backend is None:
        return 2
    from ..training.loop import TrainCallbacks, train

    try:
        with signals_interrupt(say):
            result = train(config, backend, callbacks=TrainCallbacks(on_message=say))
    except ValueError as exc:  # ConfigError, DatasetError, EmbeddingFormatError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a folder that cannot be written...
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    print_result(result)
    return exit_code(result.reason)


def _load(config: TrainConfig):
    """The model of ``config`` on its device, or None after printing why it cannot be loaded."""
    import torch

    from ..backends import ModelLoadError, load_backend
    from ..backends.loading import default_device, default_dtype

    try:
        device = torch.device(config.device) if config.device else default_device()
        # the weights are loaded in the precision the run computes in (float32 for fp32)
        return load_backend(config.model, device=device, dtype=default_dtype(device, config.precision))
    except (ModelLoadError, ValueError, OSError, RuntimeError) as exc:
        print(f"error: cannot load model {config.model!r}: {describe_os_error(exc)}", file=sys.stderr)
        return None
