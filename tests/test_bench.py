"""The benchmark: the bare path computes what the trainer computes, the model stays untouched,
the command produces its figures, and fast attention gives the same vector gradients as plain
attention. Correctness only: nothing here asserts a speed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from extension.backends.tiny import build_tiny_backend
from extension.benchmark import memory
from extension.benchmark.bare import PRETOKENISED, bare_step, prepare_batch
from extension.benchmark.runner import BenchError, BenchSettings, run_benchmark
from extension.cli import main
from extension.training.config import TrainConfig
from extension.training.create import init_vectors
from extension.training.dataset import DatasetOptions, TrainingDataset
from extension.training.demo_data import make_demo_dataset
from extension.training.loop import TrainCallbacks, accumulate_gradients, draw_micro_batch, train

NAME = "benchcat"
_BACKENDS: dict[str, object] = {}


def tiny(family: str):
    if family not in _BACKENDS:
        _BACKENDS[family] = build_tiny_backend(family)
    return _BACKENDS[family]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("bench") / "imgs", n=4, size=32, seed=5)


def prepared_dataset(backend, data: Path) -> TrainingDataset:
    options = DatasetOptions(data_root=data, width=32, height=32, template="subject_filewords")
    return TrainingDataset.prepare(options, backend, NAME, progress=lambda done, total: None)


def leaf_vectors(backend, n: int = 2) -> dict[str, torch.Tensor]:
    return {k: v.clone().requires_grad_(True) for k, v in init_vectors(backend, "cat", n).items()}


def step_batches(backend, dataset, step: int, batch: int = 2, accumulation: int = 2, seed: int = 0):
    stream = dataset.micro_batches(batch, seed, start=step * accumulation)
    return [draw_micro_batch(dataset, next(stream), backend, seed, step, m) for m in range(accumulation)]


def alphas(backend) -> torch.Tensor:
    return backend.noise_schedule.alphas_cumprod.to(backend.device, torch.float32)


# ---------------------------------------------------------------------------- same loss


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_bare_and_trainer_compute_the_same_loss_and_gradient(family, data_dir):
    backend = tiny(family)
    dataset = prepared_dataset(backend, data_dir)
    batches = step_batches(backend, dataset, step=3)  # fixed prompts, latents, noise and timesteps
    bare_vecs, trainer_vecs = leaf_vectors(backend), leaf_vectors(backend)
    with backend.frozen():
        prepared = [prepare_batch(backend, b, NAME, bare_vecs) for b in batches]
        assert all(p.text_mode == PRETOKENISED for p in prepared)
        bare = bare_step(backend, prepared, NAME, bare_vecs, alphas(backend))
        trainer = accumulate_gradients(backend, NAME, trainer_vecs, batches, len(batches))
    assert trainer is not None
    torch.testing.assert_close(bare, trainer, rtol=1e-6, atol=1e-7)
    assert float(bare) > 0
    for key in bare_vecs:
        assert trainer_vecs[key].grad.abs().sum() > 0
        torch.testing.assert_close(bare_vecs[key].grad, trainer_vecs[key].grad, rtol=1e-5, atol=1e-8)


def test_bare_loss_differs_when_the_batch_differs(data_dir):
    """The comparison above would catch a bare path that ignored its inputs."""
    backend = tiny("sd1")
    dataset = prepared_dataset(backend, data_dir)
    vecs = leaf_vectors(backend)
    losses = []
    with backend.frozen():
        for step in (0, 1):
            prepared = [prepare_batch(backend, b, NAME, vecs) for b in step_batches(backend, dataset, step)]
            losses.append(float(bare_step(backend, prepared, NAME, vecs, alphas(backend))))
    assert losses[0] != pytest.approx(losses[1], rel=1e-4)


def test_trainer_first_step_loss_equals_the_bare_loss(tmp_path, data_dir):
    """The full ``train()`` path reports, for its first step, the bare loss of that step's batch."""
    backend = tiny("sd1")
    dataset = prepared_dataset(backend, data_dir)
    start = init_vectors(backend, "cat", 2)
    from extension.training.create import embedding_from_vectors

    embedding = embedding_from_vectors(NAME, start, backend, step=0)
    config = TrainConfig(
        name=NAME, data=str(data_dir), width=32, height=32, template="subject_filewords", vectors=2,
        log_dir=str(tmp_path / "logs"), embeddings_dir=str(tmp_path / "emb"), max_steps=1, batch_size=2,
        grad_accumulation=2, save_every=0, progress_bar=False, tensorboard=False,
    )  # fmt: skip
    reported: list[float] = []
    train(config, backend, embedding=embedding, dataset=dataset,
          callbacks=TrainCallbacks(on_step=lambda step, loss, lr, eta: reported.append(loss)))  # fmt: skip
    vecs = {k: v.clone().requires_grad_(True) for k, v in start.items()}
    with backend.frozen():
        prepared = [prepare_batch(backend, b, NAME, vecs) for b in step_batches(backend, dataset, 0)]
        bare = float(bare_step(backend, prepared, NAME, vecs, alphas(backend)))
    assert reported == [pytest.approx(bare, rel=1e-6)]


# ---------------------------------------------------------------------------- frozen model


def test_benchmark_leaves_the_model_unchanged_and_without_gradients(tmp_path):
    backend = build_tiny_backend("sd1", seed=1)
    before = [p.detach().clone() for p in backend.parameters()]
    flags = [p.requires_grad for p in backend.parameters()]
    settings = BenchSettings(steps=2, warmup=1, size=32, images=2, batch_size=1, cache_repeats=1)
    result = run_benchmark(settings, backend, log=None, work_dir=tmp_path)
    params = list(backend.parameters())
    assert all(p.grad is None for p in params)
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    assert [p.requires_grad for p in params] == flags
    assert result.checks["model_unchanged"] is True
    assert result.checks["params_with_grad"] == 0
    assert result.checks["requires_grad_restored"] is True
    assert result.checks["first_step_loss_abs_diff"] < 1e-6
    assert len(result.trainer.times) == len(result.bare.times) == 2


def test_grad_check_detects_an_unfrozen_model(data_dir):
    """Without ``frozen()`` the same bare step does give parameters a .grad, so the checks can fail."""
    backend = build_tiny_backend("sd1", seed=2)
    dataset = prepared_dataset(backend, data_dir)
    vecs = leaf_vectors(backend)
    for p in backend.parameters():
        p.requires_grad_(True)
    prepared = [prepare_batch(backend, b, NAME, vecs) for b in step_batches(backend, dataset, 0)]
    bare_step(backend, prepared, NAME, vecs, alphas(backend))
    assert any(p.grad is not None for p in backend.unet.parameters())


# ---------------------------------------------------------------------------- the command


def test_bench_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main([
        "bench", "--steps", "2", "--warmup", "1", "--size", "32", "--images", "2", "--batch-size", "1",
        "--grad-accumulation", "2", "--threads", "1", "--json", str(out),
    ])  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert "trainer overhead" in captured.out and "latent caching" in captured.out
    data = json.loads(out.read_text())
    printed = json.loads(captured.out[captured.out.index("\n{") :])
    assert printed["overhead_ratio"] == data["overhead_ratio"]
    for path in ("trainer", "bare"):
        assert data[path]["steps_timed"] == 2
        assert data[path]["median_step_s"] > 0
        assert data[path]["samples_per_s"] == pytest.approx(2 / data[path]["median_step_s"])
    assert data["overhead_ratio"] == pytest.approx(
        data["trainer"]["median_step_s"] / data["bare"]["median_step_s"]
    )
    assert data["bare"]["text_input"] == PRETOKENISED
    assert data["caching"]["per_image_s"] > 0 and data["caching"]["images"] == 2
    assert data["machine"]["torch_threads"] == 1 and data["machine"]["device"] == "cpu"
    assert data["model"] == {
        "source": "tiny-sd1", "family": "sd1", "dtype": "float32", "precision": "fp32", "size": 32,
        "prediction_type": "epsilon",
    }  # fmt: skip
    assert data["memory"]["rss_peak_bytes"] > 0
    assert data["memory"]["cuda_max_allocated_trainer_bytes"] is None  # no CUDA here
    assert data["checks"]["model_unchanged"] is True and data["checks"]["params_with_grad"] == 0
    assert data["settings"]["batch_size"] == 1 and data["settings"]["grad_accumulation"] == 2


def test_compare_builtin_is_webui_only(capsys):
    assert main(["bench", "--compare-builtin"]) == 2
    assert "only available inside the web UI" in capsys.readouterr().err
    with pytest.raises(BenchError, match="only available inside the web UI"):
        run_benchmark(BenchSettings(compare_builtin=True), backend=object(), log=None)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 0}, "steps must be a whole number >= 1"),
        ({"warmup": 0}, "warmup must be"),
        ({"size": 30}, "size 30 is not a multiple of 8; use e.g. 32"),
        ({"precision": "fp8"}, "precision 'fp8' is unknown"),
        ({"batch_size": True}, "batch_size must be a whole number"),
    ],
)
def test_bad_settings_are_named(changes, message):
    with pytest.raises(BenchError, match=message):
        BenchSettings(**changes).check()


def test_bad_settings_from_the_command_line(capsys):
    assert main(["bench", "--steps", "0"]) == 2
    assert "steps must be a whole number >= 1" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda(capsys):
    assert main(["bench", "--device", "cuda"]) == 2
    assert "no CUDA device is available here; use --device cpu" in capsys.readouterr().err


# ---------------------------------------------------------------------------- memory readings


def test_memory_readings_are_plausible():
    rss = memory.rss_bytes()
    peak = memory.peak_rss_bytes()
    assert peak is not None and peak > 0
    if rss is not None:  # Linux
        assert peak >= rss > 1 << 20
        if memory.reset_peak_rss():
            # the reset sets the peak to the current RSS, which may have grown a little since `peak`
            assert memory.peak_rss_bytes() <= peak + (8 << 20)
    assert memory.cuda_peak_bytes(torch.device("cpu")) is None


# ---------------------------------------------------------------------------- fast attention


def test_sdp_attention_gradients_match_plain(data_dir):
    """Scaled-dot-product attention (UNet ``AttnProcessor2_0``, CLIP "sdpa") and plain math
    attention (``AttnProcessor``, "eager") give the same gradient w.r.t. the injected vectors."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    backend = build_tiny_backend("sd1", seed=3)
    encoder = backend.text_encoders["clip_l"]
    dataset = prepared_dataset(backend, data_dir)
    batches = step_batches(backend, dataset, step=1)

    def vector_grad(unet_processor, clip_attention: str) -> tuple[torch.Tensor, torch.Tensor]:
        backend.unet.set_attn_processor(unet_processor)
        encoder.set_attn_implementation(clip_attention)
        assert {type(p) for p in backend.unet.attn_processors.values()} == {type(unet_processor)}
        assert encoder.config._attn_implementation == clip_attention
        vecs = leaf_vectors(backend, n=3)
        with backend.frozen():
            prepared = [prepare_batch(backend, b, NAME, vecs) for b in batches]
            loss = bare_step(backend, prepared, NAME, vecs, alphas(backend))
        return loss, vecs["clip_l"].grad

    loss_sdp, grad_sdp = vector_grad(AttnProcessor2_0(), "sdpa")
    loss_plain, grad_plain = vector_grad(AttnProcessor(), "eager")
    assert grad_sdp.abs().max() > 0
    torch.testing.assert_close(loss_sdp, loss_plain, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad_sdp, grad_plain, rtol=1e-4, atol=1e-6)
    cosine = torch.nn.functional.cosine_similarity(grad_sdp.flatten(), grad_plain.flatten(), dim=0)
    assert cosine > 0.99999
