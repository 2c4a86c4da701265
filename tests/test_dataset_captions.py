"""Captions, prompt templates, tag shuffling and dropout."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from extension.training.captions import (
    caption_for,
    caption_from_filename,
    compile_word_regex,
    filewords,
    normalise_extension,
    split_tags,
)
from extension.training.images import DatasetError
from extension.training.templates import (
    SHIPPED_TEMPLATES,
    available_templates,
    load_template,
    read_template,
    render_prompt,
    resolve_template,
    template_dirs,
)

SHIPPED = ("none", "style", "style_filewords", "subject", "subject_filewords")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("00012-a cat.png", "a cat"),
        ("12345 red ball.jpg", "red ball"),
        ("0-1-2 x.webp", "x"),
        ("plain name.png", "plain name"),
        ("2024 is a year.png", "is a year"),
    ],
)
def test_caption_from_filename_strips_leading_numbers(name, expected):
    assert caption_from_filename(Path(name)) == expected


def test_caption_from_filename_with_word_regex_and_join():
    regex = compile_word_regex(r"[A-Za-z]+")
    assert caption_from_filename(Path("00012-a_cat (2).png"), regex, " ") == "a cat"
    assert caption_from_filename(Path("00012-a_cat (2).png"), regex, "_") == "a_cat"
    assert caption_from_filename(Path("7-big_red_ball.png"), regex, "") == "bigredball"
    # Groups in the pattern do not change what a word is: whole matches are used.
    assert caption_from_filename(Path("a1-b2.png"), compile_word_regex(r"([a-z])(\d)"), ",") == "a1,b2"


def test_invalid_word_regex_is_a_dataset_error():
    with pytest.raises(DatasetError, match=r"Invalid file-name word regex '\[a-z'"):
        compile_word_regex("[a-z")
    assert compile_word_regex("") is None


def test_caption_file_wins_over_file_name(tmp_path):
    (tmp_path / "001-dog.png").write_bytes(b"")
    (tmp_path / "001-dog.txt").write_text("\ufeff  a brown dog,\n sitting  \n\n", encoding="utf-8")
    text, source = caption_for(tmp_path / "001-dog.png")
    assert text == "a brown dog, sitting" and source == tmp_path / "001-dog.txt"
    (tmp_path / "002-cat.png").write_bytes(b"")
    assert caption_for(tmp_path / "002-cat.png") == ("cat", None)


def test_custom_caption_extension(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    (tmp_path / "x.txt").write_text("from txt", encoding="utf-8")
    (tmp_path / "x.caption").write_text("from caption", encoding="utf-8")
    assert caption_for(tmp_path / "x.png", normalise_extension("caption"))[0] == "from caption"
    assert caption_for(tmp_path / "x.png", ".txt")[0] == "from txt"


def test_caption_extension_validation():
    assert normalise_extension("txt") == ".txt" and normalise_extension(".tags.txt") == ".tags.txt"
    for bad in ("", ".", "../x", "a/b", "t xt"):
        with pytest.raises(DatasetError, match="Invalid caption extension"):
            normalise_extension(bad)


def test_non_utf8_caption_file_is_a_dataset_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    (tmp_path / "x.txt").write_bytes(b"caf\xe9")
    with pytest.raises(DatasetError, match=r"x\.txt.*not valid UTF-8.*re-save"):
        caption_for(tmp_path / "x.png")


def test_filewords_unchanged_without_shuffle_or_dropout():
    g = gen(0)
    state = g.get_state()
    assert filewords(" a,b ,  c", g) == " a,b ,  c"
    assert torch.equal(g.get_state(), state)  # nothing drawn


tags_strategy = st.lists(
    st.text(alphabet="abcdefgh ", min_size=1, max_size=6).filter(lambda t: t.strip()), min_size=0, max_size=12
)


@settings(max_examples=150, deadline=None)
@given(tags_strategy, st.booleans(), st.sampled_from([0.0, 0.3, 0.7, 1.0]), st.integers(0, 2**31))
def test_filewords_shuffle_dropout_properties(tags, shuffle, dropout, seed):
    caption = ",".join(tags)
    out = filewords(caption, gen(seed), shuffle=shuffle, dropout=dropout)
    again = filewords(caption, gen(seed), shuffle=shuffle, dropout=dropout)
    assert out == again  # deterministic per generator
    if not shuffle and dropout == 0:
        assert out == caption
        return
    kept = split_tags(out)
    original = [t.strip() for t in tags]
    assert not Counter(kept) - Counter(original)  # only original tags, never invented or duplicated
    if dropout == 0:
        assert Counter(kept) == Counter(original)
    if dropout == 1.0:
        assert kept == []
    if not shuffle:  # dropout alone keeps the order
        it = iter(original)
        assert all(any(t == o for o in it) for t in kept)


def test_shuffle_actually_shuffles_and_dropout_actually_drops():
    caption = ", ".join(f"tag{i}" for i in range(10))
    shuffled = {filewords(caption, gen(s), shuffle=True) for s in range(20)}
    assert len(shuffled) > 10
    counts = [len(split_tags(filewords(caption, gen(s), dropout=0.5))) for s in range(200)]
    assert 4.0 < sum(counts) / len(counts) < 6.0


def test_shipped_templates_exist_and_are_valid():
    found = available_templates()
    assert set(SHIPPED) <= set(found)
    for name in SHIPPED:
        assert found[name].parent == SHIPPED_TEMPLATES
        lines = load_template(name)
        assert lines and all("[name]" in line for line in lines)
    assert load_template("none") == ["[name]"]
    for name in ("subject_filewords", "style_filewords"):
        assert all("[filewords]" in line for line in load_template(name))
    for name in ("subject", "style"):
        assert not any("[filewords]" in line for line in load_template(name))


def test_unknown_template_lists_the_available_names():
    with pytest.raises(DatasetError, match="Unknown prompt template 'subjcet'") as info:
        resolve_template("subjcet")
    for name in SHIPPED:
        assert name in str(info.value)
    with pytest.raises(DatasetError, match="No prompt template given"):
        resolve_template("  ")


def test_template_by_path(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("\n\nart of [name]\n  \n[name] again\n", encoding="utf-8")
    assert load_template(str(path)) == ["art of [name]", "[name] again"]
    assert load_template(path) == ["art of [name]", "[name] again"]
    with pytest.raises(DatasetError, match=r"does not exist.*subject"):
        load_template(str(tmp_path / "missing.txt"))


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "is empty"), ("\n  \n\t\n", "is empty"), ("a photo\n[filewords]\n", "no line containing \\[name\\]")],
)
def test_bad_templates(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        read_template(path)


def test_template_dirs_adds_extra_folders_and_theirs_win(tmp_path):
    (tmp_path / "subject.txt").write_text("theirs [name]\n", encoding="utf-8")
    (tmp_path / "hypernetwork.txt").write_text("a [name] thing\n", encoding="utf-8")
    dirs = template_dirs([tmp_path])
    assert dirs == [tmp_path, SHIPPED_TEMPLATES]
    assert template_dirs([tmp_path, tmp_path]) == dirs
    assert load_template("hypernetwork", dirs) == ["a [name] thing"]
    assert load_template("subject", dirs) == ["theirs [name]"]
    with pytest.raises(DatasetError, match="hypernetwork"):
        load_template("hypernetwork")  # not without the extra folder ...
    assert "hypernetwork" in available_templates(dirs)  # ... listed with it


def test_render_prompt_fills_name_and_filewords_only():
    lines = ["<< [name] | [filewords] >>"]
    caption = "red, round, shiny"
    for seed in range(30):
        out = render_prompt(lines, "emb", caption, gen(seed), shuffle_tags=True, tag_dropout=0.3)
        assert out.startswith("<< emb | ") and out.endswith(" >>")
        middle = out[len("<< emb | ") : -len(" >>")]
        assert set(split_tags(middle)) <= {"red", "round", "shiny"}
    assert render_prompt(lines, "emb", caption, gen(0)) == "<< emb | red, round, shiny >>"


def test_render_prompt_caption_may_use_name_like_the_web_ui():
    assert render_prompt(["[filewords]"], "emb", "a photo of [name]", gen(0)) == "a photo of emb"


def test_render_prompt_line_choice_is_deterministic_and_covers_lines():
    lines = [f"{i} [name]" for i in range(5)]
    picks = [render_prompt(lines, "x", "", gen(s)) for s in range(60)]
    assert picks == [render_prompt(lines, "x", "", gen(s)) for s in range(60)]
    assert set(picks) == set(line.replace("[name]", "x") for line in lines)
