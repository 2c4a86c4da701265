"""The tab's Blocks: ids and labels, every training option present, the layout's order, and its
handlers at work on the tiny model (messages in the tab's words, the state bugs of issue 13)."""

from __future__ import annotations

import dataclasses
import html
import os
import subprocess
import sys
from pathlib import Path

import pytest

from extension.training.config import TrainConfig
from extension.ui.adapter import StandaloneAdapter
from extension.ui.fields import FIRST_ROWS
from extension.ui.service import HOST_FIELDS, TrainerService, UserError, option_fields
from extension.ui.tab import LABELS, NOT_FIELDS, options_from_values, tab_fields

ROOT = Path(__file__).resolve().parents[1]
RUN_IN_VIEW = ("ti_trainer_train", "ti_trainer_status", "ti_trainer_loss_plot", "ti_trainer_preview_gallery")


def test_every_training_option_is_in_the_tab() -> None:
    shown = tab_fields()
    assert len(shown) == len(set(shown))
    expected = {f.name for f in option_fields()} - set(NOT_FIELDS)
    assert set(shown) == expected
    assert set(LABELS) == set(shown)
    assert not set(shown) & set(HOST_FIELDS)


def test_a_first_training_needs_only_the_first_fields() -> None:
    first = [n for row in FIRST_ROWS for n in row]
    assert first == ["data", "template", "width", "height", "learn_rate", "max_steps", "batch_size", "grad_accumulation"]
    assert tab_fields()[: len(first)] == first


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


@pytest.fixture(scope="module")
def tiny():
    from extension.backends.tiny import build_tiny_backend

    return build_tiny_backend("sd1")


@pytest.fixture
def built(gradio, tiny, tmp_path: Path):
    from extension.ui.tab import build_tab

    adapter = StandaloneAdapter(backend=tiny, embeddings_dir=tmp_path / "emb", log_dir=tmp_path / "logs")
    adapter.is_host = True  # build the host-only parts too
    service = TrainerService(adapter)
    return build_tab(service), service


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from extension.training.demo_data import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("data"), n=4, size=64)


def fns(tab) -> list:
    return list(tab.fns.values() if isinstance(tab.fns, dict) else tab.fns)


def handler(tab, name: str):
    for block_fn in fns(tab):
        if getattr(block_fn.fn, "__name__", "") == name:
            return block_fn.fn
    raise AssertionError(f"no handler {name}")


def poller(tab):
    """The poll's own function (the timer tick needs a request; the memory is what it keys)."""
    from extension.ui.compat import gradio_major

    tick = handler(tab, "tick" if gradio_major(__import__("gradio")) >= 4 else "stream")
    return lambda page="page-1": tick(type("R", (), {"session_hash": page})())


def option_values(service, **changes) -> list:
    defaults = dataclasses.replace(service.defaults(), **changes)
    return [getattr(defaults, n) for n in tab_fields()]


def test_ids_labels_and_the_run_in_view(built) -> None:
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
    for needed in (*RUN_IN_VIEW, "ti_trainer_schedule_plot", "ti_trainer_send", "ti_trainer_files",
                   "ti_trainer_share_file", "ti_trainer_share_card", "ti_trainer_share_name", "ti_trainer_import_file",
                   "ti_trainer_snapshot_table", "ti_trainer_snapshot_use"):  # fmt: skip
        assert needed in ids
    # the run in view: buttons, status, plot and previews come first in the results column
    results = ids[ids.index("ti_trainer_results") :]
    order = [results.index(i) for i in (*RUN_IN_VIEW, "ti_trainer_files")]
    assert order == sorted(order)
    assert results.index("ti_trainer_interrupt") < results.index("ti_trainer_status")
    plots = [c for c in config["components"] if c.get("props", {}).get("elem_id") in ("ti_trainer_loss_plot", "ti_trainer_schedule_plot")]
    assert [c["type"] for c in plots] == ["plot", "plot"]  # native plots, not pictures


def test_nothing_reads_a_stale_value_and_no_state_is_an_input(built) -> None:
    """gradio 3 repeats an ``every`` event with the inputs of the page load, and gradio 4's client
    warns about inputs it does not list (gr.State): the poll takes no inputs, and no event reads a
    State."""
    tab, _ = built
    config = tab.get_config_file()
    kinds = {c["id"]: c["type"] for c in config["components"]}
    polls = []
    for dep in config["dependencies"]:
        assert not [i for i in dep["inputs"] if kinds[i] == "state"], dep
        if dep.get("every") or any(t[1] == "tick" for t in dep.get("targets", []) if isinstance(t, (list, tuple))):
            polls.append(dep)
    assert len(polls) == 1 and polls[0]["inputs"] == [], polls


def test_handlers(built) -> None:
    tab, service = built
    figure, message = handler(tab, "schedule")("0.1:x", 100)
    assert figure is None and "ti_trainer_error" in message and "not a whole number" in message
    figure, message = handler(tab, "schedule")("0.1:10, 0.01", 100)
    assert figure is not None and "0.1 for steps 0-9" in message
    assert "ti_trainer_error" in handler(tab, "clip_schedule")("norm", "oops", 100)
    assert handler(tab, "clip_schedule")("none", "oops", 100) == ""

    message, folded, picker, info, share, *_ = handler(tab, "create")("cat", "cat", 2, False)
    assert "Created <b>cat</b>" in message and picker["value"] == "cat" and "cat" in picker["choices"]
    assert folded["open"] is False and "2 x 32" in info and share["value"] == "cat"
    message, *_ = handler(tab, "create")("cat", "cat", 2, False)
    assert 'already exists' in message and 'tick "Overwrite an existing embedding"' in html.unescape(message)

    values_ = option_values(service)
    message, _ = handler(tab, "train")("", "cat", *values_)  # no dataset folder given
    assert "ti_trainer_error" in message and 'fill in "Dataset folder"' in html.unescape(message)
    assert "--data" not in message
    message, _ = handler(tab, "train")("", None, *values_)
    assert "pick an embedding" in message
    message, status = handler(tab, "interrupt")()
    assert "Nothing to interrupt: no training is running." in message and "data-state='idle'" in status

    card, download, message = handler(tab, "share")("cat", "Plain", None)
    assert card == download and Path(card).is_file() and "Card of <b>cat</b> written" in message
    message, picker, *_ = handler(tab, "import_file")(card, "cat2", False)
    assert "Imported <b>cat2</b>" in message and "cat2" in picker["choices"] and picker["value"] == "cat2"
    message, *_ = handler(tab, "import_file")(card, "cat2", False)
    assert 'tick "Replace an embedding of that name"' in html.unescape(message)
    message, *_ = handler(tab, "import_file")(None, "", False)
    assert "choose a file" in message


def test_poll_sends_only_what_changed_and_follows_the_model(built) -> None:
    tab, service = built
    poll = poller(tab)
    status, model, plot, gallery, files, marker = poll()
    assert "No files written yet." in files
    assert "No training has run yet." in status and "data-state='idle'" in status
    assert "tiny-sd1" in model and plot is None and gallery == []
    assert marker == {"__type__": "update"}  # the job marker only moves when a job ends later
    again = poll()
    assert all(v == {"__type__": "update"} for v in again)  # nothing changed for this page
    assert poll("page-2")[0] == status  # another page gets everything
    service.adapter.model = "other-checkpoint"  # the host switched checkpoints
    changed = poll()
    assert "other-checkpoint" in changed[1] and changed[0] == {"__type__": "update"}


@pytest.mark.slow
def test_the_run_in_view_and_the_state_bugs(built, data) -> None:
    tab, service = built
    for name in ("cat", "dog"):
        service.create(name, name, 1)
    live = poller(tab)
    live("open-page")  # a page open while the job runs
    train = handler(tab, "train")
    opts = option_values(
        service, data=str(data), width=64, height=64, max_steps=4, preview_every=2, preview_steps=2, save_every=2,
        validation_every=2,
    )  # fmt: skip
    message, _ = train("", "dog", *opts)
    assert "Training <b>dog</b> started." in message
    st = service.runner.wait(300)
    assert st.state == "finished", st.summary()

    # the open page's marker moves, so its picked embedding is described again (by "picked")
    assert live("open-page")[-1] == f"{st.job_id}:finished"

    # a page (re)loaded now picks the job's embedding, whatever the picker showed at build time
    picker, create, info, share, run, table, gallery, pick = handler(tab, "on_load")()
    assert picker["value"] == "dog" and share["value"] == "dog" and "<b>dog</b>: step 4" in info
    assert create["open"] is False
    assert run["value"] and "★ lowest validation loss" in table and len(gallery) == 2 and "step" in pick["value"]

    # the marker's change re-reads the picker: another embedding picked meanwhile stays described
    info, *_ = handler(tab, "picked")("cat")
    assert "<b>cat</b>: not trained yet" in info

    # the poll shows the run: status said once, plot, previews newest first, files under the run folder
    status, _, plot, gallery, files, _ = poller(tab)("page-3")
    assert "dog: finished</div>" in status and "(completed)" not in status and "data-step='4'" in status
    assert type(plot).__name__ == "Figure"
    assert [caption for _, caption in gallery] == ["step 4", "step 2"]
    assert "Run folder:" in files and "images/dog-2.png" in files

    # Resume with nothing left to do says so and keeps the finished run in view
    before = service.runner.status()
    message, status = handler(tab, "resume")("", "dog", *opts)
    assert 'already trained for 4 steps (Max steps 4); raise "Max steps" to train on' in html.unescape(message)
    after = service.runner.status()
    assert after.job_id == before.job_id and after.previews == before.previews and after.files == before.files

    # Share as PNG uses its own picker and shows the card; "Last preview" is this embedding's
    card, _, message = handler(tab, "share")("dog", "Last preview", None)
    assert "no preview" not in message
    from extension.embedding import load_embedding

    assert load_embedding(card).same_vectors(load_embedding(service.find("dog").path))
    _, _, message = handler(tab, "share")("cat", "Last preview", None)
    assert "no preview of this embedding yet" in message

    # Use this snapshot: the step-2 snapshot becomes dog, the info line says so
    from extension.ui.compat import import_gradio

    message, info, table, _, picked = handler(tab, "use_snapshot")("dog", run["value"], "step 2")
    assert "<b>dog</b> is now the snapshot of step 2" in message and "dog.safetensors.bak" in message
    assert "<b>dog</b>: step 2" in info and "the embedding's step now" in table
    assert picked["value"].startswith("step 2")  # the picker stays on the snapshot used
    evt = import_gradio().SelectData(None, {"index": 0, "value": None, "selected": True})
    assert handler(tab, "gallery_pick")("dog", run["value"], evt)["value"].startswith("step 2")


@pytest.mark.skipif(
    not os.environ.get("TI_TRAINER_GRADIO3_PYTHON"),
    reason="set TI_TRAINER_GRADIO3_PYTHON to a python with gradio 3.41",
)
def test_tab_builds_and_polls_under_gradio_3(tmp_path: Path) -> None:
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
config = demo.get_config_file()
kinds = {{c["id"]: c["type"] for c in config["components"]}}
polls = [d for d in config["dependencies"] if d.get("every")]
assert len(polls) == 1 and polls[0]["inputs"] == [], polls
assert not [d for d in config["dependencies"] if any(kinds[i] == "state" for i in d["inputs"])]
stream = next(f.fn for f in demo.fns if getattr(f.fn, "__name__", "") == "continuous_fn")
first = next(stream())
assert "No training has run yet." in first[0] and "tiny-sd1" in first[1], first
fig = __import__("extension.ui.tab", fromlist=["schedule_preview"]).schedule_preview("0.1:5, 0.01", 10)[0]
plot = next(c for c in demo.blocks.values() if getattr(c, "elem_id", None) == "ti_trainer_schedule_plot")
assert plot.postprocess(fig)["type"] == "matplotlib"
print("OK", len(config["components"]))
"""
    out = subprocess.run(
        [os.environ["TI_TRAINER_GRADIO3_PYTHON"], "-c", code], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr


def test_option_fields_are_dataclass_fields() -> None:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert {f.name for f in option_fields()} == names - set(HOST_FIELDS)
    assert sys.version_info >= (3, 10)


def test_option_fields_stay_out_of_the_hosts_ui_config():
    """The host's ui-config.json must not freeze host-derived defaults (a stale template folder
    refused every run in Forge): every option field opts out of it."""
    import gradio as gr

    from extension.ui.fields import option_component

    with gr.Blocks():
        for name, default in (("template_dir", "/x/textual_inversion_templates"), ("clip_skip", 2), ("emphasis", "Original"),
                              ("tag_dropout", 0.1), ("shuffle_tags", True), ("template", "subject")):  # fmt: skip
            assert option_component(gr, name, default).do_not_save_to_config is True
