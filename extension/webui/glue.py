"""Pure helpers of the web UI glue: no ``modules.*`` import, so they are tested without the host.

Each one answers a small question the host backend or the host adapter has to answer from the
host's objects (class names, option values, attribute values) and is kept here so that the answer
can be checked on plain inputs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from ..backends.base import LatentDistribution, SizeConditioning, VectorSet

# --------------------------------------------------------------------------- model description

# The web UI's hijacked text encoders (modules/sd_hijack_clip.py, sd_hijack_open_clip.py) by class
# name, and the encoder key our vectors use for them. SD2's OpenCLIP ViT-H is "clip_g" for us
# (base.py), although the host stores its single tensor without a key.
ENCODER_KEY_BY_CLASS = {
    "FrozenCLIPEmbedderWithCustomWords": "clip_l",
    "FrozenCLIPEmbedderForSDXLWithCustomWords": "clip_l",
    "FrozenOpenCLIPEmbedderWithCustomWords": "clip_g",
    "FrozenOpenCLIPEmbedder2WithCustomWords": "clip_g",
}
FAMILY_KEYS = {"sd1": ("clip_l",), "sd2": ("clip_g",), "sdxl": ("clip_l", "clip_g")}


class HostModelError(RuntimeError):
    """The web UI's loaded model or its launch options cannot be trained on; the message says why
    and what to do instead."""


FORGE_MESSAGE = (
    "training on Forge's model engine is not supported yet: Forge replaces the web UI's ldm/sgm model "
    "classes that the trainer drives. Use AUTOMATIC1111 v1.10 for training inside the web UI, or train "
    "standalone with `python -m extension train --model <checkpoint.safetensors>`; the tab's create, "
    "share, import and prompt tools work on Forge"
)


def is_forge(loaded_modules: Iterable[str]) -> bool:
    """Whether the host is Forge (it ships the ``modules_forge`` package next to ``modules``)."""
    return any(name == "modules_forge" or name.startswith("modules_forge.") for name in loaded_modules)


def model_family(*, is_sdxl: bool, is_sd2: bool, is_sd1: bool, has_conditioner: bool) -> str:
    """Our family name for the host's model flags (``sd_models.set_model_type`` sets them)."""
    if is_sdxl or has_conditioner:
        return "sdxl"
    if is_sd2:
        return "sd2"
    if is_sd1:
        return "sd1"
    raise HostModelError(
        "the loaded checkpoint is neither SD1, SD2 nor SDXL (e.g. Alt-Diffusion or an SD3/Flux model); "
        "load an SD1.x, SD2.x or SDXL checkpoint to train an embedding"
    )


def encoder_keys(class_names: Sequence[str], family: str) -> list[str]:
    """The encoder key of each hijacked text encoder, checked against what ``family`` needs."""
    keys = []
    for name in class_names:
        if name not in ENCODER_KEY_BY_CLASS:
            raise HostModelError(
                f"the loaded model's text encoder {name} is not one TI Trainer knows; "
                "load a standard SD1.x, SD2.x or SDXL checkpoint"
            )
        keys.append(ENCODER_KEY_BY_CLASS[name])
    if tuple(keys) != FAMILY_KEYS[family]:
        what = "an SDXL refiner" if family == "sdxl" and keys == ["clip_g"] else f"a {family} model"
        raise HostModelError(
            f"the loaded model ({what}) has text encoders {keys}, not {list(FAMILY_KEYS[family])}; "
            "embeddings are trained on the base model: load an SD1.x, SD2.x or SDXL base checkpoint"
        )
    return keys


def prediction_type(parameterization: str) -> str:
    """The host's ``parameterization`` ("eps" / "v") as our :class:`NoiseSchedule` names it."""
    table = {"eps": "epsilon", "v": "v_prediction"}
    if parameterization not in table:
        raise HostModelError(
            f"the loaded model predicts {parameterization!r}; TI Trainer trains eps- and v-prediction models only"
        )
    return table[parameterization]


def unsupported_conditioning(
    conditioning_key: str | None, cond_stage_key: str | None, is_depth: bool
) -> str | None:
    """Why a model with these ldm conditioning settings cannot be trained, or None when it can.

    Text-to-image (``crossattn``) and inpainting (``hybrid``) models are supported; instruct-pix2pix,
    depth and unCLIP models need image conditioning a textual inversion has no data for.
    """
    if cond_stage_key == "edit":
        return "instruct-pix2pix models need a source image for every training image"
    if is_depth:
        return "depth-to-image models need a depth map for every training image"
    if conditioning_key in ("crossattn", "hybrid", None):
        return None
    return f"models with {conditioning_key!r} conditioning (e.g. unCLIP) are not supported"


def low_vram_problem(*, lowvram: bool, medvram: bool, medvram_sdxl: bool, is_sdxl: bool) -> str | None:
    """The message refusing to train under the web UI's low-VRAM modes, or None.

    Those modes move each part of the model to the GPU for its forward pass and back afterwards;
    a backward pass through the text encoder and the UNet is not planned for in that scheme.
    """
    flag = (
        "--lowvram"
        if lowvram
        else "--medvram"
        if medvram
        else "--medvram-sdxl"
        if medvram_sdxl and is_sdxl
        else None
    )
    if flag is None:
        return None
    return (
        f"TI Trainer cannot train while the web UI runs with {flag}: that mode moves model parts "
        "between CPU and GPU during each forward pass, which backpropagation through the UNet does "
        f"not survive. Restart the web UI without {flag} to train (generation still works with it)."
    )


# --------------------------------------------------------------------------- attention

# Attention optimizations of the web UI (names of modules/sd_hijack_optimizations.py) whose
# gradients are plain attention's: both run torch's scaled_dot_product_attention, whose gradient
# w.r.t. an injected input tests/test_attention_grads.py compares with softmax attention.
GRAD_SAFE_ATTENTION = ("sdp-no-mem", "sdp")


def training_attention(current: str | None, available: Iterable[str]) -> str | None:
    """Which attention optimization to switch to for training, or None to keep the current one.

    The web UI's own trainer turns every optimization off; we keep a gradient-safe one on and
    switch any other (xformers, Doggettx, sub-quadratic, ...) to torch's SDP for the duration,
    falling back to plain attention ("None") when SDP is missing.
    """
    if current in GRAD_SAFE_ATTENTION or current is None or current == "":
        return None
    names = list(available)
    for name in GRAD_SAFE_ATTENTION:
        if name in names:
            return name
    return "None"


# --------------------------------------------------------------------------- tensors


def vae_posterior(moments: torch.Tensor) -> LatentDistribution:
    """The diagonal Gaussian of a VAE's ``(B, 2C, h, w)`` moments (mean, log-variance halves),
    with the log-variance clamped to [-30, 20] as latent-diffusion's posterior does."""
    if moments.ndim != 4 or moments.shape[1] % 2:
        raise ValueError(f"VAE moments must be (B, 2C, h, w), got {tuple(moments.shape)}")
    mean, logvar = torch.chunk(moments, 2, dim=1)
    std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))
    return LatentDistribution(mean.float(), std.float())


def host_vec(family: str, vectors: VectorSet) -> torch.Tensor | dict[str, torch.Tensor]:
    """Our per-encoder vectors in the layout of the host's ``Embedding.vec``.

    SD1/SD2: one ``(n, D)`` tensor (the host injects it into its single encoder whatever the key);
    SDXL: the ``{"clip_l", "clip_g"}`` dict its two ``EmbeddingsWithFixes`` index. The tensors are
    passed through unchanged, so gradients reach the caller's leaves.
    """
    keys = FAMILY_KEYS[family]
    missing = [k for k in keys if k not in vectors]
    if missing:
        raise ValueError(f"a {family} model needs vectors for {list(keys)}, missing {missing}")
    rows = {int(vectors[k].shape[0]) for k in keys}
    if len(rows) != 1:
        raise ValueError(f"SDXL vectors must have as many clip_l as clip_g rows, got {sorted(rows)}")
    if family == "sdxl":
        return {k: vectors[k] for k in keys}
    return vectors[keys[0]]


def vec_rows_and_width(vec: torch.Tensor | Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """``(vectors, shape)`` as the host's ``Embedding`` records them (SDXL: summed widths)."""
    if isinstance(vec, Mapping):
        return int(vec["clip_g"].shape[0]), int(vec["clip_l"].shape[-1] + vec["clip_g"].shape[-1])
    return int(vec.shape[0]), int(vec.shape[-1])


def sdxl_size_batch(
    sizes: Sequence[SizeConditioning] | None,
    batch: int,
    *,
    default_side: int = 1024,
    crop: tuple[int, int] = (0, 0),
) -> dict[str, list[list[int]]]:
    """The size inputs of SDXL's conditioner as rows: original size, crop offset, target size.

    Without ``sizes`` every row is the web UI's default for a ``default_side`` square image with
    its crop setting ``crop`` (top, left).
    """
    if sizes is None:
        sizes = [SizeConditioning((default_side, default_side), crop, (default_side, default_side))] * batch
    if len(sizes) != batch:
        raise ValueError(f"got {len(sizes)} size conditionings for {batch} prompts; give one per prompt")
    return {
        "original_size_as_tuple": [list(s.original_size) for s in sizes],
        "crop_coords_top_left": [list(s.crop_top_left) for s in sizes],
        "target_size_as_tuple": [list(s.target_size) for s in sizes],
    }


# SDXL's conditioner sorts each embedder output by its number of dimensions and concatenates
# outputs of the same kind along their feature dimension (sgm GeneralConditioner).
_KIND_BY_NDIM = {2: "vector", 3: "crossattn", 4: "concat", 5: "concat"}
_CAT_DIM = {"vector": 1, "crossattn": 2, "concat": 1}


def merge_embedder_outputs(outputs: Iterable[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Concatenate embedder outputs into ``crossattn`` / ``vector`` / ``concat`` as SDXL does."""
    merged: dict[str, torch.Tensor] = {}
    for out in outputs:
        kind = _KIND_BY_NDIM.get(out.ndim)
        if kind is None:
            raise ValueError(f"an SDXL embedder returned a {out.ndim}-d tensor; expected 2 to 5 dimensions")
        merged[kind] = torch.cat((merged[kind], out), _CAT_DIM[kind]) if kind in merged else out
    return merged


# --------------------------------------------------------------------------- checkpointing


def _checkpointed(forward: Callable, *args, **kwargs):
    from torch.utils.checkpoint import checkpoint

    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


CHECKPOINT_CLASSES = ("BasicTransformerBlock", "ResBlock")


def enable_checkpointing(
    root: torch.nn.Module, class_names: Sequence[str] = CHECKPOINT_CLASSES
) -> list[torch.nn.Module]:
    """Recompute the activations of every submodule of ``root`` whose class is named in
    ``class_names`` during the backward pass, by shadowing its ``forward`` on the instance.

    Returns the wrapped modules for :func:`disable_checkpointing`. Non-reentrant checkpointing
    works with frozen parameters (latent-diffusion's own checkpoint function does not).
    """
    wrapped = []
    for module in root.modules():
        if type(module).__name__ in class_names and "forward" not in vars(module):
            module.forward = functools.partial(_checkpointed, module.forward)
            wrapped.append(module)
    return wrapped


def disable_checkpointing(modules: Iterable[torch.nn.Module]) -> None:
    """Undo :func:`enable_checkpointing` on ``modules``."""
    for module in modules:
        vars(module).pop("forward", None)


# --------------------------------------------------------------------------- job progress


@dataclass
class ProgressFields:
    """The ``shared.state`` fields the host's progress bar reads, as a training job sets them."""

    job: str
    job_no: int
    job_count: int
    sampling_step: int
    sampling_steps: int
    textinfo: str


def progress_fields(title: str, step: int, total: int, text: str) -> ProgressFields:
    """``shared.state`` values for step ``step`` of ``total``: the bar's fraction is
    ``job_no / job_count`` (progress.py), so one training step is one "job"."""
    total = max(int(total), 1)
    step = min(max(int(step), 0), total)
    return ProgressFields(title, step, total, 0, 0, text)


STATE_FIELDS = ("job", "job_no", "job_count", "sampling_step", "sampling_steps", "textinfo")


def save_fields(state: object, names: Sequence[str] = STATE_FIELDS) -> dict[str, object]:
    """The current values of ``names`` on ``state`` (missing ones skipped)."""
    return {n: getattr(state, n) for n in names if hasattr(state, n)}


def restore_fields(state: object, saved: Mapping[str, object]) -> None:
    """Put back what :func:`save_fields` saved."""
    for name, value in saved.items():
        setattr(state, name, value)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Setting:
    """One entry of the "TI Trainer" settings section: ``key`` (prefixed ``ti_trainer_``), its
    default, label, the ``TrainConfig`` field it feeds (if any) and radio choices (if any)."""

    key: str
    default: object
    label: str
    option: str | None = None
    choices: tuple[str, ...] = ()
    minimum: int | None = None


SETTINGS_SECTION = ("ti_trainer", "TI Trainer")
SETTINGS = (
    Setting(
        "ti_trainer_save_format",
        "safetensors",
        "Default save format for embeddings",
        "save_format",
        ("safetensors", "pt"),
    ),
    Setting(
        "ti_trainer_log_dir",
        "",
        "Folder for training runs (empty: textual_inversion in the web UI's data folder)",
    ),
    Setting(
        "ti_trainer_preview_every",
        500,
        "Render a preview every N steps (0 = never)",
        "preview_every",
        minimum=0,
    ),
    Setting(
        "ti_trainer_validation_every",
        100,
        "Compute the validation loss every N steps (0 = never)",
        "validation_every",
        minimum=0,
    ),
    Setting(
        "ti_trainer_keep_snapshots",
        0,
        "Keep only the newest N step snapshots of a run (0 = keep all)",
        "keep_snapshots",
        minimum=0,
    ),
    Setting("ti_trainer_preview_sampler", "DPM++ 2M", "Sampler for training previews"),
)


def options_from_settings(values: Mapping[str, object], known_fields: Iterable[str]) -> dict[str, object]:
    """``TrainConfig`` overrides from the settings ``values`` (key -> value), for fields it has."""
    known = set(known_fields)
    out: dict[str, object] = {}
    for s in SETTINGS:
        if s.option and s.option in known and s.key in values and values[s.key] is not None:
            value = values[s.key]
            out[s.option] = type(s.default)(value) if isinstance(s.default, int | str) else value
    return out


def resolve_log_dir(flag: str | None, setting: str | None, data_path: str) -> str:
    """The runs folder: the ``--ti-trainer-log-dir`` flag, else the setting, else
    ``<data path>/textual_inversion`` (where the web UI's own trainer logs)."""
    import os

    for value in (flag, setting):
        if value and str(value).strip():
            return str(value).strip()
    return os.path.join(data_path, "textual_inversion")


def parse_api_auth(text: str | None) -> dict[str, str]:
    """``--api-auth`` ("user:password,user2:password2") as user -> password.

    Raises ValueError naming the bad entry (the host would fail the same way at startup).
    """
    credentials: dict[str, str] = {}
    if not text:
        return credentials
    for entry in text.split(","):
        user, sep, password = entry.partition(":")
        if not sep or not user:
            raise ValueError(f"--api-auth entry {entry!r} is not user:password")
        credentials[user] = password
    return credentials


def should_mount_api(*, api: bool, nowebui: bool, no_api_flag: bool) -> bool:
    """Mount /ti-trainer/v1 when the host serves its API (--api, or --nowebui) and we were not told not to."""
    return (api or nowebui) and not no_api_flag
