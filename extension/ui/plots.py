"""Pictures for the tab: the parsed LR schedule as a small step plot, and the live training curves.

Drawn with Pillow only (no matplotlib in the web UI's requirements); the live curves reuse the
trainer's ``loss.png`` drawing so the tab and the log folder show the same chart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from ..schedule import LearnRateSchedule
from ..training.logging import LogRow, draw_loss_plot

SCHEDULE_SIZE = (420, 150)
CURVES_SIZE = (720, 380)


def _font():
    return ImageFont.load_default()


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.0e}"
    return f"{v:.4g}"


def schedule_plot(schedule: LearnRateSchedule, *, size: tuple[int, int] = SCHEDULE_SIZE) -> Image.Image:
    """The stages of ``schedule`` as a step function of the rate (log scale when the rates span
    more than a factor of 20) against the step, each stage labelled with its rate."""
    w, h = size
    left, right, top, bottom = 56, 12, 12, 28
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = _font()
    stages = schedule.stages
    d.rectangle([left, top, w - right, h - bottom], outline="black")
    if not stages:
        d.text((left + 6, top + 6), "no steps", fill="black", font=font)
        return img
    rates = [s.rate for s in stages]
    positive = [r for r in rates if r > 0]
    log = bool(positive) and len(positive) == len(rates) and max(rates) / min(rates) > 20
    if log:
        lo, hi = math.log10(min(rates)), math.log10(max(rates))
        pad = max((hi - lo) * 0.1, 0.1)
        lo, hi = lo - pad, hi + pad

        def yv(r: float) -> float:
            return math.log10(r)
    else:
        lo, hi = 0.0, max(rates) * 1.15 or 1.0

        def yv(r: float) -> float:
            return r

    x_hi = max(schedule.end_step, 1)

    def px(step: float) -> float:
        return left + step / x_hi * (w - left - right)

    def py(r: float) -> float:
        return top + (hi - yv(r)) / (hi - lo) * (h - top - bottom)

    points: list[tuple[float, float]] = []
    for s in stages:
        points += [(px(s.start), py(s.rate)), (px(s.end), py(s.rate))]
    d.line(points, fill=(0, 140, 0), width=2)
    for s in stages:
        x0, x1, y = px(s.start), px(s.end), py(s.rate)
        d.line([x0, h - bottom, x0, h - bottom + 3], fill="black")
        label = _fmt(s.rate)
        if x1 - x0 > d.textlength(label, font=font) + 4:
            d.text(((x0 + x1) / 2, y - 3), label, fill="black", font=font, anchor="md")
        d.text((x0, h - bottom + 5), str(s.start), fill="black", font=font, anchor="ma")
    d.text((w - right, h - bottom + 5), str(schedule.end_step), fill="black", font=font, anchor="ra")
    if log:
        d.text((left + 4, h - bottom - 4), "log scale", fill=(120, 120, 120), font=font, anchor="ld")
    d.text((left - 4, py(max(rates))), _fmt(max(rates)), fill="black", font=font, anchor="rm")
    if min(rates) != max(rates):
        d.text((left - 4, py(min(rates))), _fmt(min(rates)), fill="black", font=font, anchor="rm")
    if schedule.end_step < schedule.max_steps:
        d.text(
            (w - right - 4, top + 4),
            f"stops at step {schedule.end_step}",
            fill=(200, 60, 0),
            font=font,
            anchor="ra",
        )
    return img


def schedule_preview(text: str, max_steps: int) -> tuple[Image.Image | None, str]:
    """(plot, message) for the LR field: the plot and a summary of the stages, or no plot and
    the parse error (shown inline under the field before anything starts)."""
    try:
        schedule = LearnRateSchedule.parse(text, int(max_steps))
    except (ValueError, TypeError) as exc:
        return None, f"Error: {exc}"
    parts = [f"{_fmt(s.rate)} for steps {s.start}-{s.end - 1}" for s in schedule.stages]
    msg = "; ".join(parts)
    if schedule.end_step < schedule.max_steps:
        msg += f". Training stops at step {schedule.end_step}, before max steps {schedule.max_steps}."
    return schedule_plot(schedule), msg


def curves_plot(
    history: Sequence[LogRow], *, title: str = "", size: tuple[int, int] = CURVES_SIZE
) -> Image.Image | None:
    """Loss (raw and smoothed), validation loss and learn rate against step; None before the
    first logged step."""
    rows = [r for r in history if r.loss is not None or r.validation_loss is not None]
    if not rows:
        return None
    return draw_loss_plot(list(history), title=title, size=size)
