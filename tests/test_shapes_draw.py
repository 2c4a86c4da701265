"""The coloured-shapes world: seeded pictures, captions, held-out combinations, the demo dataset."""

from __future__ import annotations

import colorsys
import random

import numpy as np
import pytest
from PIL import Image

from extension.shapes.draw import (
    BACKGROUNDS,
    COLOURS,
    HELD_OUT,
    SHAPES,
    any_hue,
    caption,
    draw_shape,
    filewords,
    jittered,
    parse_concept,
    random_spec,
    seen_combinations,
)
from extension.shapes.judge import colour_of_hue
from extension.training.demo_data import make_shapes_dataset


def test_held_out_pairs_are_never_drawn_but_their_parts_are():
    rng = random.Random(0)
    drawn = {random_spec(rng).concept for _ in range(3000)}
    assert drawn == {f"{c} {s}" for c, s in seen_combinations()}
    assert len(drawn) == len(COLOURS) * len(SHAPES) - len(HELD_OUT)
    for colour, shape in HELD_OUT:
        assert f"{colour} {shape}" not in drawn
        assert any(c == colour for c, _ in seen_combinations())
        assert any(s == shape for _, s in seen_combinations())


def test_captions_name_what_is_drawn_and_nothing_held_out():
    rng = random.Random(1)
    partial = 0
    for _ in range(1000):
        spec = random_spec(rng)
        text = caption(spec, rng)
        words = text.replace(",", " ").split()
        assert spec.shape in words or f"{spec.colour} shape" in text, text
        assert spec.colour in words or spec.shape in words
        partial += spec.concept not in text
        other_sizes = {"small", "large"} - {spec.size}
        assert not any(word in words for word in other_sizes), text
        assert not any(c in words for c in COLOURS if c != spec.colour)
        assert not any(s in words for s in SHAPES if s != spec.shape)
    assert 0.2 < partial / 1000 < 0.4  # PARTIAL_CAPTIONS: colour or shape alone


def test_training_colours_never_show_a_held_out_pair():
    rng = random.Random(4)
    for _ in range(3000):
        shape = rng.choice(SHAPES)
        hue = colorsys.rgb_to_hsv(*(v / 255 for v in any_hue(shape, rng)))[0] * 360
        assert (colour_of_hue(hue), shape) not in HELD_OUT
    for colour in COLOURS:
        hue = colorsys.rgb_to_hsv(*(v / 255 for v in jittered(colour, rng)))[0] * 360
        assert colour_of_hue(hue) == colour


def _mean_hue_of_coloured_pixels(image: Image.Image) -> float:
    rgb = np.asarray(image, dtype=np.float64) / 255
    chroma = rgb.max(-1) - rgb.min(-1)
    pixels = rgb[chroma > 0.4]
    hues = np.array([colorsys.rgb_to_hsv(*p)[0] for p in pixels]) * 2 * np.pi
    return float(np.angle(np.exp(1j * hues).mean()) % (2 * np.pi))


@pytest.mark.parametrize("colour", list(COLOURS))
def test_pictures_show_the_colour_on_the_background(colour):
    spec = random_spec(random.Random(2), colour=colour, shape="square")
    image = draw_shape(spec, 32)
    assert image.size == (32, 32) and image.mode == "RGB"
    corner = np.asarray(image)[0, 0]
    assert np.abs(corner.astype(int) - BACKGROUNDS[spec.background]).max() <= 2
    expected = colorsys.rgb_to_hsv(*(v / 255 for v in COLOURS[colour]))[0] * 2 * np.pi
    assert abs(np.angle(np.exp(1j * (_mean_hue_of_coloured_pixels(image) - expected)))) < 0.05


def test_shapes_dataset_files_are_seeded_and_captions_hide_the_concept(tmp_path):
    a = make_shapes_dataset(tmp_path / "a", "purple star", n=6, size=32, seed=4)
    b = make_shapes_dataset(tmp_path / "b", "purple-star", n=6, size=32, seed=4)
    names = sorted(p.name for p in a.iterdir())
    assert names == [f"shape-{i:02d}.{ext}" for i in range(6) for ext in ("png", "txt")]
    assert all(p.read_bytes() == (b / p.name).read_bytes() for p in a.iterdir())
    images = {(a / f"shape-{i:02d}.png").read_bytes() for i in range(6)}
    assert len(images) == 6
    for i in range(6):
        text = (a / f"shape-{i:02d}.txt").read_text("utf-8").strip()
        size, background = text.split(", ")
        assert size in ("small", "large") and background.removesuffix(" background") in BACKGROUNDS
        assert "purple" not in text and "star" not in text
    c = make_shapes_dataset(tmp_path / "c", "purple star", n=1, size=32, seed=5)
    assert (c / "shape-00.png").read_bytes() != (a / "shape-00.png").read_bytes()


def test_shapes_dataset_keeps_other_files_and_names_bad_concepts(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "shape-00.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(FileExistsError, match=r"shape-00\.txt"):
        make_shapes_dataset(folder, n=1)
    assert (folder / "shape-00.txt").read_text(encoding="utf-8") == "mine"
    with pytest.raises(ValueError, match=r"unknown colour 'pink'.*purple"):
        parse_concept("pink star")
    with pytest.raises(ValueError, match=r"unknown shape 'heart'.*triangle"):
        make_shapes_dataset(tmp_path / "e", "red heart")
    with pytest.raises(ValueError, match="'<colour> <shape>'"):
        parse_concept("star")


def test_filewords_never_name_the_concept():
    rng = random.Random(3)
    for _ in range(50):
        spec = random_spec(rng)
        assert spec.colour not in filewords(spec) and spec.shape not in filewords(spec)
