"""``python -m extension convert IN OUT``: between .pt, .safetensors and PNG/WEBP embedding cards."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ..limits import name_problem
from .errors import describe_os_error

if TYPE_CHECKING:  # torch and Pillow come with these: imported when the command runs, never for --help
    from PIL import Image

    from ..embedding import Embedding

HELP = "convert an embedding between .pt, .safetensors and PNG cards (e.g. x.pt -> x.safetensors)"

CARD_SUFFIXES = (".png", ".webp")
TENSOR_SUFFIXES = (".safetensors", ".pt", ".bin")
OUTPUT_SUFFIXES = TENSOR_SUFFIXES + CARD_SUFFIXES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN", help="embedding file: .pt, .bin, .safetensors, .png, .webp")
    parser.add_argument(
        "output",
        metavar="OUT",
        help="output: .safetensors, .pt, .png card or lossless .webp card (pixels only)",
    )
    parser.add_argument("--image", metavar="PICTURE", help="picture for a card (default: a generated one)")
    parser.add_argument("--name", help="rename the embedding (its trigger word in the payload and metadata)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUT if it exists (kept as OUT.bak until done)"
    )


def _open_picture(path: str) -> Image.Image:
    from PIL import Image

    from ..png.extract import MAX_PIXELS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.size[0] * im.size[1] > MAX_PIXELS:
                    raise ValueError(f"{path}: picture too large ({im.size[0]}x{im.size[1]})")
                im.load()
                return im.copy()
    except (OSError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"{path}: cannot read the picture ({exc})") from None


def _write_card(emb, out: Path, picture: str | None, overwrite: bool) -> None:
    from ..embedding.atomic import atomic_write_bytes
    from ..png import NoPixelBandsWarning, embed_in_png, plain_card_image, save_png_card

    image = _open_picture(picture) if picture else plain_card_image(emb)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NoPixelBandsWarning)
        card, info = embed_in_png(image, emb)
    skipped = any(issubclass(w.category, NoPixelBandsWarning) for w in caught)
    if out.suffix.lower() == ".webp":
        if skipped:
            raise ValueError("SDXL embeddings can only be carried by a PNG text chunk; use a .png output")
        import io

        buf = io.BytesIO()
        card.save(buf, "WEBP", lossless=True, quality=100, method=4, exact=True)
        atomic_write_bytes(out, buf.getvalue(), overwrite=overwrite)
    else:
        save_png_card(out, card, info, overwrite=overwrite)
        if skipped:
            print(
                "note: SDXL embeddings cannot go into pixel bands; the card carries it only in its text chunk",
                file=sys.stderr,
            )


def _stored_keys(emb: Embedding, out: Path) -> set[str]:
    """The keys the written file holds besides the vectors (from the very object written)."""
    from ..embedding.save import resolve_format, safetensors_metadata, webui_pt_object
    from ..png.card import payload_for

    if out.suffix.lower() in CARD_SUFFIXES:
        return set(payload_for(emb))
    if resolve_format(out, None)[1] == "pt":
        return set(webui_pt_object(emb))
    return set(safetensors_metadata(emb))


def _training_fields(emb: Embedding, out: Path) -> tuple[list[str], list[str]]:
    """``(kept, not kept)``: name, step and checkpoint of ``emb`` as the output file holds them or not.

    An SDXL ``.pt`` or card holds only clip_l and clip_g; its name is then the file's, so only a
    different name counts as lost."""
    stored = _stored_keys(emb, out)
    checkpoint = " ".join(
        x for x in (emb.checkpoint_name, f"[{emb.checkpoint_hash}]" if emb.checkpoint_hash else None) if x
    )
    fields = [
        ("name", f"name {emb.name!r}", emb.name != out.stem),
        ("step", f"step {emb.step}", emb.step is not None),
        ("sd_checkpoint", f"checkpoint {checkpoint}", bool(checkpoint)),
    ]
    kept = [text for key, text, _ in fields if key in stored]
    lost = [text for key, text, matters in fields if key not in stored and matters]
    return kept, lost


def _report(emb: Embedding, written: Path) -> None:
    kept, lost = _training_fields(emb, written)
    source = emb.metadata.get("source_files")
    print(
        f"wrote {written}: {emb.n_vectors} vectors, width {emb.width} ({emb.model_family})"
        + (f" from {source}" if source else "")
        + (f"; holds {', '.join(kept)}" if kept else "")
    )
    if lost:
        print(
            f"note: not kept: {', '.join(lost)} - an SDXL .pt file or card holds only clip_l and clip_g "
            f"(the web UI's SDXL loader fails on any other key) and is named after the file "
            f"({written.stem!r}); a .safetensors output keeps them",
            file=sys.stderr,
        )


def argument_problems(args: argparse.Namespace) -> list[str]:
    """What is wrong with the arguments, before anything is read or written."""
    problems = []
    out = Path(args.output)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        problems.append(
            f"{out.name}: unsupported output type {out.suffix or '(none)'}; give OUT one of "
            f"{', '.join(OUTPUT_SUFFIXES)} (.webp cards are lossless)"
        )
    if args.name is not None and name_problem(args.name):
        problems.append(name_problem(args.name))
    if args.image and out.suffix.lower() not in CARD_SUFFIXES:
        problems.append("--image is only used for .png/.webp card outputs")
    return problems


def run(args: argparse.Namespace) -> int:
    problems = argument_problems(args)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    from ..embedding import EmbeddingFormatError, load_embedding, save_embedding

    src, out = Path(args.input), Path(args.output)
    try:
        emb = load_embedding(src)
        if args.name:
            emb = emb.replace(name=args.name)
        if out.suffix.lower() in CARD_SUFFIXES:
            _write_card(emb, out, args.image, args.overwrite)
            written = out
        else:
            written = save_embedding(emb, out, overwrite=args.overwrite)
    except OSError as exc:
        print(f"error: {describe_os_error(exc) if not isinstance(exc, FileExistsError) else exc}", file=sys.stderr)
        return 1
    except (EmbeddingFormatError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _report(emb, Path(written))
    return 0
