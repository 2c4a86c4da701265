"""The LR schedule plot with its inline errors, and the live training curves."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from extension.schedule import LearnRateSchedule
from extension.training.logging import LogRow
from extension.ui.plots import SCHEDULE_SIZE, curves_plot, schedule_plot, schedule_preview

GREEN = (0, 140, 0)


def green_columns(image) -> np.ndarray:
    a = np.asarray(image.convert("RGB")).astype(int)
    mask = np.abs(a - np.array(GREEN)).sum(axis=2) < 30
    return np.nonzero(mask.any(axis=0))[0]


def green_rows_at(image, x: int) -> list[int]:
    a = np.asarray(image.convert("RGB")).astype(int)
    col = np.abs(a[:, x] - np.array(GREEN)).sum(axis=1) < 30
    return list(np.nonzero(col)[0])


def test_stages_are_drawn_as_steps() -> None:
    image, message = schedule_preview("0.005:100, 1e-3:200, 1e-5", 300)
    assert image is not None and image.size == SCHEDULE_SIZE
    assert message == "0.005 for steps 0-99; 0.001 for steps 100-199; 1e-05 for steps 200-299"
    xs = green_columns(image)
    assert xs.min() <= 60 and xs.max() >= SCHEDULE_SIZE[0] - 14  # spans the whole step axis
    # the line is higher in the first stage than in the last one (image y grows downwards)
    first = min(green_rows_at(image, 80))
    last = min(green_rows_at(image, SCHEDULE_SIZE[0] - 30))
    assert first < last


def test_invalid_schedule_gives_the_parse_error_inline() -> None:
    image, message = schedule_preview("0.005:100, 0.001:50", 300)
    assert image is None
    assert message.startswith("Error: ") and "steps must increase" in message
    image, message = schedule_preview("", 10)
    assert image is None and "empty" in message
    image, message = schedule_preview("0.1", 0)
    assert image is None and "max_steps" in message


def test_schedule_ending_early_is_announced() -> None:
    image, message = schedule_preview("0.01:40", 100)
    assert image is not None
    assert "stops at step 40" in message


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.floats(1e-7, 10.0, allow_nan=False), min_size=1, max_size=5),
    st.integers(1, 5000),
)
def test_any_valid_schedule_plots(rates: list[float], max_steps: int) -> None:
    text = ", ".join([f"{r!r}:{(i + 1) * 7}" for i, r in enumerate(rates[:-1])] + [repr(rates[-1])])
    schedule = LearnRateSchedule.parse(text, max_steps)
    image = schedule_plot(schedule)
    assert image.size == SCHEDULE_SIZE
    assert len(green_columns(image)) > 0


def test_curves_plot() -> None:
    assert curves_plot([]) is None
    assert curves_plot([LogRow(1, 0.0, None, None, 0.1)]) is None
    rows = [
        LogRow(i, 0.0, 1.0 / i, 0.9 / i if i % 5 == 0 else None, 0.005 if i < 10 else 0.001)
        for i in range(1, 21)
    ]
    image = curves_plot(rows, title="cat", size=(400, 240))
    assert image is not None and image.size == (400, 240)
    a = np.asarray(image).astype(int)
    orange = (np.abs(a - np.array((230, 110, 0))).sum(axis=2) < 40).sum()  # validation loss
    blue = (np.abs(a - np.array((20, 70, 200))).sum(axis=2) < 40).sum()  # smoothed loss
    assert orange > 20 and blue > 20
