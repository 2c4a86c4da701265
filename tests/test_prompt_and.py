"""AND composition; expected values are web UI v1.10.1 `get_multicond_prompt_list` outputs."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extension.prompt import split_and
from extension.prompt.composition import split_and_parts

CASES = [
    ("a AND b:0.5 AND c :-1 ", [("a", 1.0), (" b", 0.5), (" c", -1.0)]),
    ("aspect 16:9", [("aspect 16", 9.0)]),
    ("a cat :1.2", [("a cat", 1.2)]),
    ("cat:1.2 dog", [("cat:1.2 dog", 1.0)]),
    ("(a:1.2)", [("(a:1.2)", 1.0)]),
    ("(a AND b)", [("(a", 1.0), (" b)", 1.0)]),
    ("a AND a", [("a", 1.0), (" a", 1.0)]),
    ("a AND b AND b", [("a", 1.0), (" b", 1.0), (" b", 1.0)]),
    ("ANDroid xAND and And", [("ANDroid xAND and And", 1.0)]),
    ("a:1e-1", [("a:1e-1", 1.0)]),
    ("", [("", 1.0)]),
    ("AND", [("", 1.0), ("", 1.0)]),
    ("  lead\n", [("  lead", 1.0)]),
    ("a:٣", [("a", 3.0)]),
    ("a:1.", [("a", 1.0)]),
    ("a : .5  ", [("a", 0.5)]),
    ("a:+2", [("a", 2.0)]),
    ("a:-.5\n", [("a", -0.5)]),
    ("x\nAND\ny:2", [("x", 1.0), ("\ny", 2.0)]),
]


@pytest.mark.parametrize(("prompt", "expected"), CASES)
def test_matches_web_ui(prompt, expected):
    assert split_and(prompt) == expected


def test_part_offsets():
    parts = split_and_parts("a AND b:0.5 AND c")
    assert [(p.start, p.weight_start) for p in parts] == [(0, -1), (5, 7), (15, -1)]
    assert [p.text for p in parts] == ["a ".rstrip(), " b", " c"]


@given(st.text(max_size=40).filter(lambda s: ":" not in s and not re.search(r"\bAND\b", s)))
def test_without_and_or_colon_is_whole_prompt(text):
    assert split_and(text) == [(text.rstrip(), 1.0)]


@given(st.lists(st.text(alphabet="ab c:.5(", max_size=8), min_size=1, max_size=5))
def test_one_entry_per_part(parts):
    prompt = " AND ".join(parts)
    result = split_and(prompt)
    assert len(result) == len(parts)
    for (text, weight), raw in zip(result, re.split(r"\bAND\b", prompt)):
        assert raw.startswith(text) and not text[-1:].isspace()
        assert weight == 1.0 or ":" in raw[len(text):]
