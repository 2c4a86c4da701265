"""The procedurally drawn demo dataset."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from extension.training.demo_data import make_demo_dataset


def test_demo_dataset_files_and_captions(tmp_path):
    folder = make_demo_dataset(tmp_path / "demo", n=5, size=48, seed=3)
    assert folder == tmp_path / "demo"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"demo-{i:02d}.{ext}" for i in range(5) for ext in ("png", "txt")]
    images = [np.asarray(Image.open(folder / f"demo-{i:02d}.png")) for i in range(5)]
    assert all(im.shape == (48, 48, 3) for im in images)
    assert len({im.tobytes() for im in images}) == 5  # varied
    for i in range(5):
        caption = (folder / f"demo-{i:02d}.txt").read_text(encoding="utf-8").strip()
        fur, eyes, background = caption.split(", ")
        assert fur.endswith(" cat face") and eyes.endswith(" eyes") and background.endswith(" background")


def test_demo_dataset_is_deterministic_and_idempotent(tmp_path):
    a = make_demo_dataset(tmp_path / "a", n=3, size=32, seed=1)
    b = make_demo_dataset(tmp_path / "b", n=3, size=32, seed=1)
    for path in a.iterdir():
        assert path.read_bytes() == (b / path.name).read_bytes()
    stamp = {p.name: p.stat().st_mtime_ns for p in a.iterdir()}
    make_demo_dataset(a, n=3, size=32, seed=1)  # same content: nothing rewritten, no error
    assert {p.name: p.stat().st_mtime_ns for p in a.iterdir()} == stamp
    c = make_demo_dataset(tmp_path / "c", n=3, size=32, seed=2)
    assert (c / "demo-00.png").read_bytes() != (a / "demo-00.png").read_bytes()


def test_demo_dataset_never_overwrites_other_files_silently(tmp_path):
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "demo-01.txt").write_text("my own caption", encoding="utf-8")
    with pytest.raises(FileExistsError, match=r"demo-01\.txt"):
        make_demo_dataset(folder, n=2, size=32)
    assert sorted(p.name for p in folder.iterdir()) == ["demo-01.txt"]  # nothing written
    make_demo_dataset(folder, n=2, size=32, overwrite=True)
    assert (folder / "demo-01.txt").read_text(encoding="utf-8") != "my own caption"


def test_demo_dataset_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="n must be"):
        make_demo_dataset(tmp_path, n=0)
    with pytest.raises(ValueError, match="multiple of 8"):
        make_demo_dataset(tmp_path, size=30)
