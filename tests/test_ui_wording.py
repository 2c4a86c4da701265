"""Messages in the tab's words: the core's real messages, with CLI flags and option names mapped
to the tab's labels and buttons (the CLI keeps its own wording)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from extension.training.config import ConfigError, TrainConfig
from extension.ui.fields import LABELS
from extension.ui.wording import tab_words

SNAKE_OPTIONS = [n for n in LABELS if "_" in n]


def core_problems(tmp_path: Path) -> list[str]:
    """What the options check really says about a range of bad settings."""
    from extension.training.demo_data import make_demo_dataset

    data = make_demo_dataset(tmp_path / "data", n=2, size=16)
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = [
        {},
        {"name": "cat", "data": str(tmp_path / "missing")},
        {"name": "cat", "data": str(empty)},
        {"name": "cat", "data": str(data), "batch_size": 99},
        {"name": "cat", "data": str(data), "width": 7, "preview_width": 7},
        {"name": "cat", "data": str(data), "repeats": 0, "tag_dropout": 2.0, "flip_probability": -1.0,
         "max_steps": 0, "save_every": -1, "weight_decay": -1.0, "clip_skip": 0},
        {"name": "cat", "data": str(data), "learn_rate": "0.1:5, 0.01:3", "clip_grad": "norm", "clip_grad_value": "x"},
        {"name": "cat", "data": str(data), "validation_data": str(tmp_path / "nope")},
        {"name": "cat", "data": str(data), "resume": True, "embeddings_dir": str(tmp_path / "none")},
    ]  # fmt: skip
    problems = []
    for options in bad:
        with pytest.raises(ConfigError) as info:
            TrainConfig(**options).validate()
        problems += info.value.problems
    return problems


def test_core_messages_read_in_the_tabs_words(tmp_path: Path) -> None:
    problems = core_problems(tmp_path)
    assert any("--" in p for p in problems)  # the CLI's words, as the CLI shows them
    for problem in problems:
        text = tab_words(problem)
        assert not re.search(r"(?<![\w/])--[a-z]", text), (problem, text)
        leftover = [n for n in SNAKE_OPTIONS if re.search(rf"(?<![\w/.]){n}(?![\w/])", text)]
        assert not leftover, (problem, text)


@pytest.mark.parametrize(
    ("core", "tab"),
    [
        ("no dataset folder; pass --data DIR (a folder of images)",
         'no dataset folder; fill in "Dataset folder" (a folder of images)'),
        ("cat has already been trained for 40 steps (max steps 40); raise --steps to continue",
         'cat has already been trained for 40 steps (max steps 40); raise "Max steps" to continue'),
        ("cat: interrupted after 12 steps; continue with --resume (fp32); saved /x/cat.safetensors",
         "cat: interrupted after 12 steps; press Resume to continue (fp32); saved /x/cat.safetensors"),
        ("batch size 9 is larger than the dataset (4 examples per epoch); lower --batch-size or pass --clamp-batch",
         'batch size 9 is larger than the dataset (4 examples per epoch); lower "Batch size" or tick '
         '"Clamp batch size to the dataset"'),
        ("max_steps 0 must be at least 1", "Max steps 0 must be at least 1"),
        ("width 7 is not a positive multiple of 8; use e.g. 8", "Width 7 is not a positive multiple of 8; use e.g. 8"),
        ("learn_rate schedule 'x' is invalid: not a number", "Learning rate schedule 'x' is invalid: not a number"),
        ("validation folder /v does not exist; check --validation-data (empty = training set)",
         'validation folder /v does not exist; check "Validation folder" (empty = training set)'),
        ("init text '' has no tokens for clip_l; use a word such as 'person' or '*', or pass --zeros",
         "init text '' has no tokens for clip_l; use a word such as 'person' or '*', or leave "
         '"Initialization text" empty to start from zeros'),
    ],
)  # fmt: skip
def test_phrases(core: str, tab: str) -> None:
    assert tab_words(core) == tab


def test_paths_and_file_names_are_left_alone() -> None:
    core = "dataset folder /home/me/template_dir/max_steps does not exist; check --data"
    assert tab_words(core) == 'dataset folder /home/me/template_dir/max_steps does not exist; check "Dataset folder"'
    assert tab_words("saved max_steps.safetensors") == "saved max_steps.safetensors"


def test_tick_overwrite_names_the_sections_checkbox() -> None:
    core = "/e/cat.safetensors already exists; tick overwrite or choose another name"
    assert tab_words(core, overwrite_label="Replace an embedding of that name") == (
        '/e/cat.safetensors already exists; tick "Replace an embedding of that name" or choose another name'
    )
