"""Build the tiny-shapes model: train it (:mod:`.base_training`), judge it, write weights and card.

``python tools/train_tiny_shapes.py`` (or ``python -m extension.shapes.build``) reproduces the
shipped :data:`.model.WEIGHTS` with the defaults; the card (``MODEL_CARD.md``) and a sample sheet
(``samples.png``) are written next to the weights from the figures of the run itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .base_training import (
    Plan,
    calibrate_latents,
    draw_pool,
    finetune_decoder,
    posterior_of,
    sample,
    train_denoiser,
    train_vae,
)
from .draw import COLOURS, HELD_OUT, SHAPES, is_held_out
from .judge import judge
from .model import LATENT_SCALE, NAME, SIDE, WEIGHTS, new_components, save_weights

EVAL_SEEDS = 8  # judged samples per concept on the card


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = Plan()
    parser = argparse.ArgumentParser(description="Train the tiny-shapes model and write its weights and card.")
    parser.add_argument("--out", type=Path, default=WEIGHTS, help=f"weights file (default: {WEIGHTS})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing weights file")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1; results depend on it)")
    parser.add_argument("--card-only", action="store_true", help="rewrite MODEL_CARD.md from train_info.json; no training")
    parser.add_argument(
        "--rescore", action="store_true",
        help="judge the weights at --out again (after a change to the judge), then rewrite train_info.json and the card",
    )  # fmt: skip
    parser.add_argument("--eval-seeds", type=int, default=EVAL_SEEDS, help="judged samples per concept for the card")
    parser.add_argument(
        "--parallel", action=argparse.BooleanOptionalAction, default=True,
        help="fine-tune the VAE decoder in a second process while the UNet trains (same result, less wall time)",
    )  # fmt: skip
    for field in dataclasses.fields(Plan):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, type=type(getattr(defaults, field.name)), default=getattr(defaults, field.name))
    return parser.parse_args(argv)


def evaluate(parts: dict[str, torch.nn.Module], seeds: int = EVAL_SEEDS, cfg: float = 5.0) -> dict[str, float]:
    """Judge score per concept ("red circle": fraction of ``seeds`` samples of "a red circle" judged so)."""
    concepts = [(c, s) for c in COLOURS for s in SHAPES]
    prompts = [f"a {c} {s}" for c, s in concepts for _ in range(seeds)]
    images = sample(parts, prompts, [i for _ in concepts for i in range(seeds)], cfg=cfg)
    scores: dict[str, float] = {}
    for k, (c, s) in enumerate(concepts):
        hits = sum(judge(im).concept == f"{c} {s}" for im in images[k * seeds : (k + 1) * seeds])
        scores[f"{c} {s}"] = hits / seeds
    return scores


def sample_sheet(parts: dict[str, torch.nn.Module], path: Path, seeds: int = 4) -> Path:
    """A grid: one row per concept (all colours x shapes), ``seeds`` samples each, upscaled 2x."""
    from PIL import Image

    concepts = [(c, s) for c in COLOURS for s in SHAPES]
    images = sample(parts, [f"a {c} {s}" for c, s in concepts for _ in range(seeds)],
                    [100 + i for _ in concepts for i in range(seeds)])  # fmt: skip
    cols = len(SHAPES) * seeds
    sheet = Image.new("RGB", (cols * SIDE, len(COLOURS) * SIDE), (255, 255, 255))
    for k, image in enumerate(images):
        sheet.paste(image, ((k % cols) * SIDE, (k // cols) * SIDE))
    sheet = sheet.resize((sheet.width * 2, sheet.height * 2), Image.Resampling.NEAREST)
    from ..training.outputs import atomic_write

    return atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"))


def card_text(info: dict[str, Any]) -> str:
    """The model card in Markdown, from the run's ``info``."""
    scores = info["scores"]
    seen = [v for k, v in scores.items() if not is_held_out(*k.split())]
    held = {f"{c} {s}": scores[f"{c} {s}"] for c, s in HELD_OUT}
    header = "| colour | " + " | ".join(SHAPES) + " |\n|---|" + "---|" * len(SHAPES) + "\n"
    rows = "".join(
        f"| {c} | "
        + " | ".join(f"{scores[f'{c} {s}']:.0%}{' (held out)' if is_held_out(c, s) else ''}" for s in SHAPES)
        + " |\n"
        for c in COLOURS
    )
    plan, cpu = info["plan"], info["cpu_seconds"]
    return f"""# {NAME}

A small Stable Diffusion 1 model that knows one thing: coloured shapes on plain backgrounds. It
exists so that textual inversion has a right answer that can be checked in seconds on a CPU
(`python -m extension demo`, the `--model {NAME}` option of every command).

## Architecture
The classes of a full SD1 model, narrow: transformers `CLIPTextModel` ({info['params']['text_encoder']:,}
parameters: width 32, 3 layers, the real CLIP BPE vocabulary of 49,408 tokens), diffusers
`UNet2DConditionModel` ({info['params']['unet']:,}; channels 32/64, cross-attention at both levels)
and `AutoencoderKL` ({info['params']['vae']:,}; 32 x 32 pixels -> 8 x 8 x 4 latents, calibrated
to SD1's latent scale {LATENT_SCALE}), SD1's DDPM schedule, eps prediction. Weights: fp16
`.safetensors`.

## Training data
Pictures drawn by `extension/shapes/draw.py` (seeded): one upright shape ({", ".join(SHAPES)}) in
one of {len(COLOURS)} colours ({", ".join(COLOURS)}; hue jittered by up to 8 degrees), small or
large, at a jittered position, on a white, grey or black background, 32 x 32 pixels; captions such
as "a small red circle on a white background" or the trainer's own subject templates ("a photo of a
red circle, small, white background"); 30 % name only the shape ("a star") or only the colour ("a
red shape"), {plan['uncond']:.0%} are empty. The VAE learns from the same shapes in any hue
(except hues named as a held-out pair's colour for that shape), so that its latents keep colour
and shape apart. {plan['pictures']} pictures each.

**Held out** (never in any picture or caption; every colour and shape in them is seen elsewhere):
{", ".join(f"{c} {s}" for c, s in HELD_OUT)}.

## How well it draws
Share of {info['eval_seeds']} samples per concept (prompt "a <colour> <shape>", DDIM 20 steps,
CFG 5, seeds 0-{info['eval_seeds'] - 1}) that the judge (`extension/shapes/judge.py`) recognises as
that colour and shape. Seen combinations: **{sum(seen) / len(seen):.0%}** on average. Held out
(asked for by name, never trained): {", ".join(f"{k} {v:.0%}" for k, v in held.items())}.

{header}{rows}
`samples.png`: 4 samples of each concept, rows = colours, column groups = shapes.
{_ti_section(info)}
## As a web UI checkpoint
`python -m extension.shapes.checkpoint models/Stable-diffusion/tiny-shapes.safetensors` writes the
checkpoint in the original (ldm) layout with a `tiny-shapes.yaml` describing its narrow
architecture and a `tiny-shapes-clip/` folder (text encoder config and CLIP tokenizer files, named
by absolute path in the `.yaml`); the ldm classes the web UI builds from that `.yaml` compute the
same outputs as the diffusers modules here. The web UI assumes 8 pixels per latent cell, this model
has 4: ask it for 64 x 64 to get the model's 32 x 32 pictures.

Forge does not load it: its detection (`huggingface_guess`) recognises only the released
architectures (SD1 needs 320 UNet channels and 768-wide text), and it builds the text encoder and
VAE from fixed SD1.5 configs, ignoring the `.yaml` (tried in Forge main dfdcbab6: "Failed to
recognize model type!"; our tab then names the checkpoint and says to select another one).

## Reproduce
`nice -n 19 python tools/train_tiny_shapes.py --overwrite` (seed {plan['seed']} and the defaults:
the VAE {plan['vae_steps']} steps x {plan['vae_batch']} pictures; then, at the same time, its
decoder alone {plan['decoder_steps']} steps (a second process) and the UNet with the text encoder
{plan['steps']} steps x {plan['batch']} at learning rate {plan['lr']} (cosine), min-SNR
{plan['min_snr']}, EMA {plan['ema']}). It took {info['seconds']['total'] / 60:.0f} min of wall time
({info['seconds']['vae'] / 60:.0f} min VAE, then {info['seconds']['denoiser'] / 60:.0f} min) on
{info['machine']}, {info['threads']} torch thread per process, on a machine shared with other heavy
work: the main process got {cpu['main'] / info['seconds']['total']:.0%} of a core and used
{cpu['main'] / 60:.0f} min of CPU time (the decoder process {cpu['decoder'] / 60:.0f} min), so on an
idle machine with 2 cores it takes about {cpu['main'] / 60:.0f} min. Results are bit-identical only for the same torch
version and thread count ({info['versions']}).
"""


def _ti_section(info: dict[str, Any]) -> str:
    """The card's textual-inversion results (``info["textual_inversion"]``, from
    ``python -m extension.shapes.quality``), or nothing."""
    ti = info.get("textual_inversion")
    if not ti:
        return ""
    rows = "".join(
        f"| {run['concept']} | {run['seed']} | " + " | ".join(f"{score:.0%}" for _, score in run["scores"])
        + f" | {run['steps_to_target'] if run['steps_to_target'] is not None else 'not reached'} |\n"
        for run in ti["runs"]
    )
    steps = [step for step, _ in ti["runs"][0]["scores"]]
    return f"""
## Textual inversion on it
{ti['recipe']} Score = share of {ti['samples']} seeded previews of "a photo of <embedding>" the judge
recognises as the held-out concept, by optimizer step:

| concept | seed | {" | ".join(str(s) for s in steps)} | steps to 80 % |
|---|---|{"---|" * len(steps)}---|
{rows}
{ti.get('note', '')}
"""


def decoder_job(vae_state: dict, pixels: torch.Tensor, posterior: tuple, plan: Plan, threads: int) -> dict:
    """Fine-tune the decoder of a VAE given by its state (a process of its own; see ``--parallel``)."""
    torch.set_num_threads(threads)
    vae = new_components(plan.seed)["vae"]
    vae.load_state_dict(vae_state)
    finetune_decoder(vae, pixels, posterior, plan, lambda m: print(m, flush=True))
    return {"state": vae.state_dict(), "cpu_seconds": time.process_time()}


def _start_decoder(vae, pixels, posterior, plan: Plan, threads: int, parallel: bool, log):
    """Run :func:`decoder_job` now, or in a spawned process; returns a callable giving its result
    (``state``, and ``cpu_seconds`` of the second process, 0 when it ran here)."""
    state = {k: v.clone() for k, v in vae.state_dict().items()}
    if not parallel:
        result = {**decoder_job(state, pixels, posterior, plan, threads), "cpu_seconds": 0.0}
        return lambda: result
    import concurrent.futures
    import multiprocessing

    pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    future = pool.submit(decoder_job, state, pixels, posterior, plan, threads)
    log("decoder fine-tuning runs in a second process")

    def result() -> dict:
        try:
            return future.result()
        finally:
            pool.shutdown()

    return result


def _machine() -> str:
    """E.g. "a 2-core x86_64 VM (AMD EPYC)": core count, architecture, CPU model where Linux says it."""
    import os

    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), "")  # fmt: skip
    return f"a {os.cpu_count()}-core {platform.machine()} machine" + (f" ({model})" if model else "")


def _write_text(path: Path, text: str) -> None:
    from ..training.outputs import atomic_write

    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Plan)})
    out = Path(args.out)
    if args.card_only or args.rescore:
        info = json.loads((out.parent / "train_info.json").read_text("utf-8"))
        if args.rescore:
            from .model import load_components

            torch.set_num_threads(args.threads)
            info["scores"], info["eval_seeds"] = evaluate(load_components(out), args.eval_seeds), args.eval_seeds
            _write_text(out.parent / "train_info.json", json.dumps(info, indent=1) + "\n")
        _write_text(out.parent / "MODEL_CARD.md", card_text(info))
        return 0
    if out.exists() and not args.overwrite:
        print(f"error: {out} exists; pass --overwrite to replace it or choose another --out", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)

    def log(message: str) -> None:
        print(message, flush=True)

    start = time.monotonic()
    vae_pixels, _ = draw_pool(plan.pictures, plan.seed, "any")
    pixels, specs = draw_pool(plan.pictures, plan.seed + 1, "jittered")
    parts = new_components(plan.seed)
    train_vae(parts["vae"], vae_pixels, plan, log)
    factor = calibrate_latents(parts["vae"], pixels)
    latents = posterior_of(parts["vae"], pixels)[0] * LATENT_SCALE
    vae_seconds = time.monotonic() - start
    log(f"vae done in {vae_seconds:.0f} s; latent rescale {factor:.3f}, std {float(latents.std()):.3f}")
    posterior = posterior_of(parts["vae"], vae_pixels)
    decoder = _start_decoder(parts["vae"], vae_pixels, posterior, plan, args.threads, args.parallel, log)
    unet, text_encoder = train_denoiser(parts["unet"], parts["text_encoder"], latents, specs, plan, log)
    decoded = decoder()
    parts["vae"].load_state_dict(decoded["state"])
    final = {"unet": unet, "vae": parts["vae"].eval(), "text_encoder": text_encoder}
    total = time.monotonic() - start
    scores = evaluate(final, args.eval_seeds)
    info = {
        "plan": dataclasses.asdict(plan),
        "seconds": {"vae": vae_seconds, "denoiser": total - vae_seconds, "total": total},
        "cpu_seconds": {"main": time.process_time(), "decoder": decoded["cpu_seconds"]},
        "threads": args.threads,
        "machine": _machine(),
        "versions": f"torch {torch.__version__}",
        "scores": scores,
        "eval_seeds": args.eval_seeds,
        "params": {k: sum(p.numel() for p in m.parameters()) for k, m in final.items()},
    }
    save_weights(final, out, info)
    _write_text(out.parent / "MODEL_CARD.md", card_text(info))
    _write_text(out.parent / "train_info.json", json.dumps(info, indent=1) + "\n")
    sample_sheet(final, out.parent / "samples.png")
    seen = [v for k, v in scores.items() if not is_held_out(*k.split())]
    log(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {total / 60:.1f} min; seen concepts judged right: "
        f"{sum(seen) / len(seen):.0%}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
