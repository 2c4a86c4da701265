"""Charts of a training run, drawn with matplotlib: the loss curves (a run's ``loss.png`` and the
tab's live plot) and the learn-rate schedule (the tab's preview of the schedule field).

Pure functions from data to a ``matplotlib.figure.Figure``, built with the object API: no pyplot,
no backend switch and no figure registry, so nothing global changes inside a host that shares the
process (gradio requires matplotlib in the web UI and in Forge, so it is always there). matplotlib
is imported lazily, when a chart is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..schedule import LearnRateSchedule
    from .logging import LogRow

LOSS_COLOUR = "#1f5fbf"
VALIDATION_COLOUR = "#e0701a"
RATE_COLOUR = "#2a9d3c"
LOSS_PLOT_SIZE = (9.0, 5.2)  # inches at DPI: loss.png is 900 x 520
LIVE_PLOT_SIZE = (6.4, 3.0)  # the tab's plot column at 1400 px
SCHEDULE_SIZE = (6.4, 1.7)
DPI = 100
FONT_SIZE = 10.0  # points; at 100 dpi about 14 px, readable where the picture is shown 1:1


def smooth(values: Sequence[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (as tensorboard smooths)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def _figure(size: tuple[float, float], dpi: int) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    fig.get_layout_engine().set(w_pad=0.06, h_pad=0.06)
    return fig


def _style(ax) -> None:
    ax.tick_params(labelsize=FONT_SIZE - 1)
    ax.grid(True, color="#e4e4e4", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top",):
        ax.spines[side].set_visible(False)


def _finite(pairs: list[tuple[int, float | None]]) -> list[tuple[int, float]]:
    return [(s, float(v)) for s, v in pairs if v is not None and math.isfinite(v)]


def loss_figure(
    rows: Sequence[LogRow],
    *,
    title: str = "",
    size: tuple[float, float] = LOSS_PLOT_SIZE,
    dpi: int = DPI,
) -> Figure | None:
    """The loss against step: each step's loss faint, its smoothed curve solid, the validation
    loss as points, and the learn rate on a second axis at the right. None when no row has a loss
    or a validation loss to show."""
    losses = _finite([(r.step, r.loss) for r in rows])
    vals = _finite([(r.step, r.validation_loss) for r in rows])
    rates = _finite([(r.step, r.learn_rate) for r in rows])
    if not losses and not vals:
        return None
    fig = _figure(size, dpi)
    ax = fig.add_subplot()
    _style(ax)
    handles = []
    if losses:
        steps = [s for s, _ in losses]
        (raw,) = ax.plot(steps, [v for _, v in losses], color=LOSS_COLOUR, alpha=0.25, linewidth=1, label="loss")
        (smoothed,) = ax.plot(
            steps, smooth([v for _, v in losses]), color=LOSS_COLOUR, linewidth=2, label="smoothed loss"
        )
        handles += [raw, smoothed]
    if vals:
        (val,) = ax.plot(
            [s for s, _ in vals], [v for _, v in vals], color=VALIDATION_COLOUR, linewidth=1.5,
            marker="o", markersize=4, label="validation loss",
        )  # fmt: skip
        handles.append(val)
    ax.set_xlabel("step", fontsize=FONT_SIZE)
    ax.set_ylabel("loss", fontsize=FONT_SIZE)
    all_steps = [s for s, _ in losses + vals + rates]
    lo, hi = min(all_steps), max(all_steps)
    ax.set_xlim(lo, hi if hi > lo else lo + 1)
    if rates:
        lr_ax = ax.twinx()
        (lr,) = lr_ax.plot(
            [s for s, _ in rates], [v for _, v in rates], color=RATE_COLOUR, linewidth=1.5,
            drawstyle="steps-post", label="learning rate",
        )  # fmt: skip
        lr_ax.set_ylabel("learning rate", fontsize=FONT_SIZE, color=RATE_COLOUR)
        lr_ax.tick_params(axis="y", labelsize=FONT_SIZE - 1, colors=RATE_COLOUR)
        lr_ax.set_ylim(0, max(v for _, v in rates) * 1.15 or 1.0)
        _rate_ticks(lr_ax)
        lr_ax.spines["top"].set_visible(False)
        handles.append(lr)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))  # steps are whole numbers
    # below the axes, not over the curves
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=FONT_SIZE - 1, frameon=False)
    if title:
        fig.suptitle(title, fontsize=FONT_SIZE + 1, x=0.01, ha="left")
    return fig


def save_figure(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a PNG to ``path`` (the caller makes it atomic)."""
    fig.savefig(path, format="png", dpi=fig.dpi, facecolor="white")


def rate_text(rate: float) -> str:
    """A learning rate as people write it: "0.005", "1e-05", "0"."""
    if rate == 0:
        return "0"
    if abs(rate) >= 1e4 or abs(rate) < 1e-3:
        return f"{rate:.0e}"
    return f"{rate:.4g}"


def _rate_ticks(ax) -> None:
    """Learning rates written out ("0.005", "1e-05") on a linear y axis, never as an offset."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: rate_text(value)))


def schedule_figure(
    schedule: LearnRateSchedule, *, size: tuple[float, float] = SCHEDULE_SIZE, dpi: int = DPI
) -> Figure:
    """The stages of ``schedule`` as a step function of the rate against the step (log scale when
    the rates span more than a factor of 20), wide stages labelled with their rate, and the end of
    training marked when the schedule stops before ``max_steps``."""
    fig = _figure(size, dpi)
    ax = fig.add_subplot()
    _style(ax)
    stages = schedule.stages
    edges = [s.start for s in stages] + [stages[-1].end] if stages else [0, 1]
    rates = [s.rate for s in stages] or [0.0]
    ax.stairs(rates, edges, color=RATE_COLOUR, linewidth=2, baseline=None)
    positive = [r for r in rates if r > 0]
    log = len(positive) == len(rates) and max(rates) / min(rates) > 20
    if log:
        ax.set_yscale("log")
        ax.set_ylim(min(rates) / 3, max(rates) * 4)
    else:
        ax.set_ylim(0, max(rates) * 1.35 or 1.0)
        _rate_ticks(ax)
    right = max(schedule.max_steps, edges[-1], 1)
    ax.set_xlim(0, right)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for s in stages:
        if (s.end - s.start) / right >= 0.12:  # room for the label
            ax.annotate(
                rate_text(s.rate), ((s.start + s.end) / 2, s.rate), xytext=(0, 4), textcoords="offset points",
                ha="center", va="bottom", fontsize=FONT_SIZE - 1,
            )  # fmt: skip
    if schedule.end_step < schedule.max_steps:
        ax.axvspan(schedule.end_step, right, color="#f3d9c9", alpha=0.6, linewidth=0)
        near_right = schedule.end_step / right > 0.6  # write the note on the side with room
        ax.annotate(
            f"stops at step {schedule.end_step}", (schedule.end_step, 1), xycoords=("data", "axes fraction"),
            xytext=(-4 if near_right else 4, -4), textcoords="offset points", va="top",
            ha="right" if near_right else "left", fontsize=FONT_SIZE - 1, color="#a04000",
        )  # fmt: skip
    ax.set_xlabel("step", fontsize=FONT_SIZE)
    ax.set_ylabel("learning rate", fontsize=FONT_SIZE)
    return fig
