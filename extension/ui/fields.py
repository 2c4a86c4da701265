"""The training options as the tab shows them: which come first, which are folded away, their
labels and kinds of field, and the conversion of the fields' values back to TrainConfig options."""

from __future__ import annotations

from typing import Any

from ..training import config as cfg
from ..training.config import TrainConfig
from .service import TARGET_FIELDS, UserError

# Options the tab does not show as fields: what to train comes from the picker and the create
# section, resume is its own button, and replacing a trained embedding is done by re-creating it.
NOT_FIELDS = (*TARGET_FIELDS, "overwrite", "resume")

# What a first training needs, always in view, as rows of fields.
FIRST_ROWS: list[list[str]] = [
    ["data", "template"],
    ["width", "height"],
    ["learn_rate"],
    ["max_steps", "batch_size", "grad_accumulation"],
]

# Everything else, folded away: (accordion title, fields).
FOLDED: list[tuple[str, list[str]]] = [
    ("More dataset options", [
        "repeats", "caption_extension", "filename_word_regex", "filename_join", "shuffle_tags", "tag_dropout",
        "flip_probability", "alpha_as_loss_weight", "latent_sampling", "buckets", "bucket_step", "template_dir",
    ]),
    ("More training options", [
        "clamp_batch", "weight_decay", "clip_grad", "clip_grad_value", "precision", "gradient_checkpointing", "seed",
    ]),
    ("Text encoding", ["emphasis", "clip_skip"]),
    ("Saving snapshots", ["save_every", "keep_snapshots", "save_format"]),
    ("Previews", [
        "preview_every", "preview_prompt", "preview_negative_prompt", "preview_steps", "preview_cfg_scale",
        "preview_seed", "preview_width", "preview_height",
    ]),
    ("Validation", ["validation_every", "validation_data", "validation_images", "validation_timesteps"]),
]  # fmt: skip

LABELS = {
    "data": "Dataset folder",
    "width": "Width (0 = the model's size)",
    "height": "Height (0 = the model's size)",
    "repeats": "Repeats per epoch",
    "template": "Prompt template (name or .txt file)",
    "caption_extension": "Caption file extension",
    "filename_word_regex": "File name word regex",
    "filename_join": "File name word join string",
    "shuffle_tags": "Shuffle tags",
    "tag_dropout": "Tag dropout",
    "flip_probability": "Horizontal flip probability",
    "alpha_as_loss_weight": "Use alpha as loss weight",
    "latent_sampling": "Latent sampling",
    "buckets": "Aspect-ratio buckets",
    "bucket_step": "Bucket size step (pixels)",
    "template_dir": "Extra template folder",
    "learn_rate": "Learning rate schedule",
    "max_steps": "Max steps",
    "batch_size": "Batch size",
    "grad_accumulation": "Gradient accumulation steps",
    "clamp_batch": "Clamp batch size to the dataset",
    "weight_decay": "Weight decay",
    "clip_grad": "Gradient clipping",
    "clip_grad_value": "Gradient clipping value schedule",
    "precision": "Precision",
    "gradient_checkpointing": "Gradient checkpointing",
    "seed": "Seed",
    "emphasis": "Emphasis mode",
    "clip_skip": "CLIP skip",
    "save_format": "Save format",
    "save_every": "Save a snapshot every N steps (0 = off)",
    "keep_snapshots": "Keep the newest N snapshots (0 = all)",
    "preview_every": "Preview every N steps (0 = off)",
    "preview_prompt": "Preview prompt (empty = the training prompt)",
    "preview_negative_prompt": "Preview negative prompt",
    "preview_steps": "Preview sampling steps",
    "preview_cfg_scale": "Preview CFG scale",
    "preview_seed": "Preview seed (-1 = training seed)",
    "preview_width": "Preview width (0 = training size)",
    "preview_height": "Preview height (0 = training size)",
    "validation_every": "Validation loss every N steps (0 = off)",
    "validation_data": "Validation folder (empty = training images at fixed seeds)",
    "validation_images": "Validation images",
    "validation_timesteps": "Validation timesteps per image",
}

CHOICES = {
    "latent_sampling": cfg.LATENT_SAMPLING,
    "clip_grad": cfg.CLIP_MODES,
    "precision": cfg.PRECISIONS,
    "emphasis": cfg.EMPHASIS_MODES,
    "save_format": cfg.SAVE_FORMATS,
}
SLIDERS = {"tag_dropout": (0.0, 1.0, 0.05), "flip_probability": (0.0, 1.0, 0.05)}


def short_label(name: str) -> str:
    """A field's label without its parenthesised hint: "Width (0 = ...)" -> "Width"."""
    return LABELS.get(name, name.replace("_", " ")).split(" (")[0]


def tab_fields() -> list[str]:
    """Every TrainConfig field the tab shows, in layout order."""
    return [name for row in FIRST_ROWS for name in row] + [name for _, names in FOLDED for name in names]


def options_from_values(names: list[str], values: list[Any], defaults: TrainConfig) -> dict[str, Any]:
    """Component values -> TrainConfig options with the field's type (gradio numbers are floats
    or None). Raises UserError for an empty number field."""
    out: dict[str, Any] = {}
    for name, value in zip(names, values):
        kind = type(getattr(defaults, name))
        if kind in (int, float):
            if value is None or value == "":
                raise UserError(f"{short_label(name)} is empty; enter a number")
            if kind is int:
                if float(value) != int(float(value)):
                    raise UserError(f"{short_label(name)} must be a whole number, got {value}")
                value = int(float(value))
            else:
                value = float(value)
        elif kind is bool:
            value = bool(value)
        else:
            value = "" if value is None else str(value)
        out[name] = value
    return out


def _templates() -> list[str]:
    try:
        from ..training.templates import available_templates

        return sorted(available_templates())
    except Exception:  # the template list is a convenience; any name or path can be typed
        return ["subject_filewords"]


def option_component(gr, name: str, default: Any):
    """The gradio component of option ``name`` (id ``ti_trainer_<name>``) showing ``default``.

    The web UI (and Forge) would otherwise save every labelled component's first value into
    ui-config.json and show that value ever after; our defaults come from the host's current
    settings and folders (Settings → TI Trainer, emphasis, CLIP skip, its template folder), so a
    frozen copy goes stale (e.g. a template folder Forge no longer has, refused on every Train).
    """
    component = _option_component(gr, name, default)
    component.do_not_save_to_config = True  # read by the host's ui-config loader
    return component


def _option_component(gr, name: str, default: Any):
    label = LABELS.get(name, name.replace("_", " "))
    elem_id = f"ti_trainer_{name}"
    if name in CHOICES:
        return gr.Dropdown(list(CHOICES[name]), value=default, label=label, elem_id=elem_id)
    if name == "template":
        choices = _templates()
        if default not in choices:
            choices.append(default)
        return gr.Dropdown(choices, value=default, label=label, elem_id=elem_id, allow_custom_value=True)
    if name in SLIDERS:
        lo, hi, step = SLIDERS[name]
        return gr.Slider(lo, hi, value=default, step=step, label=label, elem_id=elem_id)
    if isinstance(default, bool):
        return gr.Checkbox(value=default, label=label, elem_id=elem_id)
    if isinstance(default, int):
        return gr.Number(value=default, precision=0, label=label, elem_id=elem_id)
    if isinstance(default, float):
        return gr.Number(value=default, label=label, elem_id=elem_id)
    lines = 2 if name in ("preview_prompt", "preview_negative_prompt") else 1
    return gr.Textbox(value=default, label=label, elem_id=elem_id, lines=lines, max_lines=lines)
