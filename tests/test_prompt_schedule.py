"""Prompt editing and alternation; the table holds web UI v1.10.1 outputs (lark 1.1.2, several hash
seeds, and lark 1.3.1 all agree on these)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extension.prompt import escape, schedule_prompt
from extension.prompt.scheduling import parse_schedule

CASES = [
    ('a [b:3]', 10, None, False, [(3, 'a '), (10, 'a b')]),
    ('a [b: 3]', 10, None, False, [(3, 'a '), (10, 'a b')]),
    ('a [[[b]]:2]', 10, None, False, [(2, 'a '), (10, 'a [[b]]')]),
    ('[(a:2):3]', 10, None, False, [(3, ''), (10, '(a:2)')]),
    ('a [b : c : 1] d', 10, None, False, [(1, 'a b  d'), (10, 'a  c  d')]),
    ('a[b:[c:d:2]:1]e', 10, None, False, [(1, 'abe'), (2, 'ace'), (10, 'ade')]),
    ('a [unbalanced', 10, None, False, [(10, 'a [unbalanced')]),
    ('a [b:.5] c', 10, None, False, [(5, 'a  c'), (10, 'a b c')]),
    ('a [{b|d{:.5] c', 10, None, False, [(10, 'a [{b|d{:.5] c')]),
    ('((a][:b:c [d:3]', 10, None, False, [(3, '((a][:b:c '), (10, '((a][:b:c d')]),
    ('[a|(b:1.1)]', 4, None, False, [(1, 'a'), (2, '(b:1.1)'), (3, 'a'), (4, '(b:1.1)')]),
    ('[fe|]male', 4, None, False, [(1, 'female'), (2, 'male'), (3, 'female'), (4, 'male')]),
    ('[fe|||]male', 8, None, False, [(1, 'female'), (2, 'male'), (3, 'male'), (4, 'male'), (5, 'female'), (6, 'male'), (7, 'male'), (8, 'male')]),
    ('a [b:.5] c', 10, 10, False, [(10, 'a b c')]),
    ('a [b:1.5] c', 10, 10, False, [(5, 'a  c'), (10, 'a b c')]),
    ('[a:b:0.05]', 10, None, False, [(10, 'b')]),
    ('[a:b:0]', 10, None, False, [(10, 'b')]),
    ('[a:b:-1]', 10, None, False, [(10, 'b')]),
    ('[a:b:10]', 10, None, False, [(10, 'a')]),
    ('[a:b:100]', 10, None, False, [(10, 'a')]),
    ('[a:b:25]', 20, None, False, [(20, 'a')]),
    ('[a:b:25]', 20, 10, False, [(5, 'a'), (10, 'b')]),
    ('[a:b:1.5]', 20, 10, False, [(5, 'a'), (10, 'b')]),
    ('[a:b:0.5]', 20, 10, False, [(10, 'b')]),
    ('[a:b:0.5]', 20, 10, True, [(10, 'a'), (20, 'b')]),
    ('[a|b|c] [x|y]', 6, None, False, [(1, 'a x'), (2, 'b y'), (3, 'c x'), (4, 'a y'), (5, 'b x'), (6, 'c y')]),
    ('a [b:c:5] (d [e|f]:1.2)', 6, None, False, [(1, 'a b (d e:1.2)'), (2, 'a b (d f:1.2)'), (3, 'a b (d e:1.2)'), (4, 'a b (d f:1.2)'), (5, 'a b (d e:1.2)'), (6, 'a c (d f:1.2)')]),
    ('(x [a:b:5])', 10, None, False, [(5, '(x a)'), (10, '(x b)')]),
    ('[a AND b:c:5]', 10, None, False, [(5, 'a AND b'), (10, 'c')]),
    ('[a:b:0.29]', 100, None, False, [(28, 'a'), (100, 'b')]),
    ('[a:b:1.2]', 10, 10, False, [(1, 'a'), (10, 'b')]),
    ('[a:b:1e1]', 20, None, False, [(10, 'a'), (20, 'b')]),
    ('[a:b:0.5e1]', 10, None, False, [(10, 'a')]),
    ('[a:b:5e-1]', 10, None, False, [(10, 'b')]),
    ('[a|[b|c]]', 4, None, False, [(1, 'a'), (2, 'c'), (3, 'a'), (4, 'c')]),
    ('[[a:b:5]', 10, None, False, [(5, '[a'), (10, '[b')]),
    ('\\[a:b:5]', 10, None, False, [(10, '\\[a:b:5]')]),
    ('\\\\[a:b:5]', 10, None, False, [(5, '\\\\a'), (10, '\\\\b')]),
    ('a\\\n[b:c:5]', 10, None, False, [(10, 'a\\\n[b:c:5]')]),
    ('a [b:c:5]\\', 10, None, False, [(10, 'a [b:c:5]\\')]),
    ('[a:b:5 5]', 10, None, False, [(10, '[a:b:5 5]')]),
    ('[a:b:٣]', 10, None, False, [(10, '[a:b:٣]')]),
    ('[a:b:c:5]', 10, None, False, [(10, '[a:b:c:5]')]),
    ('a | b [c:d:5]', 10, None, False, [(10, 'a | b [c:d:5]')]),
    ('(a|b) [c:d:5]', 10, None, False, [(10, '(a|b) [c:d:5]')]),
    ('[a:b|c:5]', 10, None, False, [(10, '[a:b|c:5]')]),
    ('[:b:5]', 10, None, False, [(5, ''), (10, 'b')]),
    ('[a::5]', 10, None, False, [(5, 'a'), (10, '')]),
    ('[::5]', 10, None, False, [(5, ''), (10, '')]),
    ('[|a]', 3, None, False, [(1, ''), (2, 'a'), (3, '')]),
    ('[a||]', 3, None, False, [(1, 'a'), (2, ''), (3, '')]),
    ('[|]', 2, None, False, [(1, ''), (2, '')]),
    ('[a:b:\xa05\xa0]', 10, None, False, [(5, 'a'), (10, 'b')]),
    ('(a:[1.2:1.5:5])', 10, None, False, [(5, '(a:1.2)'), (10, '(a:1.5)')]),
    ('(a:1.[2:5:5])', 10, None, False, [(5, '(a:1.2)'), (10, '(a:1.5)')]),
    ('[(a:1.2):b:5]', 10, None, False, [(5, '(a:1.2)'), (10, 'b')]),
    ('([a:b:5]:1.3)', 10, None, False, [(5, '(a:1.3)'), (10, '(b:1.3)')]),
    ('[a:b:5]', 0, None, False, [(0, 'a')]),
    ('[a|b]', 0, None, False, [(0, 'b')]),
    ('[a:b:1.]', 10, None, False, [(10, 'a')]),
    ('[a:b:+.5e1]', 10, None, False, [(10, 'a')]),
    ('[a:b:1e]', 10, None, False, [(10, '[a:b:1e]')]),
    ('[a:b:3]', 10, 5, False, [(5, 'b')]),
    ('[a:b:12]', 10, 5, False, [(2, 'a'), (5, 'b')]),
    ('[a:b:5][c:d:7]', 10, None, False, [(5, 'ac'), (7, 'bc'), (10, 'bd')]),
    ('x [a: b :2] y', 10, None, False, [(2, 'x a y'), (10, 'x  b  y')]),]


@pytest.mark.parametrize(("prompt", "steps", "hires", "old", "expected"), CASES)
def test_matches_web_ui(prompt, steps, hires, old, expected):
    assert schedule_prompt(prompt, steps, hires, old) == expected


def test_overlong_step_number_overflows_like_web_ui():
    with pytest.raises(OverflowError):
        schedule_prompt("[a:b:1e999]", 10)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        # Ambiguous in the grammar (lark 1.1.2 answers by hash seed); we always take the group.
        ("[a:b:5]]", [(5, "a]"), (10, "b]")]),
        ("[a:b:5][c", [(5, "a[c"), (10, "b[c")]),
        ("[a:b:[5:6:3]]", [(3, "[a:b:5]"), (10, "[a:b:6]")]),
        ("x[a:b:5])", [(5, "xa)"), (10, "xb)")]),
    ],
)
def test_ambiguous_prompts_prefer_prompt_editing(prompt, expected):
    assert schedule_prompt(prompt, 10) == expected


def test_parse_failure_reports_position():
    assert parse_schedule("a | b [c:d:5]").error_position == 2
    assert parse_schedule("a [b:c:5]\\").error_position == 9
    assert parse_schedule("ok [b:c:5]").nodes is not None


def test_deep_nesting_does_not_recurse():
    deep = "[" * 5000 + "a:b:5" + "]" * 5000
    result = schedule_prompt(deep, 10)
    assert result[-1][0] == 10 and len(result) == 2
    assert schedule_prompt("(" * 5000 + "[a|b]", 2) == [(1, "(" * 5000 + "a"), (2, "(" * 5000 + "b")]


syntax = st.sampled_from([*list("[]():| \\ab5"), "0.5", "1.5", "12", "[a:b:5]", "[x|y]", "\n", "\xa0"])
prompts = st.lists(syntax, max_size=25).map("".join)


@given(prompts, st.integers(min_value=1, max_value=30), st.one_of(st.none(), st.integers(1, 30)),
       st.booleans())
@settings(max_examples=150)
def test_schedule_shape(prompt, steps, hires, old):
    result = schedule_prompt(prompt, steps, hires, old)
    total = steps if hires is None or old else hires
    ends = [end for end, _ in result]
    assert ends[-1] == total
    assert ends == sorted(set(ends)) and ends[0] >= 1
    for _, text in result:
        # Every rendered text keeps characters of the prompt in order (a subsequence).
        it = iter(prompt)
        assert all(ch in it for ch in text)


@given(st.text(max_size=40).filter(lambda s: "[" not in s), st.integers(1, 50))
def test_without_square_bracket_unchanged(text, steps):
    assert schedule_prompt(text, steps) == [(steps, text)]


@given(st.text(alphabet=st.characters(blacklist_characters="[]():|\\"), max_size=12),
       st.text(alphabet=st.characters(blacklist_characters="[]():|\\"), max_size=12),
       st.integers(1, 40), st.integers(1, 60))
def test_simple_edit_switches_at_integer_step(before, after, when, steps):
    result = schedule_prompt(f"<[{before}:{after}:{when}]>", steps)
    if when < steps:
        assert result == [(when, f"<{before}>"), (steps, f"<{after}>")]
    else:
        assert result == [(steps, f"<{before}>")]


@given(st.lists(st.text(alphabet="abc ", max_size=3), min_size=2, max_size=4), st.integers(1, 12))
def test_alternation_cycles(options, steps):
    result = schedule_prompt("[" + "|".join(options) + "]", steps)
    assert result == [(t, options[(t - 1) % len(options)]) for t in range(1, steps + 1)]


def test_plain_texts_keep_escapes():
    assert schedule_prompt(r"\(a\) [b:c:2]", 4) == [(2, r"\(a\) b"), (4, r"\(a\) c")]
    assert re.fullmatch(r"\\\[a:b:5\]", schedule_prompt(r"\[a:b:5]", 4)[0][1])


@given(st.text(max_size=40), st.integers(3, 20))
def test_escaped_text_is_never_scheduled(text, steps):
    escaped = escape(text)
    assert schedule_prompt("a [b:c:2] " + escaped, steps)[-1] == (steps, "a c " + escaped)
