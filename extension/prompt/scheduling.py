"""Prompt editing ``[from:to:when]`` and alternation ``[a|b]``, as the web UI (v1.10.1) expands them.

The web UI parses with an ambiguous lark grammar; this is an independent parser for the same
language. Where the grammar allows several parses, this one always takes a ``[`` or ``(`` as
syntax when the bracketed text can be a well-formed group, and as a literal character otherwise
(lark 1.1.2 picks by hash seed there; lark >= 1.1.6 behaves like this parser).

The language, in short: inside any group, brackets must nest properly and every ``[``/``(`` must
itself be a valid group. A group is ``(p)``, ``(p:p)``, ``[p]``, ``[p|p?|...]`` or
``[p:p:N]``/``[p:N]`` where ``N`` is a number (ASCII digits, optional sign, fraction and exponent).
Outside all groups any bracket or ``:`` may stand alone as text, but a ``|`` may not, and nor may
a backslash that starts no ``\\x`` pair (one at the end or before a line break): either makes the
whole parse fail, and then the prompt is used unchanged at every step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ScheduleParse", "parse_schedule", "schedule_prompt"]

# A run of plain text or whitespace; a backslash pairs with any following character but a newline.
_PLAIN_RE = re.compile(r"(?:[^\\\[\]():|]|\\.)+")
# lark's SIGNED_NUMBER, with its alternatives in lark's order (the first that matches wins).
_NUMBER_RE = re.compile(
    r"[+-]?(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.(?:[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+)"
)
_WS_RE = re.compile(r"\s*")

Slice = tuple[int, int]  # verbatim text[start:end]


class Scheduled:
    """``[before:after:number]``; ``before`` is None when the group has a single ``:``."""

    __slots__ = ("after", "before", "end", "number", "number_pos", "start")

    def __init__(self, before: list | None, after: list, number: str, number_pos: int,
                 start: int, end: int) -> None:
        self.before = before
        self.after = after
        self.number = number
        self.number_pos = number_pos
        self.start = start
        self.end = end


class Alternate:
    """``[a|b|...]``: one option per step, cycling."""

    __slots__ = ("end", "options", "start")

    def __init__(self, options: list[list], start: int, end: int) -> None:
        self.options = options
        self.start = start
        self.end = end


Node = Slice | Scheduled | Alternate


@dataclass(frozen=True)
class ScheduleParse:
    """The parsed prompt: a node list, or why parsing failed (the prompt is then used as is)."""

    nodes: list[Node] | None
    error_position: int = -1
    error: str = ""


class _Frame:
    __slots__ = ("current", "seg_start", "segments", "seps", "start")

    def __init__(self, start: int) -> None:
        self.start = start
        self.segments: list[tuple[list[Node], int, int]] = []  # (nodes, start, end)
        self.seps: list[str] = []
        self.current: list[Node] = []  # nodes of the segment being read
        self.seg_start = start + 1


class _Failure(Exception):
    def __init__(self, position: int, reason: str) -> None:
        super().__init__(reason)
        self.position = position
        self.reason = reason


def _close_group(text: str, frame: _Frame, closer: str, end: int) -> list[Node] | None:
    """Turn a bracketed group into nodes, or None when it is not a valid group."""
    opener = text[frame.start]
    segs, seps = frame.segments, frame.seps
    if opener == "(":
        if closer != ")" or len(seps) > 1 or "|" in seps:
            return None
        nodes: list[Node] = [(frame.start, frame.start + 1)]
        for k, (children, seg_start, _) in enumerate(segs):
            if k:
                nodes.append((seg_start - 1, seg_start))
            nodes.extend(children)
        nodes.append((end - 1, end))
        return nodes
    if closer != "]":
        return None
    if not seps:
        return [(frame.start, frame.start + 1), *segs[0][0], (end - 1, end)]
    if all(s == "|" for s in seps):
        return [Alternate([children for children, _, _ in segs], frame.start, end)]
    if "|" in seps or len(seps) > 2:
        return None
    children, seg_start, seg_end = segs[-1]
    if any(not isinstance(n, tuple) for n in children):
        return None
    pos = _WS_RE.match(text, seg_start, seg_end).end()
    m = _NUMBER_RE.match(text, pos, seg_end)
    if m is None or _WS_RE.match(text, m.end(), seg_end).end() != seg_end:
        return None
    before = segs[0][0] if len(seps) == 2 else None
    return [Scheduled(before, segs[-2][0], m.group(), m.start(), frame.start, end)]


def _parse(text: str) -> list[Node]:
    n = len(text)
    memo: dict[int, tuple[list[Node], int] | None] = {}  # group start -> (nodes, end) or invalid
    top: list[Node] = []
    stack: list[_Frame] = []
    i = 0

    def abandon() -> int:
        # Every open group contains the failure, so none of them is valid; restart after the
        # outermost one, whose opener becomes a literal character.
        for frame in stack:
            memo[frame.start] = None
        outer = stack[0].start
        stack.clear()
        top.append((outer, outer + 1))
        return outer + 1

    while i < n or stack:
        if i >= n:
            i = abandon()
            continue
        current = stack[-1].current if stack else top
        c = text[i]
        if c == "(" or c == "[":
            if i not in memo:
                stack.append(_Frame(i))
                i += 1
            elif memo[i] is not None:
                nodes, i = memo[i]
                current.extend(nodes)
            elif stack:
                i = abandon()
            else:
                top.append((i, i + 1))
                i += 1
            continue
        if c in ")]:|":
            if not stack:
                if c == "|":
                    raise _Failure(i, "bar")
                top.append((i, i + 1))
                i += 1
                continue
            frame = stack[-1]
            frame.segments.append((current, frame.seg_start, i))
            i += 1
            if c == ":" or c == "|":
                frame.seps.append(c)
                frame.current, frame.seg_start = [], i
                continue
            nodes = _close_group(text, frame, c, i)
            if nodes is None:
                i = abandon()
                continue
            stack.pop()
            memo[frame.start] = (nodes, i)
            (stack[-1].current if stack else top).extend(nodes)
            continue
        m = _PLAIN_RE.match(text, i)
        if m is None:  # a backslash with nothing it can escape
            raise _Failure(i, "backslash")
        current.append((i, m.end()))
        i = m.end()
    return top


def parse_schedule(text: str) -> ScheduleParse:
    """Parse prompt-editing syntax; on failure say where and why instead of raising."""
    try:
        return ScheduleParse(_parse(text))
    except _Failure as exc:
        if exc.reason == "bar":
            message = "'|' outside an [a|b] alternation"
        else:
            message = "backslash that escapes nothing (at the end or before a line break)"
        return ScheduleParse(None, exc.position, message)


def walk_nodes(nodes: list[Node]):
    """Every Scheduled and Alternate node, nested ones included (iterative: prompts can nest deep)."""
    todo = [nodes]
    while todo:
        for node in todo.pop():
            if isinstance(node, Scheduled):
                yield node
                if node.before is not None:
                    todo.append(node.before)
                todo.append(node.after)
            elif isinstance(node, Alternate):
                yield node
                todo.extend(node.options)


def render_slices(nodes: list[Node], pick) -> list[Slice]:
    """The verbatim slices of the text chosen by ``pick(node) -> node list | None``."""
    out: list[Slice] = []
    todo = [iter(nodes)]
    while todo:
        node = next(todo[-1], None)
        if node is None:
            todo.pop()
        elif isinstance(node, tuple):
            out.append(node)
        else:
            chosen = pick(node)
            if chosen:
                todo.append(iter(chosen))
    return out


def switch_step(number: str, steps: int, int_offset: int, flt_offset: float, old: bool) -> int:
    """The step after which a ``[a:b:number]`` edit switches (web UI arithmetic, truncating)."""
    v = float(number)
    if old:
        v = v * steps if v < 1 else v
    elif "." in number:
        v = (v - flt_offset) * steps
    else:
        v = v - int_offset
    return min(steps, int(v))  # int(inf) raises OverflowError, as in the web UI


def schedule_prompt(
    text: str, steps: int, hires_steps: int | None = None, use_old_scheduling: bool = False
) -> list[tuple[int, str]]:
    """Expand ``[from:to:when]`` and ``[a|b]`` into ``[(end_step, text), ...]`` like the web UI.

    ``hires_steps`` selects the hires-pass arithmetic (integers count from ``steps``, decimals from
    1.0). An unparseable prompt (a stray ``|``, say) gives ``[(steps, text)]`` unchanged. Raises
    OverflowError for a step number too large for a float, as the web UI does.
    """
    if hires_steps is None or use_old_scheduling:
        int_offset, flt_offset = 0, 0.0
    else:
        int_offset, flt_offset, steps = steps, 1.0, hires_steps
    if "[" not in text:  # fast path: without '[' there is nothing to schedule
        return [(steps, text)]
    parsed = parse_schedule(text)
    if parsed.nodes is None:
        return [(steps, text)]
    whens: dict[int, int] = {}
    points = {steps}
    for node in walk_nodes(parsed.nodes):
        if isinstance(node, Scheduled):
            when = switch_step(node.number, steps, int_offset, flt_offset, use_old_scheduling)
            whens[id(node)] = when
            if when >= 1:
                points.add(when)
        else:
            points.update(range(1, steps + 1))

    result = []
    for step in sorted(points):

        def pick(node, step=step):
            if isinstance(node, Scheduled):
                return node.before if step <= whens[id(node)] else node.after
            return node.options[(step - 1) % len(node.options)]

        slices = render_slices(parsed.nodes, pick)
        result.append((step, "".join(text[a:b] for a, b in slices)))
    return result
