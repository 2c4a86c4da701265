"""The tab's Blocks: ids and labels, every training option present, and its handlers at work."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from extension.training.config import TrainConfig
from extension.ui.adapter import StandaloneAdapter
from extension.ui.service import HOST_FIELDS, TrainerService, UserError, option_fields
from extension.ui.tab import LABELS, NOT_FIELDS, options_from_values, tab_fields

ROOT = Path(__file__).resolve().parents[1]


def test_every_training_option_is_in_the_tab() -> None:
    shown = tab_fields()
    assert len(shown) == len(set(shown))
    expected = {f.name for f in option_fields()} - set(NOT_FIELDS)
    assert set(shown) == expected
    assert set(LABELS) == set(shown)
    assert not set(shown) & set(HOST_FIELDS)


def test_options_from_values_types() -> None:
    defaults = TrainConfig()
    names = ["max_steps", "weight_decay", "shuffle_tags", "learn_rate", "template"]
    got = options_from_values(names, [12.0, 1, 1, "0.1:5, 0.01", None], defaults)
    assert got == {
        "max_steps": 12,
        "weight_decay": 1.0,
        "shuffle_tags": True,
        "learn_rate": "0.1:5, 0.01",
        "template": "",
    }
    assert isinstance(got["max_steps"], int) and isinstance(got["weight_decay"], float)
    with pytest.raises(UserError, match="Max steps is empty"):
        options_from_values(["max_steps"], [None], defaults)
    with pytest.raises(UserError, match="whole number"):
        options_from_values(["batch_size"], [1.5], defaults)


@pytest.fixture(scope="module")
def gradio():
    from extension.ui.compat import import_gradio

    try:
        return import_gradio()
    except ImportError as exc:
        pytest.skip(f"gradio is not installed ({exc})")


@pytest.fixture
def built(gradio, tmp_path: Path):
    from extension.backends.tiny import build_tiny_backend
    from extension.ui.tab import build_tab

    adapter = StandaloneAdapter(
        backend=build_tiny_backend("sd1"), embeddings_dir=tmp_path / "emb", log_dir=tmp_path / "logs"
    )
    adapter.is_host = True  # build the host-only parts too
    service = TrainerService(adapter)
    return build_tab(service), service


def handler(tab, name: str):
    fns = tab.fns.values() if isinstance(tab.fns, dict) else tab.fns
    for block_fn in fns:
        if getattr(block_fn.fn, "__name__", "") == name:
            return block_fn.fn
    raise AssertionError(f"no handler {name}")


def test_ids_labels_and_polling(built) -> None:
    tab, _ = built
    config = tab.get_config_file()
    props = [c.get("props", {}) for c in config["components"]]
    ids = [p["elem_id"] for p in props if p.get("elem_id")]
    assert ids and all(i.startswith("ti_trainer_") for i in ids), ids
    assert len(ids) == len(set(ids))
    labels = [p["label"] for p in props if p.get("label")]
    assert len(labels) == len(set(labels)), sorted(labels)
    for name in tab_fields():
        assert f"ti_trainer_{name}" in ids
    for needed in ("ti_trainer_loss_plot", "ti_trainer_preview_gallery", "ti_trainer_schedule_plot", "ti_trainer_send",
                   "ti_trainer_status", "ti_trainer_files", "ti_trainer_share_file", "ti_trainer_import_file"):  # fmt: skip
        assert needed in ids


def test_handlers(built, tmp_path: Path) -> None:
    tab, service = built
    image, message = handler(tab, "do_schedule")("0.1:x", 100)
    assert image is None and "ti_trainer_error" in message and "not a whole number" in message
    image, message = handler(tab, "do_schedule")("0.1:10, 0.01", 100)
    assert image is not None and "0.1 for steps 0-9" in message
    assert "ti_trainer_error" in handler(tab, "do_clip_schedule")("norm", "oops", 100)
    assert handler(tab, "do_clip_schedule")("none", "oops", 100) == ""

    message, dropdown, info = handler(tab, "do_create")("cat", "cat", 2, False)
    assert "Created **cat**" in message and dropdown["value"] == "cat" and "cat" in dropdown["choices"]
    assert "2 x 32" in info
    message, *_ = handler(tab, "do_create")("cat", "cat", 2, False)
    assert "already exists" in message

    values = [getattr(service.defaults(), n) for n in tab_fields()]
    message = handler(tab, "do_train")("", "cat", *values)  # no dataset folder given
    assert "ti_trainer_error" in message and "dataset" in message
    message = handler(tab, "do_train")("", None, *values)
    assert "pick an embedding" in message
    assert "no training is running" in handler(tab, "do_interrupt")()

    status, plot, gallery, _, _, seen = handler(tab, "do_poll")(None, "cat")
    assert status == "No training has run yet." and plot is None and gallery == []
    again = handler(tab, "do_poll")(seen, "cat")
    assert again[-1] == seen and again[1] == {"__type__": "update"}

    card, message = handler(tab, "do_share")("cat", "Plain", None)
    assert card and Path(card).is_file() and "Card written" in message
    message, dropdown, _ = handler(tab, "do_import")(card, "cat2", False, "cat")
    assert "Imported **cat2**" in message and "cat2" in dropdown["choices"]
    message, *_ = handler(tab, "do_import")(None, "", False, "cat")
    assert "choose a file" in message


@pytest.mark.skipif(
    not os.environ.get("TI_TRAINER_GRADIO3_PYTHON"),
    reason="set TI_TRAINER_GRADIO3_PYTHON to a python with gradio 3.41",
)
def test_tab_builds_under_gradio_3(tmp_path: Path) -> None:
    # The web UI's pins (gradio 3.41.2, fastapi 0.94, pydantic 1) live in another environment.
    code = f"""
import sys; sys.path.insert(0, {str(ROOT)!r})
import gradio as gr
assert gr.__version__.startswith("3."), gr.__version__
from extension.ui.adapter import StandaloneAdapter
from extension.ui.service import TrainerService
from extension.ui.tab import build_tab
adapter = StandaloneAdapter(embeddings_dir={str(tmp_path / "emb")!r}, log_dir={str(tmp_path / "logs")!r})
adapter.is_host = True
tab = build_tab(TrainerService(adapter))
with gr.Blocks() as demo:
    tab.render()
demo.queue()
print("OK", len(demo.get_config_file()["components"]))
"""
    out = subprocess.run(
        [os.environ["TI_TRAINER_GRADIO3_PYTHON"], "-c", code], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr


def test_option_fields_are_dataclass_fields() -> None:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert {f.name for f in option_fields()} == names - set(HOST_FIELDS)
    assert sys.version_info >= (3, 10)
