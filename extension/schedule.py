"""Step schedules for the learning rate and gradient clipping: ``"0.005:100, 1e-3:1000, 1e-5"``.

Same meaning as the web UI's textual-inversion training. Steps are counted from 0 (the number of
optimizer steps already taken). A stage ``rate:N`` is used for every step before ``N``; the next
stage starts at step ``N``. A bare rate, or ``rate:-1``, runs to the end of training. A stage that
ends past ``max_steps`` is cut there, and the stages after it are never reached. If the last stage
ends before ``max_steps``, training stops at that step (:meth:`LearnRateSchedule.rate_at` returns
``None`` from there on).

The web UI silently skips a few malformed stages (``0.1:0``) and ignores text after a bare rate;
here they are errors, so a typo cannot quietly change a training run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

EXAMPLE = "0.005:100, 1e-3:1000, 1e-5"

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_STEP = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class Stage:
    """``rate`` is used for steps ``start <= step < end``."""

    rate: float
    start: int
    end: int


@dataclass(frozen=True)
class LearnRateSchedule:
    """A parsed schedule over ``max_steps`` steps; see the module docstring for the meaning."""

    stages: tuple[Stage, ...]
    max_steps: int

    @classmethod
    def parse(cls, text: str, max_steps: int, *, allow_zero: bool = False) -> LearnRateSchedule:
        """Parse ``"rate:step, rate:step, …, rate"``; raises ValueError naming the bad part.

        ``allow_zero`` admits a rate of 0 (for schedules of clipping values, where 0 means off).
        """
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive whole number, got {max_steps!r}")
        if not isinstance(text, str) or not text.strip():
            raise _error("the schedule is empty", text)
        parts = text.split(",")
        stages: list[Stage] = []
        start = 0
        prev_step = 0
        for index, raw in enumerate(parts):
            part = raw.strip()
            if not part:
                raise _error("empty stage (two commas in a row, or a trailing comma?)", text, raw)
            pieces = part.split(":")
            if len(pieces) > 2:
                raise _error(f"{part!r} has more than one ':'", text, part)
            rate = _parse_rate(pieces[0].strip(), allow_zero, text, part)
            step = _parse_step(pieces[1].strip(), text, part) if len(pieces) == 2 else -1
            is_last = index == len(parts) - 1
            if step == -1:
                if not is_last:
                    raise _error(
                        f"{part!r} runs to the end of training, so it must be the last stage", text, part
                    )
                end = max_steps
            else:
                if step <= prev_step:
                    raise _error(
                        f"steps must increase: {part!r} ends at step {step}, not after step {prev_step}",
                        text,
                        part,
                    )
                prev_step = step
                end = min(step, max_steps)
            if start < end:  # stages after max_steps are never reached
                stages.append(Stage(rate, start, end))
            start = end
        return cls(tuple(stages), max_steps)

    @property
    def end_step(self) -> int:
        """The step at which training stops (``max_steps`` unless the schedule ends earlier)."""
        return self.stages[-1].end if self.stages else 0

    def rate_at(self, step: int) -> float | None:
        """The rate for 0-based ``step`` (steps already taken), or None once the schedule has ended."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        for stage in self.stages:
            if step < stage.end:
                return stage.rate
        return None

    def __str__(self) -> str:
        texts = []
        for stage in self.stages:
            if stage.end == self.max_steps and stage is self.stages[-1]:
                texts.append(repr(stage.rate))
            else:
                texts.append(f"{stage.rate!r}:{stage.end}")
        return ", ".join(texts)


def _error(problem: str, text: object, part: str | None = None) -> ValueError:
    where = f" in {text!r}" if part is not None and str(part).strip() != str(text).strip() else ""
    return ValueError(f"invalid schedule{where}: {problem}; write it like {EXAMPLE!r}")


def _parse_rate(piece: str, allow_zero: bool, text: str, part: str) -> float:
    if not _NUMBER.fullmatch(piece):
        raise _error(f"{piece!r} in {part!r} is not a number", text, part)
    rate = float(piece)
    if not math.isfinite(rate):
        raise _error(f"{piece!r} in {part!r} is too large", text, part)
    if rate < 0 or (rate == 0 and not allow_zero):
        need = "zero or positive" if allow_zero else "positive"
        raise _error(f"the value {piece!r} in {part!r} must be {need}", text, part)
    return rate


def _parse_step(piece: str, text: str, part: str) -> int:
    if not _STEP.fullmatch(piece):
        raise _error(f"the step {piece!r} in {part!r} is not a whole number", text, part)
    step = int(piece)
    if step < 1 and step != -1:
        raise _error(
            f"the step {piece!r} in {part!r} must be at least 1 (or -1 for the end of training)", text, part
        )
    return step
