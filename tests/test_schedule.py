"""Learning-rate / clipping schedules with the web UI's meaning."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extension.schedule import EXAMPLE, LearnRateSchedule, Stage

parse = LearnRateSchedule.parse


def test_web_ui_example():
    s = parse("0.005:100, 1e-3:1000, 1e-5", 10000)
    assert s.stages == (Stage(0.005, 0, 100), Stage(0.001, 100, 1000), Stage(1e-5, 1000, 10000))
    # steps count from 0: step 99 is the 100th optimizer step, still at the first rate
    assert [s.rate_at(i) for i in (0, 99, 100, 999, 1000, 9999)] == [0.005, 0.005, 0.001, 0.001, 1e-5, 1e-5]
    assert s.rate_at(10000) is None
    assert s.end_step == 10000
    assert str(s) == "0.005:100, 0.001:1000, 1e-05"


def test_single_rate():
    s = parse("0.005", 500)
    assert s.stages == (Stage(0.005, 0, 500),)
    assert s.rate_at(0) == s.rate_at(499) == 0.005 and s.rate_at(500) is None
    assert str(s) == "0.005"


def test_minus_one_runs_to_the_end():
    s = parse("0.1:10, 0.01:-1", 50)
    assert s.stages == (Stage(0.1, 0, 10), Stage(0.01, 10, 50))
    assert str(s) == "0.1:10, 0.01"


def test_stages_past_max_steps_are_cut():
    s = parse("0.1:100, 0.2:200, 0.3", 150)
    assert s.stages == (Stage(0.1, 0, 100), Stage(0.2, 100, 150))
    assert s.end_step == 150 and s.rate_at(149) == 0.2 and s.rate_at(150) is None
    assert parse("0.1:100, 0.2", 100).stages == (Stage(0.1, 0, 100),)
    assert parse("0.1:100, 0.2:-1", 50).stages == (Stage(0.1, 0, 50),)


def test_schedule_that_ends_early_stops_training():
    s = parse("0.1:10, 0.05:20", 100)
    assert s.end_step == 20
    assert s.rate_at(19) == 0.05 and s.rate_at(20) is None and s.rate_at(99) is None
    assert str(s) == "0.1:10, 0.05:20"


def test_whitespace_and_signs_tolerated():
    assert parse("  .5 : 3 ,+2E-1:+7 ,1.", 10).stages == (
        Stage(0.5, 0, 3),
        Stage(0.2, 3, 7),
        Stage(1.0, 7, 10),
    )


def test_zero_allowed_only_for_clipping():
    s = parse("0:100, 0.1", 200, allow_zero=True)
    assert s.rate_at(0) == 0.0 and s.rate_at(100) == 0.1
    with pytest.raises(ValueError, match="must be positive"):
        parse("0:100, 0.1", 200)


def test_negative_step_rejected():
    with pytest.raises(ValueError):
        parse("0.1", 100).rate_at(-1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the schedule is empty"),
        ("   ", "the schedule is empty"),
        ("0.1:100,", "empty stage"),
        ("0.1:100,,0.2", "empty stage"),
        ("abc", "'abc' in 'abc' is not a number"),
        ("0.1:100, fast", "'fast' in 'fast' is not a number"),
        ("nan", "is not a number"),
        ("inf:10, 0.1", "is not a number"),
        ("1e999", "too large"),
        ("0", "'0' in '0' must be positive"),
        ("-0.1:10, 0.1", "must be positive"),
        ("0.1:ten", "the step 'ten' in '0.1:ten' is not a whole number"),
        ("0.1:10.5, 0.2", "is not a whole number"),
        ("0.1:1e3, 0.2", "is not a whole number"),
        ("0.1:0, 0.2", "must be at least 1 (or -1"),
        ("0.1:-5, 0.2", "must be at least 1 (or -1"),
        ("0.1:100, 0.2:100", "steps must increase: '0.2:100' ends at step 100, not after step 100"),
        ("0.1:100, 0.2:50", "steps must increase"),
        ("0.1, 0.2:100", "'0.1' runs to the end of training, so it must be the last stage"),
        ("0.1:-1, 0.2", "must be the last stage"),
        ("0.1:10:20", "more than one ':'"),
    ],
)
def test_errors(text, message):
    with pytest.raises(ValueError) as info:
        parse(text, 1000)
    assert message in str(info.value)
    assert EXAMPLE in str(info.value)  # every error shows a valid example


def test_error_quotes_whole_text_for_multi_stage():
    with pytest.raises(ValueError, match=r"in '0.1:100, oops'"):
        parse("0.1:100, oops", 1000)


@pytest.mark.parametrize("max_steps", [0, -5, 1.5, True])
def test_bad_max_steps(max_steps):
    with pytest.raises(ValueError, match="max_steps"):
        parse("0.1", max_steps)


rates = st.floats(min_value=1e-8, max_value=10, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    rates=st.lists(rates, min_size=1, max_size=5),
    gaps=st.lists(st.integers(1, 60), min_size=5, max_size=5),
    bare_last=st.booleans(),
    max_steps=st.integers(1, 200),
)
def test_properties(rates, gaps, bare_last, max_steps):
    ends, step = [], 0
    for gap in gaps[: len(rates)]:
        step += gap
        ends.append(step)
    parts = [f"{r!r}:{e}" for r, e in zip(rates, ends)]
    if bare_last:
        parts[-1] = repr(rates[-1])
    s = parse(", ".join(parts), max_steps)
    # stages tile [0, end_step) without gaps and never pass max_steps
    assert s.stages[0].start == 0
    assert all(a.end == b.start for a, b in zip(s.stages, s.stages[1:]))
    assert all(st_.start < st_.end <= max_steps for st_ in s.stages)
    assert s.end_step == (max_steps if bare_last else min(ends[-1], max_steps))
    # rate_at agrees with a direct reading of the text (the web UI's loop)
    for step_ in range(0, max_steps + 2):
        expected = None
        for i, (r, e) in enumerate(zip(rates, ends)):
            if bare_last and i == len(rates) - 1:
                e = max_steps
            if step_ < min(e, max_steps):
                expected = r
                break
        assert s.rate_at(step_) == expected
    # the canonical text parses back to the same schedule
    assert parse(str(s), max_steps) == s
