"""AND composition: one positive prompt split into weighted parts, as the web UI (v1.10.1) does."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Part", "split_and", "split_and_parts"]

_AND_RE = re.compile(r"\bAND\b")
# The part text is the shortest prefix after which an optional ':number' and whitespace end the
# part; so trailing whitespace is dropped and leading whitespace kept. No exponents; \d is Unicode.
_PART_RE = re.compile(r"(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$", re.DOTALL)


@dataclass(frozen=True)
class Part:
    """One AND part: its text, composition weight, and where it sits in the prompt."""

    text: str
    weight: float
    start: int  # offset of the part (and of its text) in the whole prompt
    weight_start: int  # offset of the ':number', or -1 when the part has none


def split_and_parts(text: str) -> list[Part]:
    """Like `split_and`, with the offsets of each part and of its ``:number`` weight."""
    parts = []
    start = 0
    bounds = [(m.start(), m.end()) for m in _AND_RE.finditer(text)]
    bounds.append((len(text), len(text)))
    for end, next_start in bounds:
        m = _PART_RE.match(text, start, end)
        number = m.group(2)
        if number is None:
            parts.append(Part(m.group(1), 1.0, start, -1))
        else:
            colon = text.rindex(":", start, m.start(2))
            parts.append(Part(m.group(1), float(number), start, colon))
        start = next_start
    return parts


def split_and(text: str) -> list[tuple[str, float]]:
    """Split a positive prompt into ``(subprompt, weight)`` parts, one per part, in order.

    The prompt is cut at every whole word ``AND`` (brackets do not protect it), and a part that
    ends in ``:number`` gets that composition weight (else 1.0). Trailing whitespace of a part is
    removed, leading whitespace kept, and identical parts are not merged. This applies even
    without ``AND``: ``"aspect 16:9"`` gives ``[("aspect 16", 9.0)]``.
    """
    return [(p.text, p.weight) for p in split_and_parts(text)]
