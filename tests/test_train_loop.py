"""The training loop on tiny SD1, SD2 (v-prediction) and SDXL models."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image

from extension.backends.tiny import build_tiny_backend
from extension.embedding import load_embedding
from extension.png import extract_from_image
from extension.schedule import LearnRateSchedule
from extension.training.config import ConfigError, TrainConfig
from extension.training.create import init_vectors, vectors_for_backend
from extension.training.dataset import TrainingDataset
from extension.training.demo_data import make_demo_dataset
from extension.training.loop import TrainCallbacks, accumulate_gradients, draw_micro_batch, train
from extension.training.loss import MicroBatch
from extension.training.outputs import resume_state_path

_BACKENDS: dict[str, object] = {}


def tiny(family: str):
    """One shared tiny backend per family (training never changes the model; tests check that)."""
    if family not in _BACKENDS:
        _BACKENDS[family] = build_tiny_backend(family)
    return _BACKENDS[family]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("data") / "imgs", n=4, size=32, seed=3)


def config(tmp_path: Path, data: Path, **changes) -> TrainConfig:
    base = dict(
        name="tst",
        data=str(data),
        width=32,
        height=32,
        template="subject",
        init_text="cat",
        vectors=2,
        log_dir=str(tmp_path / "logs"),
        embeddings_dir=str(tmp_path / "emb"),
        learn_rate="0.01",
        max_steps=4,
        batch_size=2,
        save_every=0,
        progress_bar=False,
        tensorboard=False,
    )
    base.update(changes)
    return TrainConfig(**base)


def vectors_of(path: Path, backend) -> dict[str, torch.Tensor]:
    return vectors_for_backend(load_embedding(path), backend)


# ---------------------------------------------------------------------------- learning


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_loss_falls_and_only_the_vectors_change(family, tmp_path, data_dir):
    backend = tiny(family)
    before = {n: p.detach().clone() for n, p in enumerate(backend.parameters())}
    cfg = config(
        tmp_path, data_dir, max_steps=40, learn_rate="0.01", batch_size=2, grad_accumulation=2,
        validation_every=40, validation_images=4, validation_timesteps=8,
    )  # fmt: skip
    result = train(cfg, backend)

    assert result.reason == "completed" and result.steps_done == 40
    (s0, v0), (s1, v1) = result.validation[0], result.validation[-1]
    assert (s0, s1) == (0, 40)
    assert v1 < v0 - 1e-4, f"validation loss did not fall: {v0} -> {v1}"

    after = list(backend.parameters())
    assert all(torch.equal(before[n], p) for n, p in enumerate(after)), "a model weight changed"
    assert all(p.grad is None for p in after), "a model weight received a gradient"

    # the saved embedding reloads and reproduces the trained conditioning
    reloaded = vectors_of(result.embedding_path, backend)
    trained = vectors_for_backend(result.embedding, backend)
    initial = init_vectors(backend, "cat", 2)
    assert load_embedding(result.embedding_path).step == 40
    prompts = ["a photo of tst", "tst, (tst:1.2) on a table"]
    with torch.no_grad():
        c_reloaded = backend.encode_text(prompts, {"tst": reloaded})
        c_trained = backend.encode_text(prompts, {"tst": trained})
        c_initial = backend.encode_text(prompts, {"tst": initial})
    assert torch.equal(c_reloaded.crossattn, c_trained.crossattn)
    assert not torch.allclose(c_reloaded.crossattn, c_initial.crossattn)
    if family == "sdxl":
        assert torch.equal(c_reloaded.pooled, c_trained.pooled)


def test_vectors_are_float32_leaves_and_requires_grad_is_restored(tmp_path, data_dir):
    backend = tiny("sd1")
    flags = [p.requires_grad for p in backend.parameters()]
    seen = []

    orig = backend.encode_text

    def spy(prompts, embeddings, sizes=None):
        for vs in embeddings.values():
            for v in vs.values():
                seen.append((v.dtype, v.is_leaf, v.requires_grad))
        seen.append(("model grad flags", any(p.requires_grad for p in backend.parameters())))
        return orig(prompts, embeddings, sizes)

    backend.encode_text = spy
    try:
        train(config(tmp_path, data_dir, max_steps=1), backend)
    finally:
        del backend.encode_text
    assert (torch.float32, True, True) in seen
    assert ("model grad flags", False) in seen
    assert [p.requires_grad for p in backend.parameters()] == flags


# ---------------------------------------------------------------------------- mechanics


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_k_micro_batches_of_b_give_the_gradient_of_one_batch_of_kb(family, data_dir):
    backend = tiny(family)
    cfg = config(Path("."), data_dir)
    ds = TrainingDataset.prepare(cfg.dataset_options(), backend, "tst", progress=lambda *_: None)
    full = draw_micro_batch(ds, [0, 1, 2, 3], backend, seed=5, step=0, micro=0)
    full.timesteps = torch.tensor([10, 300, 600, 990])  # fixed, spread

    def part(a: int, b: int) -> MicroBatch:
        sizes = full.sizes[a:b] if full.sizes is not None else None
        return MicroBatch(full.prompts[a:b], full.latents[a:b], full.noise[a:b], full.timesteps[a:b], None, sizes)

    def grads(batches: list[MicroBatch], k: int) -> tuple[dict[str, torch.Tensor], float]:
        torch.manual_seed(0)
        vectors = {key: torch.randn(2, w).mul_(0.02).requires_grad_() for key, w in backend.encoder_widths.items()}
        with backend.frozen():
            loss = accumulate_gradients(backend, "tst", vectors, batches, k)
        return {key: v.grad.clone() for key, v in vectors.items()}, float(loss)

    one, loss_one = grads([full], 1)
    two, loss_two = grads([part(0, 2), part(2, 4)], 2)
    four, loss_four = grads([part(i, i + 1) for i in range(4)], 4)
    for key in one:
        assert one[key].abs().max() > 0
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(four[key], one[key], rtol=1e-4, atol=1e-7)
    assert loss_two == pytest.approx(loss_one, rel=1e-5) and loss_four == pytest.approx(loss_one, rel=1e-5)


def test_learn_rate_applied_at_each_step_follows_the_schedule(tmp_path, data_dir):
    text = "0.02:3, 0.01:5, 0.005"
    lrs: list[tuple[int, float]] = []
    result = train(
        config(tmp_path, data_dir, learn_rate=text, max_steps=7),
        tiny("sd1"),
        callbacks=TrainCallbacks(on_step=lambda step, loss, lr, eta: lrs.append((step, lr))),
    )
    schedule = LearnRateSchedule.parse(text, 7)
    assert lrs == [(s + 1, schedule.rate_at(s)) for s in range(7)]
    assert [lr for _, lr in lrs] == [0.02, 0.02, 0.02, 0.01, 0.01, 0.005, 0.005]
    assert result.reason == "completed"
    rows = list(csv.DictReader(open(result.run_dir / "loss.csv")))
    assert [float(r["learn_rate"]) for r in rows] == [lr for _, lr in lrs]


def test_schedule_ending_before_max_steps_stops_and_reports(tmp_path, data_dir):
    result = train(config(tmp_path, data_dir, learn_rate="0.01:2, 0.005:3", max_steps=6), tiny("sd1"))
    assert result.reason == "schedule_ended" and result.steps_done == 3
    assert "schedule ended" in result.message
    assert load_embedding(result.embedding_path).step == 3


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"save_format": "pt", "grad_accumulation": 2, "clip_grad": "norm", "clip_grad_value": "0.5:2, 0.05"},
    ],
    ids=["safetensors", "pt-accumulation-clipping"],
)
def test_resumed_run_equals_straight_run(changes, tmp_path, data_dir):
    backend = tiny("sd1")
    lr = "0.02:2, 0.01:4, 0.005"
    straight = train(config(tmp_path / "a", data_dir, learn_rate=lr, max_steps=6, **changes), backend)
    first = train(config(tmp_path / "b", data_dir, learn_rate=lr, max_steps=3, **changes), backend)
    assert first.steps_done == 3 and resume_state_path(first.embedding_path).is_file()
    if changes.get("save_format") == "pt":
        assert Path(str(first.embedding_path) + ".optim").is_file()  # the web UI's side file too
    second = train(config(tmp_path / "b", data_dir, learn_rate=lr, max_steps=6, resume=True, **changes), backend)
    assert second.steps_done == 6 and second.embedding_path == first.embedding_path
    a, b = vectors_of(straight.embedding_path, backend), vectors_of(second.embedding_path, backend)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6)
    assert load_embedding(second.embedding_path).step == 6
    rows = list(csv.DictReader(open(second.run_dir / "loss.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    straight_rows = list(csv.DictReader(open(straight.run_dir / "loss.csv")))
    assert [r["loss"] for r in rows] == [r["loss"] for r in straight_rows]


def test_resume_without_matching_state_warns_and_still_continues(tmp_path, data_dir):
    backend = tiny("sd1")
    first = train(config(tmp_path, data_dir, max_steps=2), backend)
    resume_state_path(first.embedding_path).unlink()
    messages: list[str] = []
    second = train(
        config(tmp_path, data_dir, max_steps=3, resume=True),
        backend,
        callbacks=TrainCallbacks(on_message=messages.append),
    )
    assert second.steps_done == 3
    assert any("AdamW starts fresh" in m for m in messages)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_interrupt_flag_saves_and_resume_matches_straight_run(family, tmp_path, data_dir):
    backend = tiny(family)
    straight = train(config(tmp_path / "a", data_dir, max_steps=4), backend)
    done: list[int] = []
    stopped = train(
        config(tmp_path / "b", data_dir, max_steps=4),
        backend,
        callbacks=TrainCallbacks(on_step=lambda step, *_: done.append(step)),
        should_stop=lambda: len(done) >= 2,
    )
    assert stopped.reason == "interrupted" and stopped.steps_done == 2
    assert load_embedding(stopped.embedding_path).step == 2
    assert resume_state_path(stopped.embedding_path).is_file()
    assert "--resume" in stopped.message
    resumed = train(config(tmp_path / "b", data_dir, max_steps=4, resume=True), backend)
    a, b = vectors_of(straight.embedding_path, backend), vectors_of(resumed.embedding_path, backend)
    assert set(a) == set(backend.encoder_widths)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6)


def test_ctrl_c_saves_the_current_state(tmp_path, data_dir):
    def on_step(step, *_):
        if step == 3:
            raise KeyboardInterrupt

    result = train(config(tmp_path, data_dir, max_steps=6), tiny("sd1"), callbacks=TrainCallbacks(on_step=on_step))
    assert result.reason == "interrupted" and result.steps_done == 3
    assert load_embedding(result.embedding_path).step == 3
    assert resume_state_path(result.embedding_path).is_file()


class NaNOnce:
    """The real tiny backend, except that one denoiser call returns NaN."""

    def __init__(self, inner, bad_call: int):
        self._inner, self._bad, self.calls = inner, bad_call, 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def denoise(self, x_t, timesteps, cond):
        out = self._inner.denoise(x_t, timesteps, cond)
        self.calls += 1
        if torch.is_grad_enabled() and self.calls == self._bad:
            out = out * float("nan")
        return out


def test_nan_loss_stops_restores_the_last_good_vectors_and_advises(tmp_path, data_dir):
    backend = tiny("sd1")
    good = train(config(tmp_path / "a", data_dir, max_steps=2), backend)
    wrapped = NaNOnce(backend, bad_call=3)  # the first micro-batch of step 3
    result = train(config(tmp_path / "b", data_dir, max_steps=5), wrapped)
    assert result.reason == "nan" and result.steps_done == 2
    # the run was fp32: the advice must not send the user to fp32 or a half precision
    assert "lower learn rate" in result.message
    assert "fp32" not in result.message.split("(fp32)")[0] and "bf16" not in result.message
    saved = vectors_of(result.embedding_path, backend)
    assert torch.equal(saved["clip_l"], vectors_of(good.embedding_path, backend)["clip_l"])
    assert torch.isfinite(saved["clip_l"]).all()
    assert load_embedding(result.embedding_path).step == 2
    assert not resume_state_path(result.embedding_path).exists()  # the optimizer state is not trusted


class PreviewFails:
    """The tiny backend whose preview sampler raises (e.g. a host sampler that cannot load)."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def sample_preview(self, request, embeddings):
        raise OSError("the preview decoder could not be downloaded")


def test_a_failing_preview_does_not_end_the_run(tmp_path, data_dir):
    messages: list[str] = []
    result = train(
        config(tmp_path, data_dir, max_steps=3, preview_every=1), PreviewFails(tiny("sd1")),
        callbacks=TrainCallbacks(on_message=messages.append),
    )  # fmt: skip
    assert result.reason == "completed" and result.steps_done == 3
    failed = [m for m in messages if "preview at step" in m]
    assert len(failed) == 3 and "could not be downloaded" in failed[0] and "training goes on" in failed[0]


class SlowPreview(PreviewFails):
    """The tiny backend whose previews take a second (a real sampler takes seconds too)."""

    def sample_preview(self, request, embeddings):
        import time

        time.sleep(1.0)
        return self._inner.sample_preview(request, embeddings)


def test_time_left_counts_previews_and_other_periodic_work(tmp_path, data_dir):
    etas: list[float] = []
    train(
        config(tmp_path, data_dir, max_steps=3, preview_every=1), SlowPreview(tiny("sd1")),
        callbacks=TrainCallbacks(on_step=lambda step, loss, lr, eta: etas.append(eta)),
    )  # fmt: skip
    assert etas[0] >= 2 * 1.0  # two steps left, each with a one-second preview
    assert etas[-1] == 0


def test_snapshots_previews_cards_and_logs(tmp_path, data_dir):
    backend = tiny("sd1")
    saved: list[Path] = []
    previews: list[Path] = []
    result = train(
        config(tmp_path, data_dir, max_steps=4, save_every=2, preview_every=4, preview_steps=2, validation_every=2,
               validation_images=2, validation_timesteps=2),
        backend,
        callbacks=TrainCallbacks(on_save=saved.append, on_preview=previews.append),
    )  # fmt: skip
    run = result.run_dir
    assert run.parent.parent == tmp_path / "logs" and run.name == "tst"
    assert (run / "embeddings" / "tst-2.safetensors").is_file() and (run / "embeddings" / "tst-4.safetensors").is_file()
    snap = load_embedding(run / "embeddings" / "tst-2.safetensors")
    assert snap.step == 2 and snap.name == "tst-2"
    assert previews == [run / "images" / "tst-4.png"]
    assert Image.open(previews[0]).size == (32, 32)
    card = extract_from_image(run / "image_embeddings" / "tst-4.png")
    assert torch.equal(card.vectors, load_embedding(run / "embeddings" / "tst-4.safetensors").vectors)
    assert run / "embeddings" / "tst-2.safetensors" in saved and result.embedding_path in saved
    rows = list(csv.DictReader(open(run / "loss.csv")))
    assert [r["step"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert [bool(r["validation_loss"]) for r in rows] == [True, False, True, False, True]
    assert Image.open(run / "loss.png").format == "PNG"
    assert set(result.files) >= {run / "loss.csv", run / "loss.png", result.embedding_path}


def test_held_out_validation_folder(tmp_path, data_dir):
    held_out = make_demo_dataset(tmp_path / "held", n=2, size=32, seed=11)
    result = train(
        config(tmp_path, data_dir, max_steps=2, validation_every=1, validation_data=str(held_out)), tiny("sd1")
    )
    assert [s for s, _ in result.validation] == [0, 1, 2]
    assert all(v > 0 for _, v in result.validation)


def test_continuing_an_embedding_file_continues_its_step_count(tmp_path, data_dir):
    backend = tiny("sd1")
    first = train(config(tmp_path / "a", data_dir, max_steps=3), backend)
    lrs: list[float] = []
    result = train(
        config(tmp_path / "b", data_dir, name="other", max_steps=5, learn_rate="0.02:4, 0.01",
               embedding_file=str(first.embedding_path)),
        backend,
        callbacks=TrainCallbacks(on_step=lambda s, loss, lr, eta: lrs.append((s, lr))),
    )  # fmt: skip
    assert lrs == [(4, 0.02), (5, 0.01)]
    assert load_embedding(result.embedding_path).step == 5
    done = train(config(tmp_path / "c", data_dir, name="x", max_steps=3, embedding_file=str(first.embedding_path)), backend)
    assert done.reason == "already_done" and done.embedding_path is None
    assert not (tmp_path / "c").exists()


def test_existing_embedding_is_never_overwritten_without_consent(tmp_path, data_dir):
    backend = tiny("sd1")
    first = train(config(tmp_path, data_dir, max_steps=1), backend)
    stamp = first.embedding_path.stat().st_mtime_ns
    with pytest.raises(ConfigError, match=r"already exists; set resume \(--resume\)"):
        train(config(tmp_path, data_dir, max_steps=1), backend)
    assert first.embedding_path.stat().st_mtime_ns == stamp
    again = train(config(tmp_path, data_dir, max_steps=2, overwrite=True, validation_every=1), backend)
    assert again.steps_done == 2
    assert again.run_dir == first.run_dir  # overwrite reuses the run folder, with a fresh loss.csv
    assert [s for s, _ in again.validation] == [0, 1, 2]
    rows = list(csv.DictReader(open(again.run_dir / "loss.csv")))
    assert [r["step"] for r in rows] == ["0", "1", "2"] and all(r["validation_loss"] for r in rows)
    other = train(config(tmp_path, data_dir, name="tst2", max_steps=1), backend)
    assert other.run_dir.name == "tst2"


def test_bf16_autocast_and_gradient_checkpointing_paths_run(tmp_path, data_dir):
    backend = tiny("sd1")
    plain = train(config(tmp_path / "a", data_dir, max_steps=2), backend)
    ckpt = train(config(tmp_path / "b", data_dir, max_steps=2, gradient_checkpointing=True), backend)
    torch.testing.assert_close(
        vectors_of(ckpt.embedding_path, backend)["clip_l"], vectors_of(plain.embedding_path, backend)["clip_l"]
    )
    bf16 = train(config(tmp_path / "c", data_dir, max_steps=2, precision="bf16"), backend)
    assert bf16.reason == "completed" and bf16.last_loss is not None and bf16.last_loss == bf16.last_loss


def test_webui_optim_file_restores_adamw_when_no_resume_file(tmp_path, data_dir):
    backend = tiny("sd1")
    straight = train(config(tmp_path / "a", data_dir, max_steps=4, save_format="pt"), backend)
    first = train(config(tmp_path / "b", data_dir, max_steps=2, save_format="pt"), backend)
    resume_state_path(first.embedding_path).unlink()  # only the web UI's <name>.pt.optim is left
    messages: list[str] = []
    second = train(
        config(tmp_path / "b", data_dir, max_steps=4, save_format="pt", resume=True),
        backend,
        callbacks=TrainCallbacks(on_message=messages.append),
    )
    assert any("with the saved optimizer state" in m for m in messages)
    a, b = vectors_of(straight.embedding_path, backend), vectors_of(second.embedding_path, backend)
    torch.testing.assert_close(b["clip_l"], a["clip_l"], rtol=0, atol=1e-6)


def test_stop_while_caching_latents_writes_nothing(tmp_path, data_dir):
    result = train(config(tmp_path, data_dir), tiny("sd1"), should_stop=lambda: True)
    assert result.reason == "interrupted" and result.steps_done == 0 and result.embedding_path is None
    assert list(tmp_path.iterdir()) == []


def test_emphasis_and_clip_skip_reach_the_text_encoder_and_are_restored(tmp_path, data_dir):
    backend = tiny("sd1")
    original = backend.text_options
    seen = []
    orig = backend.encode_text

    def spy(prompts, embeddings, sizes=None):
        seen.append((backend.text_options.emphasis, backend.text_options.clip_skip))
        return orig(prompts, embeddings, sizes)

    backend.encode_text = spy
    try:
        train(config(tmp_path, data_dir, max_steps=1, emphasis="No norm", clip_skip=2), backend)
    finally:
        del backend.encode_text
    assert seen and set(seen) == {("No norm", 2)}
    assert backend.text_options == original


def test_an_error_mid_run_keeps_what_was_trained_and_reraises(tmp_path, data_dir):
    def on_step(step, *_):
        if step == 2:
            raise RuntimeError("out of memory")

    cfg = config(tmp_path, data_dir, max_steps=5)
    with pytest.raises(RuntimeError, match="out of memory"):
        train(cfg, tiny("sd1"), callbacks=TrainCallbacks(on_step=on_step))
    assert load_embedding(cfg.final_path()).step == 2
    assert resume_state_path(cfg.final_path()).is_file()


def test_keep_snapshots_prunes_only_older_numbered_copies(tmp_path):
    from extension.training.outputs import prune_snapshots

    folder = tmp_path / "embeddings"
    folder.mkdir()
    for step in (5, 10, 15, 20):
        (folder / f"cat-{step}.safetensors").write_bytes(b"x")
    (folder / "cat-10.pt").write_bytes(b"x")
    (folder / "cat-10.pt.optim").write_bytes(b"x")
    (folder / "cat.safetensors").write_bytes(b"final")  # not a numbered snapshot
    (folder / "catfish-1.safetensors").write_bytes(b"other")  # another embedding
    (folder / "notes-3.txt").write_bytes(b"user file")
    deleted = prune_snapshots(folder, "cat", keep=2)
    assert sorted(p.name for p in deleted) == ["cat-10.pt", "cat-10.safetensors", "cat-5.safetensors"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "cat-15.safetensors", "cat-20.safetensors", "cat.safetensors", "catfish-1.safetensors", "notes-3.txt",
    ]  # fmt: skip


def test_restarting_an_embedding_in_place_never_clobbers_an_earlier_runs_snapshots(tmp_path, data_dir):
    """The tab's flow: create (step 0), train; create again with overwrite, train again the same
    day. The second run continues the step-0 file in place, but must not overwrite the first
    run's snapshots nor cut its loss.csv."""
    from extension.embedding import save_embedding
    from extension.training.create import create_embedding

    backend = tiny("sd1")
    final = Path(tmp_path / "emb" / "tst.safetensors")
    save_embedding(create_embedding(backend, "tst", "cat", 2), final)
    first = train(config(tmp_path, data_dir, max_steps=2, save_every=1, embedding_file=str(final)), backend)
    snap = first.run_dir / "embeddings" / "tst-1.safetensors"
    before = snap.read_bytes()
    rows_before = (first.run_dir / "loss.csv").read_text()

    save_embedding(create_embedding(backend, "tst", "dog", 2), final, overwrite=True)
    second = train(
        config(tmp_path, data_dir, max_steps=2, save_every=1, learn_rate="0.05", embedding_file=str(final)), backend
    )
    assert second.reason == "completed" and second.run_dir != first.run_dir
    assert snap.read_bytes() == before
    assert (first.run_dir / "loss.csv").read_text() == rows_before
    assert (second.run_dir / "embeddings" / "tst-1.safetensors").is_file()

    # a real continuation (from the saved final step) still reuses the folder of that run
    third = train(config(tmp_path, data_dir, max_steps=3, save_every=1, embedding_file=str(final)), backend)
    assert third.run_dir == second.run_dir and third.steps_done == 3


def test_restarting_in_place_keeps_an_earlier_runs_loss_log(tmp_path, data_dir):
    """As above without snapshots (short runs, save_every 0): the first run's loss.csv is kept."""
    from extension.embedding import save_embedding
    from extension.training.create import create_embedding

    backend = tiny("sd1")
    final = Path(tmp_path / "emb" / "tst.safetensors")
    save_embedding(create_embedding(backend, "tst", "cat", 2), final)
    first = train(config(tmp_path, data_dir, max_steps=2, embedding_file=str(final)), backend)
    rows_before = (first.run_dir / "loss.csv").read_text()
    save_embedding(create_embedding(backend, "tst", "dog", 2), final, overwrite=True)
    second = train(config(tmp_path, data_dir, max_steps=1, embedding_file=str(final)), backend)
    assert second.run_dir != first.run_dir
    assert (first.run_dir / "loss.csv").read_text() == rows_before
    # resuming the second run continues its own log
    third = train(config(tmp_path, data_dir, max_steps=2, resume=True), backend)
    assert third.run_dir == second.run_dir
    rows = list(csv.DictReader(open(third.run_dir / "loss.csv")))
    assert [r["step"] for r in rows] == ["1", "2"]


def test_keep_snapshots_with_only_spares_files_of_other_runs(tmp_path):
    from extension.training.outputs import prune_snapshots

    folder = tmp_path / "embeddings"
    folder.mkdir()
    theirs = [folder / f"cat-{s}.pt" for s in (100, 200)]  # e.g. the web UI's own trainer's snapshots
    ours = [folder / f"cat-{s}.safetensors" for s in (300, 400, 500)]
    for p in theirs + ours:
        p.write_bytes(b"x")
    deleted = prune_snapshots(folder, "cat", keep=1, only=ours)
    assert deleted == ours[:2]
    assert sorted(p.name for p in folder.iterdir()) == ["cat-100.pt", "cat-200.pt", "cat-500.safetensors"]


def test_a_run_keeps_only_its_newest_snapshots(tmp_path, data_dir):
    result = train(config(tmp_path, data_dir, max_steps=5, save_every=1, keep_snapshots=2), tiny("sd1"))
    snapshots = sorted(p.name for p in (result.run_dir / "embeddings").iterdir())
    assert snapshots == ["tst-4.safetensors", "tst-5.safetensors"]
    assert all(p.exists() for p in result.files)  # pruned files are not reported as written


@pytest.mark.parametrize(("family", "line"), [("sd1", "model: SD1, eps-prediction"), ("sd2", "model: SD2, v-prediction")])
def test_the_run_says_which_family_and_target_it_trains(family, line, tmp_path, data_dir):
    # a checkpoint detected with the wrong prediction type trains the wrong target: the first lines say it
    result = train(config(tmp_path, data_dir, max_steps=1), tiny(family))
    assert any(m.startswith(line) for m in result.warnings), result.warnings


def test_ctrl_c_inside_the_optimizer_update_still_saves_a_resumable_state(tmp_path, data_dir, monkeypatch):
    # a signal can land inside optimizer.step(): the moments may be half updated. The run goes back to
    # the vectors and optimizer state of the last whole step, saves them, and resuming matches a straight run
    backend = tiny("sd1")
    straight = train(config(tmp_path / "a", data_dir, max_steps=4), backend)
    real_step, calls = torch.optim.AdamW.step, []

    def step_cut_in_the_middle(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            state = next(iter(self.state.values()))
            state["exp_avg"].mul_(7.0)  # half an update done when the signal lands
            raise KeyboardInterrupt("SIGTERM")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step_cut_in_the_middle)
    cut = train(config(tmp_path / "b", data_dir, max_steps=4), backend)
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    assert cut.reason == "interrupted" and cut.steps_done == 2
    assert resume_state_path(cut.embedding_path).is_file()
    resumed = train(config(tmp_path / "b", data_dir, max_steps=4, resume=True), backend)
    assert "with the saved optimizer state" in " ".join(resumed.warnings)
    a, b = vectors_of(straight.embedding_path, backend), vectors_of(resumed.embedding_path, backend)
    torch.testing.assert_close(b["clip_l"], a["clip_l"], rtol=0, atol=1e-6)
