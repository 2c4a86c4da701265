"""Warnings for prompt syntax the web UI accepts silently but that rarely does what was meant."""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from dataclasses import dataclass

from .composition import split_and_parts
from .emphasis import KIND_BREAK, TOKEN_RE, PromptSyntaxError, evaluate
from .scheduling import Alternate, Scheduled, parse_schedule, render_slices, walk_nodes

__all__ = ["Diagnostic", "lint"]

_AND_RE = re.compile(r"\bAND\b")
_BREAK_ANY_CASE_RE = re.compile(r"\bbreak\b", re.IGNORECASE)
_NUMBERISH_RE = re.compile(r"\s*[+-]?[\d.]+\s*$")


@dataclass(frozen=True)
class Diagnostic:
    """One finding: ``position`` is a character offset into the linted text."""

    position: int
    message: str
    severity: str = "warning"  # "error" (generation fails), "warning" or "info"


def lint(text: str, embeddings: Collection[str] | None = None) -> list[Diagnostic]:
    """Find likely mistakes in a positive prompt, sorted by position.

    Checks unbalanced and overlapping brackets, ``:weight`` values that are not numbers (or that
    make generation fail), colons inside ``[...]`` that is not valid prompt editing,
    ``[text:1.5]`` written for a weight, ``break`` not in capitals, ``BREAK`` inside brackets,
    ``|`` outside an alternation, ``AND`` inside brackets, a trailing ``:number`` read as a
    composition weight and, given the known embedding names, words that differ from one only
    by ``-`` versus ``_`` (case does not matter: the tokenizer lower-cases).
    """
    found: dict[tuple[int, str], Diagnostic] = {}

    def add(position: int, message: str, severity: str = "warning") -> None:
        found.setdefault((position, message), Diagnostic(position, message, severity))

    _check_and(text, add)
    for part in split_and_parts(text):
        _check_part(part.text, part.start, add)
    for m in _BREAK_ANY_CASE_RE.finditer(text):
        word = m.group()
        if word != "BREAK":
            add(
                m.start(),
                f"'{word}' is ordinary text, not a chunk break: only BREAK in capitals starts a "
                f"new 75-token chunk. Write BREAK if you meant one.",
                "info" if word == "break" else "warning",
            )
    if embeddings:
        _check_embeddings(text, embeddings, add)
    return sorted(found.values(), key=lambda d: (d.position, d.message))


def _check_and(text: str, add) -> None:
    parts = split_and_parts(text)
    if len(parts) == 1:
        part = parts[0]
        if part.weight_start >= 0:
            number = text[part.weight_start + 1:].strip()
            add(
                part.weight_start,
                f"The trailing ':{number}' is "
                f"read as an AND composition weight (it multiplies the CFG scale) and removed "
                f"from the text. If it is meant as text, put a comma or a word after it.",
            )
        return
    round_open: list[int] = []
    square_open: list[int] = []
    ands = iter(m.start() for m in _AND_RE.finditer(text))
    next_and = next(ands, None)
    for m in TOKEN_RE.finditer(text):
        while next_and is not None and next_and < m.end():
            if round_open or square_open:
                opener = max(round_open[-1:] + square_open[-1:])
                add(
                    next_and,
                    f"AND is inside the bracket opened at {opener}: the prompt is split at AND "
                    f"before brackets are read, so the bracket is cut in two. Close it before AND.",
                )
            next_and = next(ands, None)
        kind = m.lastgroup
        if kind == "open":
            (round_open if m.group() == "(" else square_open).append(m.start())
        elif kind == "close" or kind == "weight":
            stack = square_open if m.group() == "]" else round_open
            if stack:
                stack.pop()


def _check_part(text: str, offset: int, add) -> None:
    parsed = parse_schedule(text)
    nodes = parsed.nodes
    if nodes is None:
        nodes = [(0, len(text))]
        if "[" in text:
            add(
                offset + parsed.error_position,
                f"A {parsed.error} makes the prompt-editing parse fail, so every [from:to:step] "
                f"and [a|b] in this prompt is used as literal, de-emphasised text. "
                + ("Escape it as '\\|' or move it into an [a|b] alternation."
                   if "'|'" in parsed.error else "Remove it or write '\\\\'."),
            )
    options = 2
    for node in walk_nodes(nodes):
        if isinstance(node, Alternate):
            options = max(options, len(node.options))
            continue
        value = float(node.number)
        if not math.isfinite(value):
            add(offset + node.number_pos,
                f"The step number {node.number} is too large: generation fails with an "
                f"OverflowError. Use a step count or a fraction such as 0.5.", "error")
        elif node.before is None and "." in node.number and value >= 1:
            add(
                offset + node.start,
                f"'{text[node.start:node.end]}' is prompt editing, not a weight: the text is added "
                f"only after {node.number} x the steps, so it never appears (except in a hires "
                f"pass). For a weight write (text:{node.number}).",
            )
    for k in range(options):
        def pick(node, k=k):
            if isinstance(node, Scheduled):
                return node.before if k == 0 else node.after
            return node.options[k % len(node.options)]

        slices = render_slices(nodes, pick)
        posmap = [p for a, b in slices for p in range(offset + a, offset + b)]
        variant = "".join(text[a:b] for a, b in slices)
        posmap.append(offset + len(text))
        _check_emphasis(variant, posmap, add, parsed.nodes is None)


def _check_emphasis(text: str, posmap: list[int], add, editing_failed: bool) -> None:
    """Bracket, weight and BREAK checks on one text that has no prompt editing left."""
    round_open: list[tuple[int, list[int]]] = []  # (position, literal ':' positions inside)
    square_open: list[tuple[int, list[int]]] = []

    def overlap(closer: int, opened: int, other: list[tuple[int, list[int]]], sign: str) -> None:
        if other and other[-1][0] > opened:
            add(posmap[closer],
                f"'{text[closer]}' closes the bracket opened at {posmap[opened]} while '{sign}' "
                f"opened at {posmap[other[-1][0]]} inside it is still open: the brackets overlap, "
                f"so the weights do not nest as written. Close the inner bracket first.")

    for m in TOKEN_RE.finditer(text):
        kind, start = m.lastgroup, m.start()
        if kind == "open":
            (round_open if m.group() == "(" else square_open).append((start, []))
        elif kind == "text":
            if m.group() == ":" and (round_open or square_open):
                inner = max(round_open[-1:] + square_open[-1:])
                inner[1].append(start)
        elif kind == "weight":
            number = m.group("weight")
            if not round_open:
                add(posmap[m.end() - 1],
                    f"'{m.group().strip()}' has no '(' to close, so it is literal text. "
                    f"Add the '(' or remove it.")
                continue
            opened, colons = round_open.pop()
            overlap(m.end() - 1, opened, square_open, "[")
            try:
                float(number)
            except ValueError:
                add(posmap[m.start("weight")],
                    f"The weight '{number}' is not a number: the web UI fails with 'could not "
                    f"convert string to float'. Write a plain decimal such as 1.2.", "error")
            if colons:
                add(posmap[colons[0]],
                    f"Only the last ':number)' of a group is its weight: this ':' and the text "
                    f"after it up to ':{number}' are literal text.")
        elif kind == "close":
            stack, other, sign = (
                (round_open, square_open, "[") if m.group() == ")" else (square_open, round_open, "(")
            )
            if not stack:
                add(posmap[start],
                    f"'{m.group()}' has no matching opening bracket, so it is literal text. "
                    f"Remove it or escape it as '\\{m.group()}'.")
                continue
            opened, colons = stack.pop()
            overlap(start, opened, other, sign)
            if colons and m.group() == ")":
                add(posmap[colons[0]],
                    f"The text after this ':' is not a number followed by ')' (exponents, commas "
                    f"and words are not weights), so ':{text[colons[0] + 1:start]}' is literal "
                    f"text and the group gets the default x1.1. Write e.g. (text:1.2).")
            elif colons:
                if editing_failed:
                    hint = " Prompt editing is off for this whole prompt (see the other warning)."
                elif len(colons) == 1 and _NUMBERISH_RE.match(text[colons[0] + 1:start]):
                    hint = " [text:w] is not a weight: [...] always divides by 1.1; write (text:w)."
                else:
                    hint = " Prompt editing needs [from:to:step] or [to:step] with a number."
                add(posmap[colons[0]],
                    "This ':' inside [...] is literal text: the brackets only de-emphasise (/1.1)."
                    + hint)
    for opened, colons in round_open:
        hint = " A weight needs a closing ')', as in (text:1.2)." if colons else ""
        add(posmap[opened],
            "'(' is never closed, so everything after it to the end of the prompt is weighted "
            "x1.1. Add ')' or escape it as '\\('." + hint)
    for opened, _ in square_open:
        add(posmap[opened],
            "'[' is never closed, so everything after it to the end of the prompt is weighted "
            "/1.1. Add ']' or escape it as '\\['.")
    try:
        ev = evaluate(text)
    except PromptSyntaxError:
        return  # already reported as an error above
    for kind, weight, start in zip(ev.kinds, ev.weights, ev.starts):
        if kind == KIND_BREAK and weight != -1.0:
            add(posmap[start],
                f"BREAK inside brackets is not a chunk break: it is encoded as the word 'break' "
                f"with weight {weight:g}. Move it outside the brackets.")


def _check_embeddings(text: str, embeddings: Collection[str], add) -> None:
    def key(name: str) -> str:
        return name.lower().replace("-", "_")

    known_lower = {name.lower() for name in embeddings}
    by_key: dict[str, str] = {}
    for name in sorted(embeddings):
        if ("-" in name or "_" in name) and name.strip():
            by_key.setdefault(key(name), name)
    if not by_key:
        return
    pieces = sorted(by_key, key=len, reverse=True)
    alternation = "|".join("[-_]".join(re.escape(s) for s in re.split("[-_]", k)) for k in pieces)
    pattern = re.compile(rf"(?<![\w-])(?:{alternation})(?![\w-])", re.IGNORECASE)
    for m in pattern.finditer(text):
        word = m.group()
        if word.lower() in known_lower:
            continue  # a known name (case does not matter: the tokenizer lower-cases)
        name = by_key.get(key(word))
        if name is None:  # matched only through Unicode case folding
            continue
        add(m.start(),
            f"'{word}' is not a known embedding but looks like '{name}': '-' and '_' are "
            f"different tokens, so it is read as ordinary words. Write '{name}'.")
