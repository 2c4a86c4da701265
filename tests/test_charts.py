"""The charts (matplotlib): the loss curves of loss.png and the tab's live plot, and the
learning-rate schedule. Drawn for real and measured: what is plotted, and that every label is
readable and inside the picture."""

from __future__ import annotations

import io
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from extension.schedule import LearnRateSchedule
from extension.training.charts import (
    DPI,
    LIVE_PLOT_SIZE,
    LOSS_PLOT_SIZE,
    SCHEDULE_SIZE,
    loss_figure,
    schedule_figure,
    smooth,
)
from extension.training.logging import LogRow, TrainLogger

MIN_TEXT_PX = 11  # smallest text height, in pixels of the saved picture


def rows(n: int, val_every: int = 0) -> list[LogRow]:
    return [
        LogRow(s, s / 4, 1.0 / s, (0.9 / s if val_every and s % val_every == 0 else None), 0.01 if s < 6 else 0.002)
        for s in range(1, n + 1)
    ]


def rendered(fig) -> Image.Image:
    """Draw ``fig`` (as savefig does) and return the PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return Image.open(io.BytesIO(buf.getvalue()))


def texts_inside_and_readable(fig) -> None:
    """Everything drawn lies inside the picture, and no text is smaller than MIN_TEXT_PX."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    width, height = fig.get_size_inches()
    tight = fig.get_tightbbox(renderer)  # inches; only what was drawn (ticks in view, labels...)
    assert tight.x0 >= -0.01 and tight.y0 >= -0.01, tight
    assert tight.x1 <= width + 0.01 and tight.y1 <= height + 0.01, tight
    texts = []
    for ax in fig.axes:
        texts += [*ax.texts, ax.title, ax.xaxis.label, ax.yaxis.label]
        texts += ax.get_xticklabels() + ax.get_yticklabels()
    for legend in fig.legends:
        texts += legend.get_texts()
    if fig._suptitle is not None:
        texts.append(fig._suptitle)
    shown = [t for t in texts if t.get_visible() and t.get_text().strip()]
    assert shown
    for text in shown:
        assert text.get_fontsize() * fig.dpi / 72 >= MIN_TEXT_PX, text.get_text()
    for text in [t for ax in fig.axes for t in ax.texts]:  # annotations: inside the picture too
        extent = text.get_window_extent(renderer)
        assert 0 <= extent.x0 and extent.x1 <= fig.bbox.x1 and 0 <= extent.y0 and extent.y1 <= fig.bbox.y1, text


def legend_labels(fig) -> list[str]:
    (legend,) = fig.legends
    return [t.get_text() for t in legend.get_texts()]


# ---------------------------------------------------------------------------- loss


def test_loss_figure_plots_what_was_logged() -> None:
    data = rows(20, val_every=5)
    fig = loss_figure(data, title="cat")
    assert legend_labels(fig) == ["loss", "smoothed loss", "validation loss", "learning rate"]
    loss_ax, lr_ax = fig.axes
    raw, smoothed, val = loss_ax.get_lines()
    assert list(raw.get_xdata()) == list(range(1, 21))
    assert list(raw.get_ydata()) == pytest.approx([1 / s for s in range(1, 21)])
    assert list(smoothed.get_ydata()) == pytest.approx(smooth([1 / s for s in range(1, 21)]))
    assert list(val.get_xdata()) == [5, 10, 15, 20]
    (lr,) = lr_ax.get_lines()
    assert lr.get_drawstyle() == "steps-post" and list(lr.get_ydata())[:6] == [0.01] * 5 + [0.002]
    assert fig.get_suptitle() == "cat"
    texts_inside_and_readable(fig)


def test_loss_figure_without_validation_or_rate() -> None:
    fig = loss_figure([LogRow(s, 0, 1.0 / s, None, None) for s in range(1, 5)])
    assert legend_labels(fig) == ["loss", "smoothed loss"] and len(fig.axes) == 1
    texts_inside_and_readable(fig)


def test_loss_figure_skips_what_cannot_be_drawn() -> None:
    assert loss_figure([]) is None
    assert loss_figure([LogRow(1, 0.0, None, None, 0.1)]) is None  # only a learn rate
    assert loss_figure([LogRow(1, 0.0, float("nan"), None, 0.1)]) is None
    single = loss_figure([LogRow(0, 0.0, None, 0.5, None)])  # the validation before step 1
    assert single is not None and legend_labels(single) == ["validation loss"]
    texts_inside_and_readable(single)
    inf = loss_figure([LogRow(1, 0, 1.0, None, 0.1), LogRow(2, 0, 1.0, None, 0.1), LogRow(3, 0, math.inf, None, 0.1)])
    raw = inf.axes[0].get_lines()[0]
    assert list(raw.get_xdata()) == [1, 2]  # the infinite loss is left out, the rest is drawn


def test_live_plot_fits_the_tab_column_readably() -> None:
    fig = loss_figure(rows(400, val_every=50), title="a-long-embedding-name: loss and learning rate", size=LIVE_PLOT_SIZE)
    texts_inside_and_readable(fig)
    image = rendered(fig)
    assert image.size == (round(LIVE_PLOT_SIZE[0] * DPI), round(LIVE_PLOT_SIZE[1] * DPI))


def test_logger_writes_loss_png_with_matplotlib(tmp_path) -> None:
    log = TrainLogger(tmp_path / "loss.csv", tmp_path / "loss.png", total_steps=10, progress_bar=False, title="t")
    assert log.plot() is None  # nothing to draw yet
    for r in rows(10, val_every=3):
        log.log(r)
    path = log.plot()
    log.close()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (round(LOSS_PLOT_SIZE[0] * DPI), round(LOSS_PLOT_SIZE[1] * DPI))
        colours = {c for _, c in image.convert("RGB").getcolors(1 << 20)}
    assert (0x1F, 0x5F, 0xBF) in colours  # the smoothed loss
    assert (0xE0, 0x70, 0x1A) in colours  # validation
    assert (0x2A, 0x9D, 0x3C) in colours  # learning rate


def test_charts_leave_pyplot_alone() -> None:
    import matplotlib

    backend = matplotlib.get_backend()
    loss_figure(rows(5))
    schedule_figure(LearnRateSchedule.parse("0.1", 10))
    assert matplotlib.get_backend() == backend
    import sys

    if "matplotlib.pyplot" in sys.modules:  # another test may have imported it: no figure of ours in it
        assert not sys.modules["matplotlib.pyplot"].get_fignums()


# ---------------------------------------------------------------------------- schedule


@settings(max_examples=20, deadline=None)
@given(
    st.lists(st.floats(1e-7, 10.0, allow_nan=False), min_size=1, max_size=5),
    st.integers(1, 5000),
)
def test_any_valid_schedule_plots_inside_its_picture(rates: list[float], max_steps: int) -> None:
    text = ", ".join([f"{r!r}:{(i + 1) * 7}" for i, r in enumerate(rates[:-1])] + [repr(rates[-1])])
    schedule = LearnRateSchedule.parse(text, max_steps)
    fig = schedule_figure(schedule)
    texts_inside_and_readable(fig)
    assert rendered(fig).size == (round(SCHEDULE_SIZE[0] * DPI), round(SCHEDULE_SIZE[1] * DPI))
