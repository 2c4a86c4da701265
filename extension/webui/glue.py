"""Pure helpers of the web UI glue: no ``modules.*`` import, so they are tested without the host.

Each one answers a small question the host backend or the host adapter has to answer from the
host's objects (class names, option values, attribute values) and is kept here so that the answer
can be checked on plain inputs.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from types import ModuleType

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


# --------------------------------------------------------------------------- precision

# What the loop shows when fp32 is chosen over a half-precision model (--no-half makes the web UI
# keep the weights in float32; --precision full alone leaves them in float16).
FP32_HINT = (
    "start the web UI with --no-half (the model stays in float32, about twice the VRAM), "
    "or choose precision fp16 or bf16"
)
FP8_DTYPES = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))


def weights_dtype(params: Iterable[torch.Tensor]) -> torch.dtype:
    """The dtype that holds most of the floating-point weights among ``params`` (the web UI may keep
    some layers in another dtype, e.g. the norms of an FP8 model)."""
    counts: dict[torch.dtype, int] = {}
    for p in params:
        if p.is_floating_point():
            counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
    if not counts:
        raise HostModelError("the loaded model's UNet has no floating-point weights; reload the checkpoint")
    return max(counts, key=counts.__getitem__)


def weights_dtype_problem(dtype: torch.dtype, device_type: str = "cuda") -> str | None:
    """Why the UNet's weight dtype cannot be trained through on ``device_type``, or None."""
    if dtype in FP8_DTYPES:
        return (
            "the loaded model's UNet is stored in FP8 (Settings > Optimizations > FP8 weight), which "
            "training cannot compute through: set FP8 weight to Disable and reload the checkpoint"
        )
    if device_type == "cpu" and dtype == torch.float16:
        # torch's CPU autocast rejects float16 inputs (the host's embedding splice concatenates them)
        return "the web UI keeps the model in float16 on the CPU, which training cannot use: start it with --no-half"
    return None


def vae_nan_hint(vae_dtype: torch.dtype) -> str:
    """How to avoid non-finite latents from the web UI's VAE running in ``vae_dtype``."""
    if vae_dtype in (torch.float16, torch.bfloat16):
        return (
            "the VAE runs in half precision and overflowed: start the web UI with --no-half-vae, "
            "or select a VAE made for fp16 in Settings > VAE"
        )
    return "the VAE already runs in float32: check that the image is not corrupt, or select another VAE"


def vae_scale_factor(first_stage_model) -> int:
    """Pixels per latent cell of an ldm/sgm ``AutoencoderKL``: it halves the size at every level of
    its encoder but the last (SD's 4 levels: 8; a narrow 3-level VAE: 4). 8 when it does not say."""
    levels = getattr(getattr(first_stage_model, "encoder", None), "num_resolutions", None)
    return 2 ** (levels - 1) if isinstance(levels, int) and levels >= 1 else 8


# --------------------------------------------------------------------------- noise schedule


def training_alphas_cumprod(current: torch.Tensor, original: torch.Tensor | None) -> torch.Tensor:
    """The model's own schedule as float32 on the CPU. The web UI rewrites ``alphas_cumprod`` for
    sampling (zero terminal SNR, fp16 downcast: ``sd_models.apply_alpha_schedule_override``) and
    keeps the loaded one as ``alphas_cumprod_original``; training must use that one."""
    source = original if original is not None else current
    return source.detach().float().cpu().clone()


# --------------------------------------------------------------------------- text settings

# TrainConfig field -> the web UI option (shared.opts) that txt2img's text conditioning reads.
HOST_TEXT_OPTIONS = {"emphasis": "emphasis", "clip_skip": "CLIP_stop_at_last_layers"}


def host_text_values(emphasis: str, clip_skip: int, known_modes: Sequence[str]) -> dict[str, object]:
    """The web UI option values for a run's emphasis mode and CLIP skip; ValueError when unusable."""
    if emphasis not in known_modes:
        raise ValueError(
            f"emphasis mode {emphasis!r} is not one the web UI has; use one of {', '.join(known_modes)}"
        )
    if int(clip_skip) != clip_skip or clip_skip < 1:
        raise ValueError(f"CLIP skip {clip_skip!r} must be a whole number of at least 1 (1 = last layer)")
    return {HOST_TEXT_OPTIONS["emphasis"]: emphasis, HOST_TEXT_OPTIONS["clip_skip"]: int(clip_skip)}


def encoding_emphasis(emphasis: str, parsed_prompts: Iterable[Sequence[tuple[str, float]]]) -> str:
    """The emphasis mode to encode ``parsed_prompts`` with (each the host's ``parse_prompt_attention``
    pairs of text and weight) when the run's mode is ``emphasis``.

    "Original" rescales ``z * m`` by ``mean(z) / mean(z * m)``. With every weight 1 that factor is
    exactly 1, unless ``mean(z)`` is exactly 0 (a text encoder whose final layer norm has no bias,
    as in freshly initialised checkpoints), where it is 0/0 and the whole conditioning turns NaN.
    "No norm" is then the same computation without that division: bit-identical where "Original" is
    finite. BREAK markers (weight -1) are not weights.
    """
    if emphasis != "Original":
        return emphasis
    for pairs in parsed_prompts:
        if any(w != 1.0 for text, w in pairs if not (text == "BREAK" and w == -1)):
            return emphasis
    return "No norm"


def text_defaults(read: Callable[[str], object], known_modes: Sequence[str]) -> dict[str, object]:
    """The tab's emphasis / CLIP skip defaults: the values txt2img uses now (``read`` gets an option);
    a value that is not usable is left out, so the trainer's own default applies."""
    out: dict[str, object] = {}
    emphasis = read(HOST_TEXT_OPTIONS["emphasis"])
    if emphasis in known_modes:
        out["emphasis"] = emphasis
    try:
        clip_skip = int(read(HOST_TEXT_OPTIONS["clip_skip"]))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        clip_skip = 0
    if clip_skip >= 1:
        out["clip_skip"] = clip_skip
    return out


@contextlib.contextmanager
def overridden(data: MutableMapping[str, object], values: Mapping[str, object]) -> Iterator[None]:
    """``data`` (the web UI's ``opts.data``) with ``values`` inside; afterwards, even on error, each key
    is given back its earlier value, or removed if it had none (the host then reads its default).
    A key the user changed meanwhile (settings are not locked during a job) keeps the user's value."""
    absent = object()
    saved = {key: data.get(key, absent) for key in values}
    try:
        data.update(values)
        yield
    finally:
        for key, old in saved.items():
            if key in data and data[key] != values[key]:
                continue
            if old is absent:
                data.pop(key, None)
            else:
                data[key] = old


# --------------------------------------------------------------------------- extra networks


def lora_module(loaded_modules: Mapping[str, ModuleType | None]) -> ModuleType | None:
    """The web UI's built-in Lora extension (its ``networks`` module), or None when it is not loaded."""
    module = loaded_modules.get("networks")
    wanted = ("load_networks", "network_apply_weights", "loaded_networks")
    return module if module is not None and all(hasattr(module, a) for a in wanted) else None


def restore_checkpoint_weights(
    root: torch.nn.Module,
    *,
    clear_networks: Callable[[], None],
    apply_weights: Callable[[torch.nn.Module], None],
) -> int:
    """Put the checkpoint's own weights back where the web UI's Lora has merged networks into them.

    The host merges a LoRA into a layer's weights on the layer's next forward and keeps it there
    until a later generation asks for another set. So: first empty the host's set of active networks
    (``clear_networks``), then run its ``apply_weights`` on each layer that still has networks merged
    (``network_current_names``): with nothing wanted it restores the layer from its backup. Returns
    how many layers were restored.
    """
    clear_networks()
    restored = 0
    with torch.no_grad():
        for module in root.modules():
            if getattr(module, "network_current_names", ()):
                apply_weights(module)
                restored += 1
    return restored


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


def forget_cached_conditioning(processing_class: object) -> None:
    """Empty the txt2img conditioning cache of ``processing_class`` (the host's
    ``StableDiffusionProcessing``): it is keyed on the prompt text, not on the vectors of the
    embeddings in it, so a retrained or re-imported embedding would otherwise go unused by the next
    generation with the same prompt. The caches keep their length (2 in the web UI, 3 in Forge)."""
    for attr in ("cached_c", "cached_uc"):
        cache = getattr(processing_class, attr, None)
        if isinstance(cache, list):
            setattr(processing_class, attr, [None] * len(cache))
