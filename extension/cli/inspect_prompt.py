"""``inspect-prompt``: show how the web UI reads a prompt, step by step.

Extra networks removed, AND parts, the prompt-editing schedule, emphasis runs, the 77-token chunks
(with the real CLIP tokenizer), the embeddings found, and lint warnings.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

HELP = "show how the web UI parses, schedules, weights and chunks a prompt"

EMPHASIS_CHOICES = ("Original", "No norm", "Ignore", "None")


def _embedding_arg(text: str) -> tuple[str, int]:
    name, sep, count = text.rpartition("=")
    if not sep or not name.strip() or not count.strip().isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VECTORS; write it like --embedding myface=8")
    return name.strip(), int(count)


def _backtrack_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 74:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the comma backtrack is a whole number from 0 (off) to 74"
        )
    return value


def _steps_arg(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: steps must be a whole number of at least 1")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="the prompt text (quote it)")
    parser.add_argument(
        "--embedding",
        action="append",
        default=[],
        type=_embedding_arg,
        metavar="NAME=N",
        help="a textual-inversion embedding the prompt may use, with its vector count (repeatable)",
    )
    parser.add_argument("--steps", type=_steps_arg, default=20, help="sampling steps for prompt editing (20)")
    parser.add_argument(
        "--comma-backtrack",
        type=_backtrack_arg,
        default=20,
        metavar="N",
        help="the web UI's 'Prompt word wrap length limit', 0 = off (20)",
    )
    parser.add_argument(
        "--emphasis", choices=EMPHASIS_CHOICES, default="Original", help="emphasis mode (Original)"
    )
    parser.add_argument(
        "--openclip", action="store_true", help="SD2 / SDXL CLIP-G: pad with 0 after the first END"
    )
    parser.add_argument(
        "--negative", action="store_true", help="treat it as a negative prompt (no AND split)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")


@dataclass
class Variant:
    """One distinct schedule text of one AND part."""

    steps: list[tuple[int, int]]  # (first, last) sampling-step spans that use this text
    text: str
    runs: list[tuple[str, float]] | None = None
    chunks: list[dict[str, Any]] = field(default_factory=list)
    token_count: int = 0
    target_token_count: int = 75
    error: str | None = None


def _chunk_view(chunk, tokenizer, embeddings: dict[str, int]) -> dict[str, Any]:
    """Decoded, compact form of one chunk: weighted groups of tokens and placed embeddings."""
    special = tokenizer.special
    body = chunk.tokens[1:-1]
    mults = chunk.multipliers[1:-1]
    fixes = dict(chunk.fixes)
    if special.pad != special.end:  # OpenCLIP: everything after the first END is padding
        length = body.index(special.end) if special.end in body else len(body)
    else:
        length = len(body)
        while length and body[length - 1] == special.end:
            length -= 1
    items: list[tuple[str, float]] = []
    warnings: list[str] = []
    i = 0
    while i < length:
        if i in fixes and body[i] == 0:
            n = embeddings[fixes[i]]
            items.append((f"<{fixes[i]}>", mults[i]))
            i += n
            continue
        if body[i] == 0:  # placeholders whose fix stayed in the previous chunk
            j = i
            while j < length and body[j] == 0 and j not in fixes:
                j += 1
            items.append((f"<{j - i} orphan placeholders>", mults[i]))
            warnings.append(
                f"{j - i} embedding placeholders at {i} have no vectors: the comma backtrack moved them "
                "but left the embedding in the previous chunk (a web UI bug)"
            )
            i = j
            continue
        j = i
        while j < length and body[j] != 0 and mults[j] == mults[i]:
            j += 1
        items.append((tokenizer.decode(body[i:j]), mults[i]))
        i = j
    for offset, name in chunk.fixes:
        if offset >= length or body[offset] != 0:
            warnings.append(
                f"embedding {name!r} at {offset} now lands on padding (web UI comma-backtrack bug)"
            )
    return {
        "tokens": chunk.tokens,
        "multipliers": chunk.multipliers,
        "fixes": [list(f) for f in chunk.fixes],
        "used": length,
        "text": _compact(items),
        "warnings": warnings,
    }


def _weight(w: float) -> str:
    return f"{w:.4g}"


def _compact(items: list[tuple[str, float]]) -> str:
    out = []
    for text, w in items:
        out.append(text if w == 1.0 else f"({text}:{_weight(w)})")
    return " ".join(out)


def _distinct_texts(schedule: list[tuple[int, str]]) -> dict[str, list[tuple[int, int]]]:
    """Each distinct schedule text with the (first, last) step spans that use it, in order."""
    texts: dict[str, list[tuple[int, int]]] = {}
    prev_end = 0
    for end, text in schedule:
        spans = texts.setdefault(text, [])
        if spans and spans[-1][1] == prev_end:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((prev_end + 1, end))
        prev_end = end
    return texts


def _spans_text(spans: list[tuple[int, int]]) -> str:
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def analyse(args: argparse.Namespace) -> dict[str, Any]:
    """Everything ``inspect-prompt`` shows, as plain data."""
    from ..prompt.chunking import chunk_segments, parse_segments
    from ..prompt.composition import split_and
    from ..prompt.extra_networks import EXTRA_NETWORK, strip_extra_networks
    from ..prompt.lint import lint
    from ..prompt.scheduling import schedule_prompt
    from ..tokenizer import clip_tokenizer, open_clip_tokenizer

    tokenizer = open_clip_tokenizer() if args.openclip else clip_tokenizer()
    embeddings = dict(args.embedding)
    prompt = args.prompt
    stripped = strip_extra_networks(prompt)
    parts = [(stripped, 1.0)] if args.negative else split_and(stripped)
    result: dict[str, Any] = {
        "prompt": prompt,
        "extra_networks": [m.group(0) for m in EXTRA_NETWORK.finditer(prompt)],
        "options": {
            "steps": args.steps,
            "comma_backtrack": args.comma_backtrack,
            "emphasis": args.emphasis,
            "openclip": args.openclip,
            "negative": args.negative,
        },
        "parts": [],
        "embeddings": {name: {"vectors": n, "used": False} for name, n in embeddings.items()},
        "lint": [asdict(d) for d in lint(prompt, list(embeddings))],
    }
    token_count = 0
    errors = 0
    for text, weight in parts:
        try:
            schedule = [(int(e), str(t)) for e, t in schedule_prompt(text, args.steps)]
        except (ValueError, OverflowError) as exc:
            schedule = [(args.steps, text)]
            result.setdefault("schedule_errors", []).append(f"{type(exc).__name__}: {exc}")
        variants = []
        for variant_text, spans in _distinct_texts(schedule).items():
            v = Variant(spans, variant_text)
            try:
                v.runs = [(str(t), float(w)) for t, w in parse_segments(variant_text, args.emphasis)]
            except ValueError as exc:
                v.error = str(exc)
                errors += 1
                variants.append(v)
                continue
            chunked = chunk_segments(
                v.runs,
                tokenizer.encode_batch,
                tokenizer.special,
                embeddings,
                comma_backtrack=args.comma_backtrack,
            )
            v.chunks = [_chunk_view(c, tokenizer, embeddings) for c in chunked.chunks]
            v.token_count, v.target_token_count = chunked.token_count, chunked.target_token_count
            token_count = max(token_count, v.token_count)
            for chunk in chunked.chunks:
                for _, name in chunk.fixes:
                    result["embeddings"][name]["used"] = True
            variants.append(v)
        result["parts"].append(
            {
                "text": text,
                "weight": weight,
                "schedule": [list(entry) for entry in schedule],
                "variants": [asdict(v) for v in variants],
            }
        )
    result["token_count"] = token_count
    result["target_token_count"] = -(-max(token_count, 1) // 75) * 75
    result["errors"] = errors
    return result


def format_text(res: dict[str, Any]) -> str:
    """The analysis of :func:`analyse` as the human-readable text this command prints."""
    out = io.StringIO()
    _print_text(res, out)
    return out.getvalue()


def _print_text(res: dict[str, Any], out) -> None:
    w = out.write
    w(f"prompt: {res['prompt']!r}\n")
    w(f"tokens: {res['token_count']}/{res['target_token_count']}\n")
    if res["extra_networks"]:
        w(f"extra networks (removed): {' '.join(res['extra_networks'])}\n")
    for msg in res.get("schedule_errors", []):
        w(f"schedule error: {msg}\n")
    parts = res["parts"]
    if len(parts) > 1 or parts[0]["weight"] != 1.0:
        w(f"AND parts: {len(parts)}\n")
    for p_index, part in enumerate(parts, 1):
        indent = ""
        if len(parts) > 1 or part["weight"] != 1.0:
            w(f"\npart {p_index}, weight {_weight(part['weight'])}: {part['text']!r}\n")
            indent = "  "
        variants = part["variants"]
        if len(variants) > 1:
            w(f"{indent}prompt editing over {res['options']['steps']} steps: {len(variants)} texts\n")
        for v in variants:
            sub = indent
            if len(variants) > 1:
                w(f"{indent}steps {_spans_text(v['steps'])}: {v['text']!r}\n")
                sub = indent + "  "
            if v["error"]:
                w(f"{sub}error: {v['error']}\n")
                continue
            note = {"Ignore": " (weights parsed but ignored)", "None": " (not parsed: brackets are text)"}
            w(f"{sub}emphasis runs{note.get(res['options']['emphasis'], '')}:\n")
            for text, weight in v["runs"]:
                if text == "BREAK" and weight == -1:
                    w(f"{sub}  BREAK\n")
                else:
                    w(f"{sub}  {_weight(weight):>8}  {text!r}\n")
            w(f"{sub}chunks: {len(v['chunks'])}, tokens {v['token_count']}/{v['target_token_count']}\n")
            for c_index, chunk in enumerate(v["chunks"], 1):
                extra = f", {len(chunk['tokens']) - 2} total" if len(chunk["tokens"]) != 77 else ""
                w(f"{sub}  {c_index}: [{chunk['used']} tokens{extra}] {chunk['text']}\n")
                for warning in chunk["warnings"]:
                    w(f"{sub}     warning: {warning}\n")
    if res["embeddings"]:
        w("\nembeddings:\n")
        for name, info in res["embeddings"].items():
            w(
                f"  {name}: {info['vectors']} vectors, {'used' if info['used'] else 'not found in the prompt'}\n"
            )
    if res["lint"]:
        w("\nlint:\n")
        for d in res["lint"]:
            w(f"  {d['severity']} at {d['position']}: {d['message']}\n")
    else:
        w("\nlint: no problems found\n")


def run(args: argparse.Namespace) -> int:
    res = analyse(args)
    if args.json:
        json.dump(res, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        _print_text(res, sys.stdout)
    return 1 if res["errors"] else 0
