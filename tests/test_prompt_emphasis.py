"""Emphasis parsing: expected values are the web UI v1.10.1 outputs (spec tables and observed runs)."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extension.prompt import PromptSyntaxError, escape, parse_emphasis

S = 1 / 1.1  # square-bracket factor, 0.9090909090909091

CASES = [
    ("", [("", 1.0)]),
    ("()", [("", 1.0)]),
    ("((((", [("", 1.0)]),
    ("normal text", [("normal text", 1.0)]),
    ("a (b) c", [("a ", 1.0), ("b", 1.1), (" c", 1.0)]),
    ("a ((b:1.5)) c", [("a ", 1.0), ("b", 1.6500000000000001), (" c", 1.0)]),
    ("a [[b]] c", [("a ", 1.0), ("b", 0.8264462809917354), (" c", 1.0)]),
    ("(a (b:2) c:3)", [("a ", 3.0), ("b", 6.0), (" c", 3.0)]),
    ("(a :1.5)", [("a ", 1.5)]),
    ("(a: 1.5 )", [("a", 1.5)]),
    ("(a:1.5:2)", [("a:1.5", 2.0)]),
    ("(a:1e-1)", [("a:1e-1", 1.1)]),
    ("(a:1,5)", [("a:1,5", 1.1)]),
    ("(a:b)", [("a:b", 1.1)]),
    ("(a:)", [("a:", 1.1)]),
    ("(a:1.5]", [("a:1.5]", 1.1)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("unbalanced)", [("unbalanced)", 1.0)]),
    ("(a [b", [("a ", 1.1), ("b", 1.0)]),
    ("[a)", [("a)", S)]),
    ("(a]", [("a]", 1.1)]),
    ("([a:2)]", [("a", 2 * S)]),
    ("([)]", [("", 1.0)]),
    ("\\(a\\)", [("(a)", 1.0)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("\\\\(a)", [("\\", 1.0), ("a", 1.1)]),
    ("(a\\:1.5)", [("a", 1.5)]),
    ("(a:1.5\\)", [("a:1.5)", 1.1)]),
    ("a\\b", [("ab", 1.0)]),
    ("a\\", [("a", 1.0)]),
    ("\\:", [(":", 1.0)]),
    ("(a)(b)", [("ab", 1.1)]),
    ("(a:1.1)(b)", [("ab", 1.1)]),
    ("((a))(b:1.21)", [("a", 1.2100000000000002), ("b", 1.21)]),
    ("((a:1.3))", [("a", 1.4300000000000002)]),
    ("(((a:1.3)))", [("a", 1.5730000000000004)]),
    ("a ([b]) c", [("a b c", 1.0)]),
    ("[a:b:5]", [("a:b:5", S)]),
    ("[a|b]", [("a|b", S)]),
    ("16:9", [("16:9", 1.0)]),
    (":1.5)", [(":1.5)", 1.0)]),
    # Unicode digits and whitespace in weights
    ("(a:٣)", [("a", 3.0)]),
    ("(a:１.５)", [("a", 1.5)]),
    ("(a:\u00a01.5\u00a0)", [("a", 1.5)]),
    ("(a:²)", [("a:²", 1.1)]),
    ("(a:0)", [("a", 0.0)]),
    ("(a:-1)", [("a", -1.0)]),
    ("(a:+.5)", [("a", 0.5)]),
    # BREAK
    ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("BREAK a", [("", 1.0), ("BREAK", -1.0), ("a", 1.0)]),
    ("a BREAK BREAK b", [("a", 1.0), ("BREAK", -1.0), ("", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("(x)BREAK(y)", [("x", 1.1), ("", 1.0), ("BREAK", -1.0), ("", 1.0), ("y", 1.1)]),
    ("a,BREAK,b", [("a,", 1.0), ("BREAK", -1.0), (",b", 1.0)]),
    ("a\nBREAK\nb", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("aBREAK BREAKS BREAK_ éBREAK 1BREAK break Break",
     [("aBREAK BREAKS BREAK_ éBREAK 1BREAK break Break", 1.0)]),
    ("(a BREAK b)", [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]),
    ("(a BREAK b:1)", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("[(a BREAK b)]", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("(a BREAK b:0)", [("aBREAKb", 0.0)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1),
         ("hill", 0.55), (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)],
    ),
]


@pytest.mark.parametrize(("prompt", "expected"), CASES)
def test_matches_web_ui(prompt, expected):
    result = parse_emphasis(prompt)
    assert result == expected
    # Bit-exact: equal floats can still differ in type or sign of zero; compare reprs too.
    assert [repr(w) for _, w in result] == [repr(float(w)) for _, w in expected]
    assert all(type(w) is float for _, w in result)


def test_huge_weight_is_inf_and_can_make_nan():
    digits = "9" * 400
    assert parse_emphasis(f"(a:{digits})") == [("a", float("inf"))]
    ((text, weight),) = parse_emphasis(f"((a:{digits}):0)")
    assert text == "a" and weight != weight  # NaN


@pytest.mark.parametrize("bad", ["1.2.3", ".", "..", "-.", "1..2", "+."])
def test_unconvertible_weight_raises_like_web_ui(bad):
    with pytest.raises(PromptSyntaxError) as info:
        parse_emphasis(f"x (a:{bad}) y")
    assert isinstance(info.value, ValueError)
    assert f"could not convert string to float: '{bad}'" in str(info.value)
    assert info.value.position == 5 and info.value.weight == bad


def test_weight_error_only_when_a_round_bracket_is_open():
    assert parse_emphasis("a:1.2.3)") == [("a:1.2.3)", 1.0)]


SYNTAX = st.sampled_from([*list("()[]:\\ "), "BREAK", " BREAK ", "1.5", "0", "-1", ".", "\xa0", "\n"])
prompts = st.lists(st.one_of(SYNTAX, st.text(max_size=4)), max_size=30).map("".join)
WEIGHT_RE = re.compile(r":\s*([+-]?[.\d]+)\s*\)")


@given(prompts)
@settings(max_examples=250)
def test_total_and_merged(prompt):
    try:
        result = parse_emphasis(prompt)
    except PromptSyntaxError as exc:
        # Only a ':number)' that float() rejects may raise.
        with pytest.raises(ValueError):
            float(exc.weight)
        assert any(m.group(1) == exc.weight for m in WEIGHT_RE.finditer(prompt))
        return
    assert result and all(isinstance(t, str) and isinstance(w, float) for t, w in result)
    for (_, w1), (_, w2) in itertools.pairwise(result):
        assert not w1 == w2  # adjacent runs never share a weight


@given(prompts)
def test_weights_positive_without_colons_or_break(prompt):
    # Only ':weight)' can make a weight zero or negative, and only BREAK markers start at -1.
    if ":" in prompt or "BREAK" in prompt:
        return
    assert all(w > 0 for _, w in parse_emphasis(prompt))


plain = st.text(max_size=40).filter(
    lambda s: not re.search(r"[\\()\[\]:]|\bBREAK\b", s)
)


@given(plain)
def test_plain_text_is_one_run(text):
    assert parse_emphasis(text) == [(text, 1.0)]


@given(plain.filter(bool), st.decimals(min_value=0, max_value=100, places=3))
def test_brackets_scale_plain_text(text, weight):
    assert parse_emphasis(f"({text})") == [(text, 1.1)]
    assert parse_emphasis(f"({text}") == [(text, 1.1)]
    assert parse_emphasis(f"[{text}]") == [(text, S)]
    w = float(str(weight))
    expected = [("pre " + text + " post", 1.0)] if w == 1.0 else [("pre ", 1.0), (text, w), (" post", 1.0)]
    assert parse_emphasis(f"pre ({text}:{weight}) post") == expected


@given(st.text(max_size=60))
def test_escape_round_trip(text):
    assert parse_emphasis(escape(text)) == [(text, 1.0)]


def test_escape_neutralises_syntax_and_keywords():
    assert escape("a (b) [c] d\\e") == "a \\(b\\) \\[c\\] d\\\\e"
    assert escape("[a:b|c]") == "\\[a\\:b\\|c\\]"
    assert escape("x BREAK y AND z BREAKS") == "x BREA\\K y AN\\D z BREAKS"
    assert parse_emphasis(escape("x BREAK y")) == [("x BREAK y", 1.0)]
