"""One rule for every limit, checked before any work: sizes (per side, in total, and the RAM the
latent cache needs), vectors per token, names, numbers a run cannot use, and the folders and files
an option names."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from extension.limits import MAX_VECTORS, name_problem, sanitize_name, vectors_problem
from extension.training import config as config_module
from extension.training.config import MAX_PIXELS, MAX_SIDE, ConfigError, TrainConfig, size_problems
from extension.training.demo_data import make_demo_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("limits") / "imgs", n=3, size=32, seed=1)


def problems_of(config: TrainConfig) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.validate()
    return info.value.problems


def base(tmp_path: Path, data: Path, **changes) -> TrainConfig:
    options = {
        "name": "cat", "data": str(data), "width": 32, "height": 32, "template": "subject",
        "embeddings_dir": str(tmp_path / "emb"), "log_dir": str(tmp_path / "logs"),
    }  # fmt: skip
    return TrainConfig(**{**options, **changes})


def test_the_base_config_is_valid(tmp_path, data):
    assert base(tmp_path, data).validate() == []


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"width": 1_000_000, "height": 1_000_000}, ["width 1000000 is larger than 4096", "height 1000000"]),
        ({"width": 4096, "height": 4096}, ["4096x4096 = 16777216 pixels is more than 4194304"]),
        ({"preview_width": 8192}, ["preview width 8192 is larger than 4096"]),
        ({"width": 0, "height": 0, "preview_width": 4096, "preview_height": 2048}, ["preview size 4096x2048"]),
        ({"repeats": 10**12}, ["repeats 1000000000000 must be at most 10000"]),
        ({"validation_timesteps": 10**9}, ["validation_timesteps", "at most 1000"]),
        ({"preview_steps": 5000}, ["preview_steps 5000 must be at most 1000"]),
        ({"clip_skip": 99}, ["clip_skip 99 must be at most 12"]),
        ({"max_steps": 10**15}, ["max_steps", "at most 10000000"]),
        ({"seed": 2**70}, ["seed 1180591620717411303424 must be between"]),
        ({"weight_decay": math.inf}, ["weight_decay inf must be a finite number"]),
        ({"tag_dropout": math.nan}, ["tag_dropout nan must be between 0 and 1"]),
        ({"preview_cfg_scale": math.nan}, ["preview_cfg_scale nan must be a finite number"]),
        ({"vectors": 10_000}, ["vectors per token must be between 1 and 75"]),
        ({"bucket_step": 10**6}, ["bucket_step 1000000 must be at most 4096"]),
    ],
)
def test_numbers_a_run_cannot_use_are_refused_up_front(tmp_path, data, changes, words):
    problems = problems_of(base(tmp_path, data, **changes))
    text = "\n".join(problems)
    for word in words:
        assert word in text, (word, problems)
    assert not (tmp_path / "emb").exists() and not (tmp_path / "logs").exists()


def test_size_rule_is_one_function_with_the_limits_in_its_message():
    assert size_problems(MAX_SIDE, MAX_PIXELS // MAX_SIDE) == []
    assert size_problems(0, 0) == []
    assert size_problems(2048, 2056)[0].startswith("training size 2048x2056")
    assert "use at most 4096" in size_problems(4104, 8)[0]


def test_latent_cache_memory_is_estimated_against_the_ram(tmp_path, data, monkeypatch):
    # 3 images at 2048x2048 with flips: 3 * 2 (flips) * 2 (mean, std) * 4 channels * 256 * 256 * 4 bytes
    assert config_module.latent_cache_bytes(3, 2048, 2048, flips=True) == 12 * 2**20
    config = base(tmp_path, data, width=2048, height=2048, flip_probability=0.5)
    monkeypatch.setattr(config_module, "physical_memory_bytes", lambda: 10 * 2**20)
    (problem,) = [p for p in problems_of(config) if "RAM" in p]
    assert "needs about 12 MiB of RAM; this machine has 10 MiB" in problem
    assert "lower --width/--height" in problem
    monkeypatch.setattr(config_module, "physical_memory_bytes", lambda: 20 * 2**20)
    assert any("may swap" in w for w in config.validate())


def test_vectors_and_names_follow_one_rule():
    assert vectors_problem(1) is None and vectors_problem(MAX_VECTORS) is None
    for bad in (0, MAX_VECTORS + 1, 10**9, -3, True, 2.5, "4"):
        assert vectors_problem(bad), bad
    for good in ("cat", "my face v2", "café", "a.b-c_d"):
        assert name_problem(good) is None, good
    for bad in ("", "  ", "../x", "a/b", "a\\b", ".hidden", "con", "x\x00y", "name.", "é" * 100, 42, None):
        assert name_problem(bad), bad
    assert sanitize_name("../x") in name_problem("../x")  # the message suggests a safe name


def test_device_problems_name_the_fix(monkeypatch):
    import torch

    assert config_module.device_problem("cpu") is None
    assert "not a torch device" in config_module.device_problem("gpu0")
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    assert "CPU-only build; use --device cpu" in config_module.device_problem("cuda")
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "no CUDA GPU is visible" in config_module.device_problem("cuda:0")


def test_validation_folder_is_checked_like_the_training_folder(tmp_path, data):
    server = tmp_path / "server"
    server.mkdir()
    for name in ("adduser.conf", "passwd", "shadow"):
        (server / name).write_text("secret", encoding="utf-8")
    problems = problems_of(base(tmp_path, data, validation_every=5, validation_data=str(server)))
    assert problems == [f"validation folder {server} has no images (png, jpg, webp); add some or check "
                        "--validation-data (empty = the training set)"]  # fmt: skip
    (server / "broken.png").write_bytes(b"not a png")
    (problem,) = problems_of(base(tmp_path, data, validation_every=5, validation_data=str(server)))
    assert "broken.png" in problem and "adduser.conf" not in problem and "passwd" not in problem
    missing = problems_of(base(tmp_path, data, validation_data=str(tmp_path / "nowhere")))
    assert "validation folder" in missing[0] and "does not exist" in missing[0]


def test_a_big_file_given_as_template_is_refused_before_it_is_read(tmp_path, data):
    big = tmp_path / "model.safetensors"
    with open(big, "wb") as fh:
        fh.truncate(3 * 2**20)  # sparse: 3 MiB that take no disk space
    (problem,) = problems_of(base(tmp_path, data, template=str(big)))
    assert "template file" in problem and "3072 KiB" in problem and "at most 1 MiB" in problem


def test_toml_values_go_through_the_same_rule(tmp_path, data):
    toml = tmp_path / "run.toml"
    toml.write_text(
        f'name = "cat"\n[dataset]\ndata = "{data.as_posix()}"\nwidth = 100000\nheight = 64\n'
        "[validation]\ntimesteps = 100000\n",
        encoding="utf-8",
    )
    text = "\n".join(problems_of(TrainConfig.from_toml(toml)))
    assert "width 100000 is larger than 4096" in text and "validation_timesteps 100000" in text


def test_cli_train_refuses_huge_sizes_and_vectors_before_loading_the_model(tmp_path, data, capsys, monkeypatch):
    from extension import backends
    from extension.cli import main

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded for bad options")

    monkeypatch.setattr(backends, "load_backend", no_model)
    code = main(["train", "--data", str(data), "--name", "cat", "--width", "100000", "--height", "100000",
                 "--vectors", "10000", "--embeddings-dir", str(tmp_path / "emb"), "--log-dir", str(tmp_path / "l")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "larger than 4096" in err and "between 1 and 75" in err
    assert list(tmp_path.iterdir()) == []


def test_bench_uses_the_same_size_and_vectors_rule(capsys):
    from extension.cli import main

    assert main(["bench", "--size", "100000", "--vectors", "500", "--images", "10000000"]) == 2
    err = capsys.readouterr().err
    assert "larger than 4096" in err and "between 1 and 75" in err and "images must be at most 10000" in err
