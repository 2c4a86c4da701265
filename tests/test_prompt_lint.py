"""Prompt linter: what it flags, where, and that valid syntax stays quiet."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extension.prompt import Diagnostic, escape, lint


def found(text, embeddings=None):
    return [(d.position, d.severity) for d in lint(text, embeddings)]


def messages(text, embeddings=None):
    return " | ".join(d.message for d in lint(text, embeddings))


CLEAN = [
    "",
    "a photo of a cat",
    "a (cat:1.2), [dog], ((detailed)), (x:0.5)",
    "a [cat:dog:10] in a [field|forest], [old::0.5], [:hat:5]",
    "portrait BREAK background, (a [b:c:5]:1.3)",
    "(a:[1.2:1.5:5])",
    "[(a:1.2):b:5]",
    "a cat AND a dog:0.5",
    r"literal \(brackets\) and \[more\] and a \\ backslash",
    "a | b without prompt editing",
    "ANDroid, BREAKing news",
]


@pytest.mark.parametrize("text", CLEAN)
def test_valid_prompts_are_clean(text):
    assert lint(text) == []


@pytest.mark.parametrize(
    ("text", "expected", "words"),
    [
        ("a (cat", [(2, "warning")], ["never closed", "x1.1", "')'"]),
        ("a [cat", [(2, "warning")], ["never closed", "/1.1", "']'"]),
        ("a cat)", [(5, "warning")], ["no matching", "literal", "\\)"]),
        ("a cat]", [(5, "warning")], ["no matching", "literal"]),
        ("(a:1e-1)", [(2, "warning")], ["not a number", "x1.1"]),
        ("(a:b)", [(2, "warning")], ["not a number"]),
        ("(a:1,5)", [(2, "warning")], ["not a number"]),
        ("(a:1.5:2)", [(2, "warning")], ["Only the last"]),
        ("x (a:1.2.3)", [(5, "error")], ["could not convert string to float"]),
        ("[a:1.5]", [(0, "warning")], ["not a weight", "(text:1.5)"]),
        ("[a:b]", [(2, "warning")], ["literal", "[from:to:step]"]),
        ("[a:b:c:5]", [(2, "warning")], ["literal", "[from:to:step]"]),
        ("a break b", [(2, "info")], ["ordinary text", "BREAK"]),
        ("a Break b", [(2, "warning")], ["ordinary text"]),
        ("(a BREAK b)", [(3, "warning")], ["not a chunk break", "-1.1"]),
        ("[a BREAK b]", [(3, "warning")], ["not a chunk break"]),
        ("a | b [c:d:5]", [(2, "warning"), (8, "warning")], ["'|'", "literal", "\\|"]),
        ("[c:d:5] x\\", [(2, "warning"), (9, "warning")], ["backslash", "off for this whole prompt"]),
        ("aspect 16:9", [(9, "warning")], ["composition weight", "comma"]),
        ("([a:2)]", [(5, "warning")], ["overlap"]),
        ("[a:b:1e999]", [(5, "error")], ["OverflowError"]),
    ],
)
def test_flags(text, expected, words):
    assert found(text) == expected
    text_of_messages = messages(text)
    for word in words:
        assert word in text_of_messages


def test_and_inside_brackets_is_flagged_with_its_consequences():
    result = found("(a AND b)")
    assert (3, "warning") in result  # the AND itself
    assert (0, "warning") in result and (8, "warning") in result  # the cut brackets
    assert "bracket opened at 0" in messages("(a AND b)")


def test_positions_map_through_prompt_editing_and_and_parts():
    # The unclosed '(' follows a schedule in the second AND part.
    assert found("x AND [y:z:5] (w") == [(14, "warning")]
    assert found("x AND [y:z:5] [a|(b:1.2.3)]") == [(20, "error")]


def test_break_inside_brackets_that_cancel_is_not_flagged():
    assert lint("(a BREAK b:1)") == [] and lint("[(a BREAK b)]") == []


def test_embedding_near_misses():
    names = ["my_style", "Other-Emb", "plain"]
    assert found("a my-style cat", names) == [(2, "warning")]
    assert "'my_style'" in messages("a my-style cat", names)
    assert found("a MY_STYLE cat, other-emb", names) == []  # case is harmless: the tokenizer lower-cases
    assert found("Other_Emb", names) == [(0, "warning")]
    assert found("my-styles, xmy-style", names) == []  # not the whole word
    assert found("my-style", ["my_style", "my-style"]) == []  # both spellings are known


def test_diagnostic_is_frozen():
    d = Diagnostic(3, "m")
    assert d.severity == "warning"
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.position = 4  # type: ignore[misc]


syntax = st.sampled_from([*"()[]:|\\ ", "BREAK", "break", "AND", "1.5", "1.2.3", "a", "[a:b:5]", "\n"])


@given(st.lists(st.one_of(syntax, st.text(max_size=3)), max_size=25).map("".join))
@settings(max_examples=150)
def test_never_raises_and_positions_are_in_range(text):
    for d in lint(text, ["a_b"]):
        assert 0 <= d.position <= len(text)
        assert d.severity in {"error", "warning", "info"} and d.message


@given(st.text(max_size=40))
def test_escaped_text_has_no_errors(text):
    assert all(d.severity != "error" for d in lint(escape(text)))
