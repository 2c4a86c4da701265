"""The tab's learning-rate field: the schedule drawn as it is typed, its stages summed up, its
errors inline before anything starts."""

from __future__ import annotations

from test_charts import texts_inside_and_readable

from extension.ui.tab import schedule_preview


def test_stages_are_drawn_as_steps_on_a_log_axis() -> None:
    figure, message = schedule_preview("0.005:100, 1e-3:200, 1e-5", 300)
    assert message == "0.005 for steps 0-99; 0.001 for steps 100-199; 1e-05 for steps 200-299"
    ax = figure.axes[0]
    assert ax.get_yscale() == "log"  # the rates span more than a factor of 20
    (stairs,) = ax.patches
    values, edges, _ = stairs.get_data()
    assert list(values) == [0.005, 0.001, 1e-5] and list(edges) == [0, 100, 200, 300]
    assert ax.get_xlim() == (0, 300)
    labels = {t.get_text() for t in ax.texts}
    assert {"0.005", "0.001", "1e-05"} <= labels
    texts_inside_and_readable(figure)


def test_schedule_ending_early_is_marked() -> None:
    for text, steps in (("0.01:40", 100), ("0.1:10, 0.01:95", 100)):
        figure, message = schedule_preview(text, steps)
        end = int(text.rsplit(":", 1)[1])
        assert f"stops at step {end}" in message or f"Training stops at step {end}" in message
        assert f"stops at step {end}" in {t.get_text() for t in figure.axes[0].texts}
        texts_inside_and_readable(figure)  # the note near the right edge stays inside


def test_invalid_schedule_gives_the_parse_error_inline() -> None:
    figure, message = schedule_preview("0.005:100, 0.001:50", 300)
    assert figure is None
    assert message.startswith("Error: ") and "steps must increase" in message
    figure, message = schedule_preview("", 10)
    assert figure is None and "empty" in message
    figure, message = schedule_preview("0.1", 0)
    assert figure is None and "max_steps" in message
