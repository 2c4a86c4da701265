"""``python -m extension inspect-prompt`` with the real CLIP tokenizer."""

from __future__ import annotations

import json

import pytest

from extension.cli import main
from extension.prompt.lint import lint

EXAMPLE = "a (photo:1.3) of [myface], BREAK detailed"


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(["inspect-prompt", *argv])
    return code, capsys.readouterr().out


def run_json(capsys, *argv: str) -> dict:
    code, out = run(capsys, *argv, "--json")
    assert code == 0
    return json.loads(out)


def test_text_output_of_the_example(capsys):
    code, out = run(capsys, EXAMPLE, "--embedding", "myface=8", "--embedding", "other=2")
    assert code == 0
    assert "tokens: 76/150" in out
    assert "     1.3  'photo'" in out
    assert "  BREAK\n" in out
    assert "  0.9091  'myface'" in out
    assert "chunks: 2, tokens 76/150" in out
    assert "1: [12 tokens] a (photo:1.3) of (<myface>:0.9091) ," in out
    assert "2: [1 tokens] detailed" in out
    assert "myface: 8 vectors, used" in out
    assert "other: 2 vectors, not found in the prompt" in out
    assert "AND parts" not in out and "prompt editing" not in out


def test_json_output_of_the_example(capsys):
    res = run_json(capsys, EXAMPLE, "--embedding", "myface=8")
    (part,) = res["parts"]
    (variant,) = part["variants"]
    assert variant["runs"][:2] == [["a ", 1.0], ["photo", 1.3]]
    first, second = variant["chunks"]
    assert first["tokens"][:4] == [49406, 320, 1125, 539]
    assert first["tokens"][4:12] == [0] * 8 and first["multipliers"][4:12] == [1 / 1.1] * 8
    assert first["tokens"][12:] == [267] + [49407] * 64
    assert first["fixes"] == [[3, "myface"]]
    assert second["tokens"][:3] == [49406, 12609, 49407]
    assert res["token_count"] == 76 and res["target_token_count"] == 150
    assert res["embeddings"] == {"myface": {"vectors": 8, "used": True}}


def test_and_parts_and_schedule(capsys):
    code, out = run(capsys, "a [cat|dog] in [snow:rain:5] AND (sunset:1.2) :0.7", "--steps", "6")
    assert code == 0
    assert "AND parts: 2" in out
    assert "part 2, weight 0.7: ' (sunset:1.2)'" in out
    assert "prompt editing over 6 steps: 3 texts" in out
    assert "steps 1, 3, 5: 'a cat in snow'" in out
    assert "steps 2, 4: 'a dog in snow'" in out
    assert "steps 6: 'a dog in rain'" in out
    res = run_json(capsys, "a [cat|dog] in [snow:rain:5] AND (sunset:1.2) :0.7", "--steps", "6")
    assert [p["weight"] for p in res["parts"]] == [1.0, 0.7]
    assert res["parts"][0]["schedule"][-1] == [6, "a dog in rain"]


def test_negative_prompt_is_not_split(capsys):
    res = run_json(capsys, "ugly AND blurry", "--negative")
    assert [p["text"] for p in res["parts"]] == ["ugly AND blurry"]


def test_extra_networks_are_removed(capsys):
    code, out = run(capsys, "a cat <lora:foo:0.8>")
    assert code == 0
    assert "extra networks (removed): <lora:foo:0.8>" in out
    assert "tokens: 2/75" in out


def test_openclip_padding(capsys):
    res = run_json(capsys, "a cat", "--openclip")
    tokens = res["parts"][0]["variants"][0]["chunks"][0]["tokens"]
    assert tokens == [49406, 320, 2368, 49407] + [0] * 73


def test_emphasis_none_keeps_brackets(capsys):
    res = run_json(capsys, "(a:1.5) BREAK b", "--emphasis", "None")
    variant = res["parts"][0]["variants"][0]
    assert variant["runs"] == [["(a:1.5) BREAK b", 1.0]]
    assert len(variant["chunks"]) == 1


def test_comma_backtrack_option_and_bug_warning(capsys):
    prompt = "cat " * 60 + ", style8 " + "dog " * 20
    code, out = run(capsys, prompt, "--embedding", "style8=8")
    assert "chunks: 2, tokens 103/150" in out
    assert "embedding 'style8' at 61 now lands on padding" in out
    assert "8 embedding placeholders at 0 have no vectors" in out
    code, out = run(capsys, prompt, "--embedding", "style8=8", "--comma-backtrack", "0")
    assert code == 0
    assert "chunks: 2, tokens 89/150" in out and "warning" not in out


def test_syntax_error_exit_code(capsys):
    code, out = run(capsys, "(a:1.2.3) b")
    assert code == 1
    assert "error:" in out and "1.2.3" in out


def test_lint_warnings_are_shown(capsys):
    prompt = "((a cat, [b"
    code, out = run(capsys, prompt)
    assert code == 0
    found = lint(prompt, [])
    for d in found:
        assert f"{d.severity} at {d.position}: {d.message}" in out
    if not found:
        assert "lint: no problems found" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["x", "--embedding", "myface"], "NAME=VECTORS"),
        (["x", "--embedding", "myface=0"], "NAME=VECTORS"),
        (["x", "--comma-backtrack", "75"], "0 (off) to 74"),
        (["x", "--steps", "0"], "at least 1"),
        (["x", "--emphasis", "Loud"], "invalid choice"),
    ],
)
def test_bad_arguments(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(["inspect-prompt", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
