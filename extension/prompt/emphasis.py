"""Emphasis syntax of the web UI: ``(a)``, ``[a]``, ``(a:1.3)``, escapes and ``BREAK``.

`parse_emphasis` returns the same ``(text, weight)`` runs as the web UI (v1.10.1) for every input
string, bit for bit: weights are built by multiplying in the order the brackets close, and adjacent
runs are merged only when their weights compare equal as floats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["BREAK_WEIGHT", "PromptSyntaxError", "escape", "parse_emphasis"]

ROUND_FACTOR = 1.1
SQUARE_FACTOR = 1 / 1.1
# Weight of an unmultiplied BREAK marker; the chunker treats ("BREAK", -1.0) as a chunk break.
BREAK_WEIGHT = -1.0

# Alternatives are tried in order and the first that matches wins (not the longest), so the
# escapes must precede the lone backslash and the weight must precede the literal ':'.
# Together they match every character. \s and \d are Unicode-aware, as in the web UI.
TOKEN_RE = re.compile(
    r"""
    \\(?P<esc>[()\[\]\\])            # escaped ( ) [ ] or backslash
    | (?P<lone>\\)                   # any other backslash: dropped
    | (?P<open>[(\[])
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)   # ':1.5)' closes a round group with a weight
    | (?P<close>[)\]])
    | (?P<text>[^\\()\[\]:]+ | :)
    """,
    re.VERBOSE,
)
BREAK_RE = re.compile(r"\s*\bBREAK\b\s*")

# Entry kinds of the unmerged evaluation (used by the linter).
KIND_TEXT = 0
KIND_BREAK = 1


class PromptSyntaxError(ValueError):
    """A prompt the web UI refuses too: a ``:weight)`` that is not a valid number.

    The message starts with Python's own ``float()`` message (``could not convert string to
    float: '1.2.3'``), which is what the web UI reports for the same prompt.
    """

    def __init__(self, message: str, position: int, weight: str) -> None:
        super().__init__(message)
        self.position = position
        self.weight = weight


@dataclass
class Evaluation:
    """Unmerged result of the emphasis pass, with where each entry came from."""

    texts: list[str]
    weights: list[float]
    starts: list[int]  # offset in the input of the token that produced the entry
    kinds: list[int]


def _to_float(number: str, position: int) -> float:
    try:
        return float(number)
    except ValueError as exc:
        raise PromptSyntaxError(
            f"{exc} (the weight {number!r} at position {position} is not a number; "
            f"write a plain decimal such as 1.2)",
            position,
            number,
        ) from None


def evaluate(text: str) -> Evaluation:
    """Run the emphasis pass without merging; raise `PromptSyntaxError` on a bad weight."""
    texts: list[str] = []
    weights: list[float] = []
    starts: list[int] = []
    kinds: list[int] = []
    round_stack: list[int] = []
    square_stack: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for k in range(start, len(weights)):
            weights[k] *= factor

    def add_text(chunk: str, start: int) -> None:
        if "BREAK" not in chunk:
            texts.append(chunk)
            weights.append(1.0)
            starts.append(start)
            kinds.append(KIND_TEXT)
            return
        pos = 0
        for m in BREAK_RE.finditer(chunk):
            texts.append(chunk[pos : m.start()])
            weights.append(1.0)
            starts.append(start + pos)
            kinds.append(KIND_TEXT)
            texts.append("BREAK")
            weights.append(BREAK_WEIGHT)
            starts.append(start + m.start() + m.group().index("BREAK"))
            kinds.append(KIND_BREAK)
            pos = m.end()
        texts.append(chunk[pos:])
        weights.append(1.0)
        starts.append(start + pos)
        kinds.append(KIND_TEXT)

    for m in TOKEN_RE.finditer(text):
        kind = m.lastgroup
        if kind == "text":
            add_text(m.group(), m.start())
        elif kind == "open":
            (round_stack if m.group() == "(" else square_stack).append(len(texts))
        elif kind == "close":
            if m.group() == ")":
                if round_stack:
                    multiply(round_stack.pop(), ROUND_FACTOR)
                    continue
            elif square_stack:
                multiply(square_stack.pop(), SQUARE_FACTOR)
                continue
            add_text(m.group(), m.start())
        elif kind == "weight":
            if round_stack:
                multiply(round_stack.pop(), _to_float(m.group("weight"), m.start("weight")))
            else:
                add_text(m.group(), m.start())
        else:  # escaped character or lone backslash
            texts.append(m.group("esc") or "")
            weights.append(1.0)
            starts.append(m.start())
            kinds.append(KIND_TEXT)

    # Unclosed brackets reach to the end: round ones first, each stack from the bottom up.
    for start in round_stack:
        multiply(start, ROUND_FACTOR)
    for start in square_stack:
        multiply(start, SQUARE_FACTOR)
    return Evaluation(texts, weights, starts, kinds)


def parse_emphasis(text: str) -> list[tuple[str, float]]:
    """Split a prompt into ``(text, weight)`` runs exactly as the web UI does.

    ``BREAK`` markers appear as ``("BREAK", w)``; only ``w == -1.0`` is a chunk break (a marker
    inside brackets gets multiplied like any text). Raises `PromptSyntaxError` (a ValueError) for a
    ``:weight)`` that ``float()`` rejects, such as ``(a:1.2.3)``.
    """
    ev = evaluate(text)
    if not ev.texts:
        return [("", 1.0)]
    out_texts = [ev.texts[0]]
    out_weights = [ev.weights[0]]
    for chunk, weight in zip(ev.texts[1:], ev.weights[1:]):
        # Float equality, like the web UI: 0.0 == -0.0 merges, NaN never does.
        if weight == out_weights[-1]:
            out_texts[-1] += chunk
        else:
            out_texts.append(chunk)
            out_weights.append(weight)
    return list(zip(out_texts, out_weights))


_SPECIAL_RE = re.compile(r"[\\()\[\]:|]")
# Keywords that act on whole words; a backslash inside them (dropped by the emphasis pass) hides them.
_KEYWORD_RE = re.compile(r"\b(?:BREA(?=K\b)|AN(?=D\b))")


def escape(text: str) -> str:
    """Make ``text`` literal: ``parse_emphasis(escape(s)) == [(s, 1.0)]`` for every string ``s``.

    ``\\ ( ) [ ]`` get a backslash, and so do ``:`` and ``|`` so that prompt editing
    (``[a:b:5]``, ``[a|b]``) cannot pick them up either. The whole words ``BREAK`` and ``AND``
    get a backslash inside (``BREA\\K``, ``AN\\D``): the emphasis pass drops it, but the words no
    longer split the prompt. Not neutralised: a ``:number`` at the very end of a whole positive
    prompt, which the AND step reads as a composition weight.
    """
    text = _SPECIAL_RE.sub(r"\\\g<0>", text)
    return _KEYWORD_RE.sub(r"\g<0>\\", text)
