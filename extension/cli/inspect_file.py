"""``python -m extension inspect FILE``: what an embedding file holds and which tools would load it."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch comes with these: imported when the command runs, never for --help
    from ..embedding.model import Embedding

HELP = "show an embedding file's name, shape, step, layout, hash and which tools load it"

_WIDTH_MODELS = {768: "SD1.x", 1024: "SD2.x", 2048: "SDXL"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="an embedding: .pt, .bin, .safetensors, .png or lossless .webp")
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of text")


def file_sha256(path: Path) -> str:
    """SHA-256 of the whole file (the web UI's embedding hash)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verdict(loads: bool, reason: str = "") -> dict:
    return {"loads": loads, "reason": reason}


def _pair_compatibility(emb: Embedding) -> dict[str, dict]:
    """diffusers' SDXL pair: every other tool reads its two files one by one, never as one SDXL embedding."""
    first, second = emb.metadata["source_files"].split(" + ")
    fix = f" - fix: python -m extension convert {first} NAME.safetensors (one clip_l + clip_g file)"
    webui = (
        f"{{tool}} reads each file on its own: {first} as a 768-wide SD1.x embedding, {second} "
        f"(1280 wide) is skipped; neither is the SDXL embedding{fix}"
    )
    return {
        "webui": _verdict(False, webui.format(tool="the web UI")),
        "forge": _verdict(False, webui.format(tool="Forge")),
        "comfyui": _verdict(
            False, f"ComfyUI reads each file on its own: on SDXL, {first} fills CLIP-L only{fix}"
        ),
    }


def compatibility(path: Path, emb: Embedding) -> dict[str, dict]:
    """Would the web UI (1.10), Forge and ComfyUI load this file (spec §5), and why not."""
    from ..embedding.diffusers_pair import LAYOUT as LAYOUT_DIFFUSERS_PAIR
    from ..embedding.load import IMAGE_SUFFIXES, PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES
    from ..embedding.pt_container import webui_load_problems

    webui_suffixes = PICKLE_SUFFIXES + SAFETENSORS_SUFFIXES + IMAGE_SUFFIXES
    suffix = path.suffix.lower()
    layout = emb.metadata.get("source_layout", "")
    if layout == LAYOUT_DIFFUSERS_PAIR:
        return _pair_compatibility(emb)
    width_note = ""
    if emb.width not in _WIDTH_MODELS:
        width_note = f"width {emb.width} matches no SD1/SD2/SDXL model: listed but skipped"
    out: dict[str, dict] = {}

    # the web UI 1.10
    if suffix not in webui_suffixes:
        out["webui"] = _verdict(False, f"the web UI ignores {suffix or 'extension-less'} files")
    elif suffix in IMAGE_SUFFIXES and path.stem.endswith(".preview"):
        out["webui"] = _verdict(False, "*.preview.* pictures are treated as card thumbnails")
    elif suffix in PICKLE_SUFFIXES:
        problems = webui_load_problems(path.read_bytes())
        fix = " - fix: python -m extension convert IN OUT.safetensors (or OUT.pt)"
        out["webui"] = _verdict(False, "; ".join(problems) + fix) if problems else _verdict(True, width_note)
    else:
        out["webui"] = _verdict(True, width_note)

    # Forge: the same loader without the safety check
    if suffix not in webui_suffixes:
        out["forge"] = _verdict(False, f"Forge ignores {suffix or 'extension-less'} files")
    elif suffix in IMAGE_SUFFIXES and path.stem.endswith(".preview"):
        out["forge"] = _verdict(False, "*.preview.* pictures are treated as card thumbnails")
    else:
        out["forge"] = _verdict(True, width_note)

    # ComfyUI: tensor files only
    if suffix in IMAGE_SUFFIXES:
        out["comfyui"] = _verdict(
            False, "ComfyUI does not read embeddings from pictures - convert to .safetensors"
        )
    elif suffix in PICKLE_SUFFIXES + SAFETENSORS_SUFFIXES:
        note = "via its raw-float fallback" if layout == "parameterdict-pt" else ""
        out["comfyui"] = _verdict(True, note)
    else:
        out["comfyui"] = _verdict(False, "ComfyUI looks for .safetensors, .pt and .bin files")
    return out


def describe(path: Path) -> dict:
    """Everything ``inspect`` reports about ``path`` (EmbeddingFormatError if it is not loadable)."""
    from ..embedding import load_embedding

    emb = load_embedding(path)
    digest = file_sha256(path)
    shapes = {k: list(t.shape) for k, t in emb.tensors().items()}
    pair = emb.metadata.get("source_files")  # diffusers' SDXL pair: both files
    files = [str(path.with_name(n)) for n in pair.split(" + ")] if pair else [str(path)]
    return {
        "file": str(path),
        "files": files,
        "name": emb.name,
        "stored_name": emb.metadata.get("stored_name"),
        "shape": shapes if emb.is_sdxl else shapes["emb_params"],
        "vectors": emb.n_vectors,
        "width": emb.width,
        "model_family": emb.model_family,
        "step": emb.step,
        "sd_checkpoint": emb.checkpoint_hash,
        "sd_checkpoint_name": emb.checkpoint_name,
        "source_layout": emb.metadata.get("source_layout"),
        "sha256": digest,
        "hash": digest[:12],
        "compatibility": compatibility(path, emb),
    }


def _text(info: dict) -> str:
    lines = [
        f"file:          {' + '.join(info['files'])}",
        f"name:          {info['name']}"
        + (
            f"  (stored name: {info['stored_name']})"
            if info["stored_name"] not in (None, info["name"])
            else ""
        ),
        f"shape:         {info['shape']}  ({info['vectors']} vectors, width {info['width']}, {info['model_family']})",
        f"step:          {info['step'] if info['step'] is not None else '-'}",
        f"checkpoint:    {info['sd_checkpoint_name'] or '-'} [{info['sd_checkpoint'] or '-'}]",
        f"layout:        {info['source_layout']}",
        f"hash:          {info['hash']}  (sha256 {info['sha256']}{' of ' + info['file'] if len(info['files']) > 1 else ''})",
    ]
    labels = {"webui": "web UI 1.10", "forge": "Forge", "comfyui": "ComfyUI"}
    for key, label in labels.items():
        v = info["compatibility"][key]
        lines.append(
            f"{label + ':':<15}{'loads' if v['loads'] else 'does NOT load'}"
            + (f" - {v['reason']}" if v["reason"] else "")
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..embedding import EmbeddingFormatError

    path = Path(args.file)
    try:
        info = describe(path)
    except EmbeddingFormatError as exc:
        if args.json:
            print(json.dumps({"file": str(path), "error": str(exc)}, ensure_ascii=False))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(info, ensure_ascii=False, indent=2) if args.json else _text(info))
    return 0
