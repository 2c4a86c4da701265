"""Pictures and captions at the edges: a 9500x9500 photo trains (reduced while loading, with a
note), only a header a decompression bomb would have is refused; a 1x1 image and a megabyte of
caption get a warning before training, and the caption is cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from extension.training.captions import MAX_CAPTION_CHARS, caption_for, read_caption_file
from extension.training.config import TrainConfig
from extension.training.dataset import DatasetOptions, TrainingDataset
from extension.training.images import KEEP_SIDE, decode_image, probe_image


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def config(folder: Path, tmp_path: Path, **changes) -> TrainConfig:
    options = {"name": "cat", "data": str(folder), "width": 32, "height": 32, "template": "subject",
               "embeddings_dir": str(tmp_path / "emb"), "log_dir": str(tmp_path / "logs")}  # fmt: skip
    return TrainConfig(**{**options, **changes})


def test_a_photo_above_pillows_bomb_warning_trains_reduced_with_a_note(tmp_path, backends):
    """9500x9500 = 90 million pixels: more than Pillow's MAX_IMAGE_PIXELS (89 million), which used
    to refuse it as a "possible decompression bomb"."""
    folder = tmp_path / "photos"
    folder.mkdir()
    big = Image.new("RGB", (9500, 9500), (200, 100, 50))
    big.paste(noise((64, 64)), (4718, 4718))
    big.save(folder / "big.png", compress_level=1)
    del big
    noise((64, 64), 1).save(folder / "small.png")
    assert probe_image(folder / "big.png") == (9500, 9500)
    decoded = decode_image(folder / "big.png")
    assert decoded.size == (4750, 4750) and min(decoded.size) >= KEEP_SIDE
    assert decoded.rgb.getpixel((10, 10)) == (200, 100, 50)
    warnings = config(folder, tmp_path, width=64, height=64).validate()
    assert any("very large (big.png 9500x9500)" in w and "reduced while loading" in w for w in warnings), warnings
    options = DatasetOptions(folder, width=64, height=64, template="subject")
    dataset = TrainingDataset.prepare(options, backends["sd1"], "cat", progress=lambda d, t: None)
    assert len(dataset) == 2 and dataset.skipped == []


def test_jpeg_is_decoded_at_a_smaller_scale(tmp_path):
    noise((600, 400)).resize((9000, 6000)).save(tmp_path / "photo.jpg", quality=80)
    decoded = decode_image(tmp_path / "photo.jpg", keep_side=1000)
    assert decoded.size == (2250, 1500)  # 1/4 scale straight from the decoder: the shorter side stays >= 1000


def test_tiny_images_get_a_warning_naming_them(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (1, 1), "red").save(folder / "dot.png")
    noise((64, 64)).save(folder / "fine.png")
    warnings = config(folder, tmp_path, width=64, height=64).validate()
    (note,) = [w for w in warnings if "enlarged" in w]
    assert note.startswith("1 image(s) are much smaller than the training size 64x64")
    assert "dot.png 1x1 (x64)" in note and "fine.png" not in note


def test_a_megabyte_of_caption_is_cut_with_a_warning(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    noise((64, 64)).save(folder / "cat.png")
    (folder / "cat.txt").write_text("a cat, " * 180_000, encoding="utf-8")  # 1.26 MB
    warnings = config(folder, tmp_path, width=64, height=64).validate()
    assert any("cat.txt (1,260,000 bytes)" in w and f"only the first {MAX_CAPTION_CHARS}" in w for w in warnings)
    caption, source = caption_for(folder / "cat.png")
    assert source == folder / "cat.txt" and len(caption) <= MAX_CAPTION_CHARS and caption.startswith("a cat, a cat")


def test_cut_captions_keep_whole_characters_and_refuse_bad_utf8(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\ufeff" + "é" * 50, encoding="utf-8")
    assert read_caption_file(path, limit=10) == "é" * 10
    path.write_bytes(b"ok \xff\xfe")
    with pytest.raises(UnicodeDecodeError):
        read_caption_file(path)
