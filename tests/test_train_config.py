"""TrainConfig: TOML loading, validation messages, and bad input stopping before any file is written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from extension.backends.tiny import build_tiny_backend
from extension.embedding import Embedding, save_embedding
from extension.training.config import ConfigError, TrainConfig, effective_batch_size
from extension.training.demo_data import make_demo_dataset
from extension.training.loop import train

_BACKENDS: dict[str, object] = {}


def tiny(family: str):
    if family not in _BACKENDS:
        _BACKENDS[family] = build_tiny_backend(family)
    return _BACKENDS[family]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("cfgdata") / "imgs", n=3, size=32, seed=1)


def good(tmp_path: Path, data_root: Path, **changes) -> TrainConfig:
    values = dict(
        name="tst", data=str(data_root), width=32, height=32, template="subject", max_steps=2, batch_size=1,
        log_dir=str(tmp_path / "logs"), embeddings_dir=str(tmp_path / "emb"), progress_bar=False,
        tensorboard=False,
    )  # fmt: skip
    values.update(changes)
    return TrainConfig(**values)


def tree(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


# ---------------------------------------------------------------------------- TOML


def test_from_toml_reads_flat_keys_and_tables(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        'name = "my-cat"\nlearn_rate = "0.005:100, 1e-3:1000, 1e-5"\nmax_steps = 2000\nbatch_size = 2\n'
        'grad-accumulation = 4\ngradient_checkpointing = true\n'
        '[dataset]\ndata = "photos"\nwidth = 768\nshuffle_tags = true\ntag_dropout = 0.1\n'
        '[preview]\nevery = 50\nprompt = "a photo of my-cat"\ncfg_scale = 5\n'
        '[validation]\nevery = 25\nimages = 2\n',
        encoding="utf-8",
    )
    cfg = TrainConfig.from_toml(path)
    assert (cfg.name, cfg.max_steps, cfg.batch_size, cfg.grad_accumulation) == ("my-cat", 2000, 2, 4)
    assert cfg.learn_rate == "0.005:100, 1e-3:1000, 1e-5" and cfg.gradient_checkpointing
    photos = str((tmp_path / "photos").resolve())  # relative to the TOML file
    assert (cfg.data, cfg.width, cfg.height, cfg.shuffle_tags, cfg.tag_dropout) == (photos, 768, 0, True, 0.1)
    assert (cfg.preview_every, cfg.preview_prompt, cfg.preview_cfg_scale) == (50, "a photo of my-cat", 5.0)
    assert (cfg.validation_every, cfg.validation_images) == (25, 2)
    # flags given later override the file
    assert TrainConfig.from_dict({"max_steps": 10}, base=cfg).max_steps == 10


def test_from_toml_numeric_learn_rate_is_a_one_stage_schedule(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("learn_rate = 0.005\n", encoding="utf-8")
    assert TrainConfig.from_toml(path).learn_rate == "0.005"


def test_numeric_learn_rate_from_python_is_a_one_stage_schedule(tmp_path):
    # was refused as "the schedule is empty" when given as a number to the constructor
    config = TrainConfig(name="x", data=str(tmp_path), learn_rate=0.005, clip_grad_value=1)
    assert (config.learn_rate, config.clip_grad_value) == ("0.005", "1")
    with pytest.raises(ConfigError) as caught:  # only for the empty data folder
        config.validate()
    assert len(caught.value.problems) == 1 and "has no images" in caught.value.problems[0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("max_step = 5\n", "unknown option 'max_step'; did you mean 'max_steps'?"),
        ('max_steps = "many"\n', "option 'max_steps' must be an integer"),
        ('overwrite = "yes"\n', "option 'overwrite' must be true or false"),
        ("[optimizer]\nlr = 1\n", "unknown table [optimizer]"),
        ("name = \n", "is not valid TOML"),
    ],
)
def test_from_toml_rejects_bad_files(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_toml(path)
    assert message in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        TrainConfig.from_toml(tmp_path / "nope.toml")


def test_config_hash_ignores_step_count_and_outputs_but_not_the_seed():
    a = TrainConfig(name="x", data="d")
    assert a.config_hash() == TrainConfig(name="x", data="d", max_steps=5, save_every=3, log_dir="o").config_hash()
    assert a.config_hash() != TrainConfig(name="x", data="d", seed=1).config_hash()


def test_resolved_precision():
    cfg = TrainConfig()
    assert cfg.resolved_precision("cpu") == "fp32"
    assert cfg.resolved_precision("cuda", bf16_supported=True) == "bf16"
    assert cfg.resolved_precision("cuda", bf16_supported=False) == "fp16"
    assert TrainConfig(precision="fp16").resolved_precision("cuda", True) == "fp16"


# ---------------------------------------------------------------------------- validation


def test_validate_collects_every_problem_with_its_fix(tmp_path):
    cfg = TrainConfig(
        name="bad/name", data=str(tmp_path / "missing"), width=500, height=64, learn_rate="0.1:abc",
        precision="fp8", clip_grad="sometimes", max_steps=0,
    )  # fmt: skip
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    text = str(info.value)
    problems = info.value.problems
    assert len(problems) >= 6
    assert "'bad/name' is not a safe file name" in text and "'badname'" in text
    assert "does not exist or is not a folder; check --data" in text
    assert "width 500 is not a positive multiple of 8; use e.g. 496" in text
    assert "learn_rate schedule '0.1:abc' is invalid" in text and "write it like" in text
    assert "precision 'fp8' is unknown" in text
    assert "clip_grad 'sometimes' is unknown" in text
    assert "max_steps 0 must be at least 1" in text
    assert not (tmp_path / "missing").exists()


def test_batch_larger_than_dataset_is_an_error_or_an_explicit_clamp(tmp_path, data_dir):
    with pytest.raises(ConfigError, match=r"batch size 5 is larger than the dataset \(3 examples per epoch\)"):
        good(tmp_path, data_dir, batch_size=5).validate()
    warnings = good(tmp_path, data_dir, batch_size=5, clamp_batch=True).validate()
    assert warnings == ["batch size 5 is larger than the dataset (3 examples per epoch); clamped to 3"]
    assert good(tmp_path, data_dir, batch_size=5, repeats=2).validate() == []  # 6 examples per epoch
    assert effective_batch_size(good(tmp_path, data_dir, batch_size=5, clamp_batch=True), 3) == (
        3,
        "batch size 5 is larger than the dataset (3 examples per epoch); clamped to 3",
    )


def test_clamped_batch_trains_with_a_warning(tmp_path, data_dir):
    messages: list[str] = []
    from extension.training.loop import TrainCallbacks

    result = train(
        good(tmp_path, data_dir, batch_size=8, clamp_batch=True, max_steps=1),
        tiny("sd1"),
        callbacks=TrainCallbacks(on_message=messages.append),
    )
    assert result.steps_done == 1
    assert any("clamped to 3" in m for m in messages)


def _bad_template(tmp_path: Path) -> str:
    path = tmp_path / "outside" / "tpl.txt"
    path.parent.mkdir(parents=True)
    path.write_text("a photo of a cat\n", encoding="utf-8")
    return str(path)


def _unreadable_folder(tmp_path: Path) -> str:
    folder = tmp_path / "outside" / "broken"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(b"not a png at all")
    return str(folder)


def _empty_folder(tmp_path: Path) -> str:
    folder = tmp_path / "outside" / "empty"
    folder.mkdir(parents=True)
    return str(folder)


def _sd1_embedding_file(tmp_path: Path) -> str:
    path = tmp_path / "outside" / "sd1.safetensors"
    path.parent.mkdir(parents=True)
    save_embedding(Embedding("sd1", torch.zeros(2, 32)), path)
    return str(path)


BAD_INPUTS = {
    "missing dataset": (lambda t, d: {"data": str(t / "nowhere")}, "does not exist", "sd1"),
    "empty dataset": (lambda t, d: {"data": _empty_folder(t)}, "has no images", "sd1"),
    "no readable images": (lambda t, d: {"data": _unreadable_folder(t)}, "No readable images", "sd1"),
    "unknown template": (lambda t, d: {"template": "portrait-of-nobody"}, "Unknown prompt template", "sd1"),
    "template without [name]": (lambda t, d: {"template": _bad_template(t)}, "[name]", "sd1"),
    "invalid schedule": (lambda t, d: {"learn_rate": "0.01:20, 0.02:10"}, "steps must increase", "sd1"),
    "unsafe name": (lambda t, d: {"name": "../escape"}, "is not a safe file name", "sd1"),
    "width not multiple of 8": (lambda t, d: {"width": 36}, "width 36 is not a positive multiple of 8", "sd1"),
    "height not multiple of 8": (lambda t, d: {"height": 20}, "height 20 is not a positive multiple of 8", "sd1"),
    "batch larger than dataset": (lambda t, d: {"batch_size": 4}, "--clamp-batch", "sd1"),
    "fp16 on the cpu": (lambda t, d: {"precision": "fp16"}, "fp16 needs a CUDA device", "sd1"),
    "embedding width does not fit": (
        lambda t, d: {"embedding_file": _sd1_embedding_file(t)},
        "has vectors of width 32 but the sd2 model's text encoder takes 48",
        "sd2",
    ),
    "nothing to resume": (lambda t, d: {"resume": True}, "nothing to resume", "sd1"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_stops_before_any_work_and_writes_nothing(case, tmp_path, data_dir):
    make, message, family = BAD_INPUTS[case]
    cfg = good(tmp_path, data_dir, **make(tmp_path, data_dir))
    before, data_before = tree(tmp_path), tree(data_dir)
    with pytest.raises(ValueError) as info:
        train(cfg, tiny(family))
    assert message in str(info.value)
    assert tree(tmp_path) == before and tree(data_dir) == data_before
    assert not (tmp_path / "logs").exists() and not (tmp_path / "emb").exists()


def test_sdxl_pair_embedding_on_an_sd1_model_is_refused(tmp_path, data_dir):
    pair = {"clip_l": torch.zeros(1, 768), "clip_g": torch.zeros(1, 1280)}
    with pytest.raises(ConfigError, match="is an SDXL pair"):
        train(good(tmp_path, data_dir), tiny("sd1"), embedding=Embedding("tst", pair))
    assert not (tmp_path / "logs").exists()


def test_clip_schedule_may_contain_zero_but_learn_rate_may_not(tmp_path, data_dir):
    assert good(tmp_path, data_dir, clip_grad="value", clip_grad_value="0.1:1, 0").validate() == []
    with pytest.raises(ConfigError, match="must be positive"):
        good(tmp_path, data_dir, learn_rate="0.1:1, 0").validate()
    # the clip schedule is only read when clipping is on
    assert good(tmp_path, data_dir, clip_grad="none", clip_grad_value="nonsense").validate() == []
    with pytest.raises(ConfigError, match="clip_grad_value schedule 'nonsense' is invalid"):
        good(tmp_path, data_dir, clip_grad="norm", clip_grad_value="nonsense").validate()


def test_toml_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    toml = folder / "run.toml"
    toml.write_text(
        'name = "cat"\nmodel = "tiny-sd2"\ndata = "images"\nlog_dir = "/abs/logs"\n'
        '[validation]\ndata = "held-out"\n',
        encoding="utf-8",
    )
    config = TrainConfig.from_toml(toml)
    assert config.data == str((folder / "images").resolve())
    assert config.validation_data == str((folder / "held-out").resolve())
    assert config.log_dir == "/abs/logs" and config.model == "tiny-sd2"
    assert config.embeddings_dir == TrainConfig().embeddings_dir  # not given: the default stays


def test_config_imports_without_a_toml_library_and_says_what_to_install(tmp_path):
    """The web UI runs Python 3.10, where TOML needs ``tomli``; if install.py could not install it
    (offline, --skip-install) the tab must still load: only reading a TOML file may fail."""
    import subprocess
    import sys

    toml = tmp_path / "run.toml"
    toml.write_text('name = "x"\n', encoding="utf-8")
    script = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name in ("tomllib", "tomli"):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
from extension.training.config import ConfigError, TrainConfig
TrainConfig(name="ok").to_dict()
try:
    TrainConfig.from_toml({str(toml)!r})
except ConfigError as exc:
    print("ERR", exc)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(__file__).parent.parent, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "ERR" in out.stdout and "tomli" in out.stdout


# -- per-family size defaults ---------------------------------------------------------------------


class _Model:
    """The two attributes ``with_model_size`` reads (family and native size) of a loaded model."""

    def __init__(self, family: str, default_size: int):
        self.family, self.default_size = family, default_size


@pytest.mark.parametrize(
    ("family", "native", "asked", "expected", "warns"),
    [
        ("sdxl", 1024, (0, 0), (1024, 1024), False),
        ("sdxl", 1024, (512, 512), (512, 512), True),
        ("sdxl", 1024, (768, 1024), (768, 1024), False),
        ("sd2", 768, (0, 0), (768, 768), False),
        ("sd1", 512, (0, 640), (512, 640), False),
        ("sdxl", 64, (0, 0), (64, 64), False),  # a tiny test model is not warned about
    ],
)
def test_size_zero_means_the_models_native_size(family, native, asked, expected, warns):
    cfg = TrainConfig(name="x", width=asked[0], height=asked[1])
    resolved, warnings = cfg.with_model_size(_Model(family, native))
    assert (resolved.width, resolved.height) == expected
    assert bool(warnings) == warns
    if warns:
        assert "below 768" in warnings[0] and "1024" in warnings[0]


def test_default_size_is_the_models_in_a_real_run(tmp_path):
    from extension.backends.tiny import build_tiny_backend
    from extension.training.demo_data import make_demo_dataset
    from extension.training.loop import TrainCallbacks, train

    data = make_demo_dataset(tmp_path / "imgs", n=2, size=80, seed=1)
    backend = build_tiny_backend("sdxl")
    seen = []
    original = backend.time_ids

    def spy(sizes, batch):
        seen.extend(sizes or [])
        return original(sizes, batch)

    backend.time_ids = spy
    cfg = TrainConfig(
        name="sz", data=str(data), template="subject", max_steps=1, log_dir=str(tmp_path / "l"),
        embeddings_dir=str(tmp_path / "e"), save_every=0, progress_bar=False, tensorboard=False,
    )  # fmt: skip
    assert (cfg.width, cfg.height) == (0, 0)
    result = train(cfg, backend, callbacks=TrainCallbacks())
    assert result.steps_done == 1
    assert seen and all(s.target_size == (backend.default_size,) * 2 for s in seen)


@pytest.mark.parametrize("name", ["tiny-sd1", "tiny-sdxl@3", "random-sd15", "random-sdxl@7", "tiny-shapes"])
def test_toml_keeps_built_in_model_names(tmp_path, name):
    path = tmp_path / "run.toml"
    path.write_text(f'model = "{name}"\nname = "x"\n', encoding="utf-8")
    assert TrainConfig.from_toml(path).model == name


def test_toml_model_paths_are_relative_to_the_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('model = "models/random-sd15.safetensors"\n', encoding="utf-8")
    assert TrainConfig.from_toml(path).model == str(tmp_path / "models" / "random-sd15.safetensors")
