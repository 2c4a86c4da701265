"""Which of Forge's model engines TI Trainer can train on, and the up-front refusals: host-free.

Forge has one engine class per model family (``backend/diffusion_engine``): its class name is
what we dispatch on. Each trainable engine keeps one or two ``ClassicTextProcessingEngine``
attributes, each with its own embedding database; :data:`TEXT_ENGINES` maps them to our encoder
keys (``backends.base``: SD2's single OpenCLIP encoder is ``clip_g`` for us).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

SUPPORTED = "TI training supports SD1/SD2/SDXL"


class ForgeModelError(ValueError):
    """Forge's loaded model or its settings cannot be trained on; the message says why and what to do
    (a ValueError: the user's choice of model, reported like any other bad input)."""


@dataclass(frozen=True)
class EngineFamily:
    """A trainable Forge engine: our family name and its text engines (attribute -> encoder key)."""

    family: str
    text_engines: Mapping[str, str]
    default_size: int


FAMILIES: dict[str, EngineFamily] = {
    "StableDiffusion": EngineFamily("sd1", {"text_processing_engine": "clip_l"}, 512),
    "StableDiffusion2": EngineFamily("sd2", {"text_processing_engine": "clip_g"}, 768),
    "StableDiffusionXL": EngineFamily(
        "sdxl", {"text_processing_engine_l": "clip_l", "text_processing_engine_g": "clip_g"}, 1024
    ),
}

# Engines Forge runs that we refuse, with the model they are.
REFUSED = {
    "StableDiffusionXLRefiner": "an SDXL refiner (embeddings are trained on the SDXL base model)",
    "Flux": "a Flux model",
    "Chroma": "a Chroma model",
    "StableDiffusion3": "an SD3 model",
}

# What a loaded-nothing Forge holds in shared.sd_model (modules/sd_models.py)
PLACEHOLDER = "FakeInitialModel"


def load_failure(checkpoint: str | None, error: BaseException) -> ForgeModelError:
    """Forge failed to load the selected checkpoint (e.g. its detection did not recognise it): the
    error naming the checkpoint, Forge's words and what to do."""
    what = f"the selected checkpoint {checkpoint}" if checkpoint else "the selected checkpoint"
    said = str(error).strip() or type(error).__name__
    return ForgeModelError(
        f"Forge could not load {what} ({said!r}). Select another checkpoint at the top of the page "
        f"({SUPPORTED}; Forge recognises only the released architectures of each)"
    )


# The norm bias ComfyUI and huggingface_guess read to tell SD 2.x 768-v from 512-base (std > 0.09: v).
V_MARKER = "output_blocks.11.1.transformer_blocks.0.norm1.bias"
V_MARKER_SPREAD = 0.09


def sd2_v_loaded_as_eps(family: str, prediction: str, marker_std: float | None, yaml_beside: bool) -> str | None:
    """Why an SD2 checkpoint whose weights say v-prediction must not train as Forge loaded it (eps),
    with the way out; None when nothing is wrong.

    Forge's loader asks ``huggingface_guess`` for the prediction type without the UNet's key prefix,
    so the weight test never finds its tensor and every single-file SD2 model without a ``.yaml``
    beside it is loaded as eps: a 768-v model then trains (and generates) against the wrong target.
    A ``.yaml`` beside the file is Forge's own way to say which it is, so it is trusted as it is.
    """
    if family != "sd2" or prediction != "epsilon" or yaml_beside or marker_std is None:
        return None
    if marker_std <= V_MARKER_SPREAD:
        return None  # a 512-base (eps) model
    return (
        "Forge loaded this SD2 checkpoint as eps-prediction, but its weights are those of a 768-v "
        "(v-prediction) model; training would learn the wrong target. Forge reads the prediction type "
        "of SD2 files from a .yaml beside the checkpoint: copy v2-inference-v.yaml next to it under the "
        "checkpoint's name (<name>.yaml) and select the checkpoint again"
    )


def engine_family(class_name: str, *, is_inpaint: bool = False) -> EngineFamily:
    """The :class:`EngineFamily` of Forge engine ``class_name``; raises ForgeModelError otherwise."""
    if class_name == PLACEHOLDER:
        raise ForgeModelError("Forge has not loaded a model yet; pick a checkpoint at the top of the page")
    family = FAMILIES.get(class_name)
    if family is None:
        what = REFUSED.get(class_name, f"a {class_name} model")
        raise ForgeModelError(
            f"the loaded checkpoint is {what}; {SUPPORTED}. Load an SD1.x, SD2.x or SDXL checkpoint to train"
        )
    if is_inpaint:
        raise ForgeModelError(
            "the loaded checkpoint is an inpainting model, which TI Trainer does not train on Forge; "
            "load a text-to-image checkpoint of the same family (embeddings work with both)"
        )
    return family


def prediction_type(predictor_type: str, has_alphas_cumprod: bool) -> str:
    """Our ``NoiseSchedule.prediction_type`` for Forge's predictor, or ForgeModelError.

    Forge's discrete predictor (``k_prediction.Prediction``) keeps the DDPM ``alphas_cumprod`` the
    trainer samples timesteps from; continuous (EDM, flow) schedules have none.
    """
    if not has_alphas_cumprod:
        raise ForgeModelError(
            "the loaded checkpoint uses a continuous noise schedule (EDM or flow matching); "
            f"{SUPPORTED} models with the standard discrete schedule"
        )
    if predictor_type not in ("epsilon", "v_prediction"):
        raise ForgeModelError(
            f"the loaded checkpoint predicts {predictor_type!r}; TI Trainer trains eps- and v-prediction models"
        )
    return predictor_type


def swap_problem(swapped: bool) -> str | None:
    """The refusal when Forge keeps part of the model in CPU memory (short VRAM), or None.

    In that mode Forge casts each layer's weights to the GPU when the layer runs. Autograd keeps
    every cast copy until the backward pass, so training would need the whole model's VRAM after
    all and fail out of memory halfway; refusing up front says what to do instead.
    """
    if not swapped:
        return None
    return (
        "Forge keeps part of this model in CPU memory and moves it to the GPU layer by layer "
        "(short VRAM: 'CPU Swap Loaded' in the console). A backward pass holds a GPU copy of every "
        "layer until it ends, so training would run out of memory. Raise 'GPU Weights' at the top of "
        "the page to the maximum (or free VRAM) so the whole model loads, then train; generation "
        "still works either way"
    )


# Forge's attention functions (backend/attention.py) whose backward pass is torch's own: SDPA and
# xformers. Forge picks sub-quadratic or split attention on CPUs and with --attention-quad/-split;
# those chunk and rescale in place, so training switches them to SDPA for its duration.
GRAD_SAFE_ATTENTION = ("attention_pytorch", "attention_xformers")
TRAINING_ATTENTION = "attention_pytorch"


def training_attention(current: str) -> str | None:
    """The attention function to train with when Forge's current one is ``current``, or None to keep it."""
    return None if current in GRAD_SAFE_ATTENTION else TRAINING_ATTENTION
