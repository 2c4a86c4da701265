"""Inputs for comparing other textual-inversion trainers with ours on tiny-shapes.

``python -m extension.shapes.peers prepare OUT [--concepts ...] [--seeds ...]`` writes, for a peer
trainer to read:

- ``OUT/diffusers/``: tiny-shapes as a diffusers folder (``unet``, ``vae``, ``text_encoder``,
  ``tokenizer``, ``scheduler``, ``model_index.json``), as diffusers' example scripts load it;
- ``OUT/webui/tiny-shapes.safetensors`` with its ``.yaml`` and ``-clip/`` folder (a web UI checkpoint);
- ``OUT/data/<concept>-<seed>/``: the quality benchmark's 8 pictures (+ captions) of each held-out
  concept and seed, and the same pictures alone in ``OUT/data/<concept>-<seed>-images/`` for trainers
  that read every file of a folder as a picture;
- ``OUT/object.txt``: the 27 "object" prompts of the textual inversion paper, ``[name]`` placeholder.

The peer's snapshots are then scored like ours with ``python -m extension.shapes.quality --score``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from .checkpoint import write_and_report
from .draw import HELD_OUT, parse_concept

# The prompt list of the textual inversion paper (Gal et al. 2022), also used by diffusers' example
# script ("imagenet_templates_small") and the web UI's subject.txt.
OBJECT_PROMPTS = (
    "a photo of a [name]", "a rendering of a [name]", "a cropped photo of the [name]", "the photo of a [name]",
    "a photo of a clean [name]", "a photo of a dirty [name]", "a dark photo of the [name]", "a photo of my [name]",
    "a photo of the cool [name]", "a close-up photo of a [name]", "a bright photo of the [name]",
    "a cropped photo of a [name]", "a photo of the [name]", "a good photo of the [name]", "a photo of one [name]",
    "a close-up photo of the [name]", "a rendition of the [name]", "a photo of the clean [name]",
    "a rendition of a [name]", "a photo of a nice [name]", "a good photo of a [name]", "a photo of the nice [name]",
    "a photo of the small [name]", "a photo of the weird [name]", "a photo of the large [name]",
    "a photo of a cool [name]", "a photo of a small [name]",
)  # fmt: skip
PICTURES = 8


def slug(concept: str, seed: int) -> str:
    """The folder name of a concept's pictures for a seed: ``cyan-triangle-0``."""
    return f"{concept.replace(' ', '-')}-{seed}"


def export_diffusers_folder(out: Path) -> Path:
    """tiny-shapes as a diffusers pipeline folder (fp32 weights, the SD1 DDPM schedule)."""
    from diffusers import DDPMScheduler

    from ..backends.tiny import scheduler_config
    from .checkpoint import write_clip_folder
    from .model import load_components

    out = Path(out)
    parts = load_components()
    for name in ("unet", "vae", "text_encoder"):
        parts[name].save_pretrained(str(out / name))
    write_clip_folder(out / "tokenizer", parts["text_encoder"])
    (out / "tokenizer" / "config.json").unlink()  # the text encoder's: not the tokenizer's
    DDPMScheduler.from_config(scheduler_config("sd1")).save_pretrained(str(out / "scheduler"))
    index = {
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    return out


def write_data(out: Path, concepts: list[str], seeds: list[int]) -> list[Path]:
    """The quality benchmark's pictures of each concept x seed, with and without caption files."""
    from ..training.demo_data import make_shapes_dataset
    from .model import SIDE

    folders = []
    for concept in concepts:
        for seed in seeds:
            folder = make_shapes_dataset(out / slug(concept, seed), concept, n=PICTURES, size=SIDE, seed=seed)
            images = out / f"{slug(concept, seed)}-images"
            images.mkdir(parents=True, exist_ok=True)
            for picture in sorted(folder.glob("*.png")):
                shutil.copyfile(picture, images / picture.name)
            folders += [folder, images]
    return folders


def prepare(out: Path, concepts: list[str], seeds: list[int]) -> list[Path]:
    """Write everything a peer trainer needs into ``out`` (which must not exist yet)."""
    from .checkpoint import export_checkpoint

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} already exists; choose a new folder")
    written = [export_diffusers_folder(out / "diffusers")]
    written += export_checkpoint(out / "webui" / "tiny-shapes.safetensors")
    written += write_data(out / "data", concepts, seeds)
    templates = out / "object.txt"
    templates.write_text("\n".join(OBJECT_PROMPTS) + "\n", encoding="utf-8")
    return [*written, templates]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write tiny-shapes and the benchmark data for other trainers."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser(
        "prepare", help="write the model (diffusers folder, web UI checkpoint), data and templates"
    )
    make.add_argument("out", type=Path, help="a new folder")
    make.add_argument("--concepts", default=",".join(f"{c} {s}" for c, s in HELD_OUT))
    make.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)
    concepts = [c.strip() for c in args.concepts.split(",") if c.strip()]
    problems = [] if re.fullmatch(r"\s*\d+\s*(,\s*\d+\s*)*", args.seeds) else [
        f"--seeds {args.seeds!r} must be whole numbers separated by commas, e.g. 0,1,2"
    ]
    for concept in concepts:
        try:
            parse_concept(concept)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        print("\n".join(f"error: {p}" for p in problems), file=sys.stderr)
        return 2
    return write_and_report(lambda: prepare(args.out, concepts, [int(s) for s in args.seeds.split(",")]))


if __name__ == "__main__":
    sys.exit(main())
