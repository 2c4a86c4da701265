"""``--compare-builtin`` outside the web UI: the step recorder, the arguments given to the web UI's
trainer, ours-vs-theirs figures, and the service / tab path that runs the benchmark on the
adapter's model. The web UI's own trainer itself only runs inside the web UI (see the README's
Performance section for that measurement)."""

from __future__ import annotations

import datetime
import itertools
import json
import threading
from pathlib import Path

import pytest

from extension.backends.tiny import build_tiny_backend
from extension.benchmark.runner import WEBUI_ONLY, BenchError, BenchResult, BenchSettings, Timing
from extension.training.config import TrainConfig
from extension.training.loop import TrainCallbacks, train
from extension.ui.adapter import StandaloneAdapter
from extension.ui.service import BENCH_FIELDS, TrainerService, UserError
from extension.webui.builtin_bench import (
    NAME_PREFIX,
    TARGET_SPEEDUP,
    StepRecorder,
    WebUIBuiltin,
    builtin_problem,
    comparison,
    format_comparison,
    log_folders,
    make_builtin,
    order_arguments,
    throwaway_name,
    trainer_arguments,
)

# The parameters of modules.textual_inversion.textual_inversion.train_embedding in AUTOMATIC1111
# v1.10.1, in order (the Train tab passes them positionally).
A1111_V1_10_PARAMETERS = (
    "id_task", "embedding_name", "learn_rate", "batch_size", "gradient_step", "data_root", "log_directory",
    "training_width", "training_height", "varsize", "steps", "clip_grad_mode", "clip_grad_value", "shuffle_tags",
    "tag_drop_out", "latent_sampling_method", "use_weight", "create_image_every", "save_embedding_every",
    "template_filename", "save_image_with_stored_embedding", "preview_from_txt2img", "preview_prompt",
    "preview_negative_prompt", "preview_steps", "preview_sampler_name", "preview_cfg_scale", "preview_seed",
    "preview_width", "preview_height",
)  # fmt: skip

SMALL = {"steps": 3, "warmup": 1, "size": 32, "images": 2, "batch_size": 2, "grad_accumulation": 1}


# ---------------------------------------------------------------------------- StepRecorder


class FakeClock:
    """A clock that advances by the given amounts on every read (two reads per mark)."""

    def __init__(self, steps: list[float]):
        self.now = 0.0
        self._steps = iter(steps)

    def __call__(self) -> float:
        self.now += next(self._steps, 0.0)
        return self.now


def test_recorder_times_steps_between_marks_and_drops_its_own_bookkeeping():
    # reads per mark: the boundary read, then the "restart" read after bookkeeping
    wall = FakeClock([0.0, 0.5, 0.1, 0.25, 0.2, 0.75, 0.3, 0.0])
    cpu = FakeClock([0.0, 0.0, 0.1, 0.0, 0.2, 0.0, 0.3, 0.0])
    rss = iter([100, 300, 200])
    resets, firsts = [], []
    rec = StepRecorder(
        clock=wall, cpu_clock=cpu, peak_rss=lambda: next(rss), cuda_peak=lambda: None,
        reset_peaks=lambda: resets.append(1), on_first_mark=lambda: firsts.append(1),
    )  # fmt: skip
    for _ in range(4):
        rec.mark()
    assert rec.marks == 4 and firsts == [1] and len(resets) == 4
    # intervals start after the first mark's bookkeeping read (0.5) and end at the next boundary
    assert rec.times == pytest.approx([0.1, 0.2, 0.3])
    assert rec.cpu_times == pytest.approx([0.1, 0.2, 0.3])
    assert rec.rss_peaks == [100, 300, 200] and rec.cuda_peaks == []
    figures = rec.figures(warmup=2, samples_per_step=4)  # drops warmup - 1 intervals
    assert figures["step_times_s"] == pytest.approx([0.2, 0.3])
    assert figures["median_step_s"] == pytest.approx(0.25)
    assert figures["samples_per_s"] == pytest.approx(4 / 0.25)
    assert figures["steps_total"] == 4 and figures["steps_timed"] == 2
    assert figures["rss_peak_bytes"] == 300 and figures["cuda_max_allocated_bytes"] is None


def test_recorder_counts_like_the_benchmark_runner():
    """N marks after W warm-up steps leave N - W timed steps, as in runner._run."""
    rec = StepRecorder()
    for _ in range(7):
        rec.mark()
    assert len(rec.timing(warmup=3, samples_per_step=1).times) == 7 - 3
    with pytest.raises(BenchError, match="too few to time"):
        rec.timing(warmup=7, samples_per_step=1)
    with pytest.raises(ValueError, match="at least 1"):
        rec.timing(warmup=0, samples_per_step=1)


def test_recorder_times_real_training_steps(tmp_path):
    """The recorder on our own loop's step callback: one interval per optimizer step."""
    from extension.training.demo_data import make_demo_dataset

    backend = build_tiny_backend("sd1")
    data = make_demo_dataset(tmp_path / "data", n=2, size=32, seed=1)
    config = TrainConfig(
        name="rec", data=str(data), width=32, height=32, max_steps=5, batch_size=2, save_every=0,
        log_dir=str(tmp_path / "logs"), embeddings_dir=str(tmp_path / "emb"), progress_bar=False,
        tensorboard=False, precision="fp32",
    )  # fmt: skip
    rec = StepRecorder()
    result = train(config, backend, callbacks=TrainCallbacks(on_step=lambda *_: rec.mark()))
    assert result.steps_done == 5 and rec.marks == 5
    timing = rec.timing(warmup=2, samples_per_step=2)
    assert len(timing.times) == 3 and all(t > 0 for t in timing.times)
    assert rec.rss_peaks and all(p > 0 for p in rec.rss_peaks)


# ---------------------------------------------------------------------------- the web UI's arguments


def test_trainer_arguments_mirror_the_benchmark_settings(tmp_path):
    settings = BenchSettings(batch_size=3, grad_accumulation=4, steps=20, warmup=5, template="subject")
    args = trainer_arguments(
        settings, name="ti_trainer_bench_x", data_dir=tmp_path / "d", log_dir=tmp_path / "l",
        template_key="t.txt", size=256, learn_rate="0.005",
    )  # fmt: skip
    assert set(args) == set(A1111_V1_10_PARAMETERS)
    assert (args["batch_size"], args["gradient_step"], args["steps"]) == (3, 4, 25)
    assert (args["training_width"], args["training_height"]) == (256, 256)
    assert args["data_root"] == str(tmp_path / "d") and args["template_filename"] == "t.txt"
    assert args["learn_rate"] == "0.005" and args["embedding_name"] == "ti_trainer_bench_x"
    # nothing extra: no snapshots, no previews, no augmentation, no loss weights
    assert args["create_image_every"] == 0 and args["save_embedding_every"] == 0
    assert args["save_image_with_stored_embedding"] is False and args["preview_from_txt2img"] is False
    assert args["shuffle_tags"] is False and args["tag_drop_out"] == 0 and args["use_weight"] is False
    assert args["varsize"] is False and args["clip_grad_mode"] == "disabled"
    assert args["latent_sampling_method"] == TrainConfig().latent_sampling == "once"


def test_order_arguments_follows_the_signature_and_names_mismatches(tmp_path):
    args = trainer_arguments(
        BenchSettings(), name="n", data_dir=tmp_path, log_dir=tmp_path, template_key="t", size=64,
        learn_rate="0.005",
    )  # fmt: skip
    ordered = order_arguments(A1111_V1_10_PARAMETERS, args)
    assert ordered == [args[p] for p in A1111_V1_10_PARAMETERS]
    assert ordered[1] == "n" and ordered[A1111_V1_10_PARAMETERS.index("steps")] == 55
    changed = (*A1111_V1_10_PARAMETERS[:-1], "preview_scheduler")
    with pytest.raises(BenchError, match=r"wants preview_scheduler.*no longer takes preview_height"):
        order_arguments(changed, args)


def test_builtin_problem_needs_batch_times_accumulation_images():
    assert builtin_problem(BenchSettings(batch_size=2, grad_accumulation=2, images=4)) is None
    assert builtin_problem(BenchSettings(batch_size=4, grad_accumulation=1, images=1)) is None  # drawn: 4
    problem = builtin_problem(BenchSettings(batch_size=2, grad_accumulation=4, images=6))
    assert problem and "use at least 8 images" in problem and "(3 here)" in problem
    with pytest.raises(BenchError, match="at least 8 images"):
        WebUIBuiltin(backend=None).check(BenchSettings(batch_size=2, grad_accumulation=4, images=6))


def test_log_folders_cover_today_and_tomorrow(tmp_path):
    folders = log_folders(tmp_path, "emb", datetime.date(2024, 12, 31))
    assert folders == [tmp_path / "2024-12-31" / "emb", tmp_path / "2025-01-01" / "emb"]


def test_throwaway_name_avoids_taken_names():
    tokens = itertools.cycle(["aaaa", "bbbb"])
    taken = {NAME_PREFIX + "aaaa"}
    assert throwaway_name(lambda n: n in taken, lambda: next(tokens)) == NAME_PREFIX + "bbbb"
    with pytest.raises(BenchError, match="ti_trainer_bench_"):
        throwaway_name(lambda n: True, lambda: "cccc")
    name = throwaway_name(lambda n: False)
    assert name.startswith(NAME_PREFIX) and name.replace("_", "").isalnum()


def test_make_builtin_refuses_outside_the_web_ui():
    for family in ("sd1", "sdxl"):  # outside the web UI that comes first
        with pytest.raises(BenchError) as info:
            make_builtin(build_tiny_backend(family))
        assert str(info.value) == WEBUI_ONLY


# ---------------------------------------------------------------------------- ours vs theirs


def bench_result(ours: list[float], builtin: dict | None, rss: int | None = 500 * 2**20) -> BenchResult:
    settings = BenchSettings(steps=len(ours), warmup=2, compare_builtin=builtin is not None)
    return BenchResult(
        settings=settings, machine={"device": "cpu", "torch_threads": 1}, model={},
        trainer=Timing(ours, 4, [t * 0.9 for t in ours]), bare=Timing(ours, 4), bare_text="from text",
        caching_per_image_s=0.01, caching_images=8,
        memory={"rss_peak_trainer_bytes": rss, "cuda_max_allocated_trainer_bytes": None},
        checks={}, builtin=builtin,
    )  # fmt: skip


def test_comparison_ratios():
    theirs = {
        "median_step_s": 0.030, "min_step_s": 0.024, "median_cpu_s": 0.018, "samples_per_s": 4 / 0.030,
        "rss_peak_bytes": 1000 * 2**20, "cuda_max_allocated_bytes": None,
    }  # fmt: skip
    result = bench_result([0.010, 0.012, 0.011], theirs)
    c = comparison(result)
    assert c["speedup"] == pytest.approx(0.030 / 0.011)
    assert c["steps_per_s_ours"] == pytest.approx(1 / 0.011) and c["steps_per_s_webui"] == pytest.approx(
        1 / 0.030
    )
    assert c["speedup_fastest_steps"] == pytest.approx(0.024 / 0.010)
    assert c["speedup_cpu_time"] == pytest.approx(0.018 / (0.011 * 0.9))
    assert c["memory_ratio_rss"] == pytest.approx(0.5) and c["memory_ratio_cuda"] is None
    assert c["meets_target"] and c["target_speedup"] == TARGET_SPEEDUP
    table = format_comparison(result)
    assert "2.73x steps/s" in table and "meets the target >= 1.5x" in table
    assert "500 MiB" in table and "1000 MiB" in table and "0.50x" in table
    assert "CUDA" not in table  # no CUDA figures on either side

    slower = comparison(bench_result([0.025], theirs))
    assert slower["speedup"] == pytest.approx(1.2) and not slower["meets_target"]
    assert "misses the target" in format_comparison(bench_result([0.025], theirs))


def test_no_comparison_without_the_web_ui_figures():
    result = bench_result([0.01, 0.01], None)
    assert comparison(result) is None and format_comparison(result) == ""


# ---------------------------------------------------------------------------- the service


@pytest.fixture
def service(tmp_path) -> TrainerService:
    adapter = StandaloneAdapter(
        backend=build_tiny_backend("sd1"), embeddings_dir=tmp_path / "emb", log_dir=tmp_path / "logs"
    )
    return TrainerService(adapter)


def test_service_benchmark_runs_on_the_adapters_model_and_writes_json(service, tmp_path):
    messages: list[str] = []
    outcome = service.benchmark(SMALL, log=messages.append)
    data = outcome.data
    assert data["trainer"]["steps_timed"] == SMALL["steps"] and data["bare"]["steps_timed"] == SMALL["steps"]
    assert data["checks"]["model_unchanged"] and data["checks"]["params_with_grad"] == 0
    assert data["settings"]["model"] == "tiny-sd1" and data["comparison"] is None
    assert "trainer overhead" in outcome.table and "TI Trainer vs" not in outcome.table
    assert any("warm-up" in m for m in messages)
    assert outcome.json_path is not None and outcome.json_path.parent == tmp_path / "logs" / "benchmarks"
    assert json.loads(outcome.json_path.read_text())["overhead_ratio"] == pytest.approx(
        data["overhead_ratio"]
    )
    assert outcome.to_dict()["table"] == outcome.table


def test_service_benchmark_rejects_bad_requests(service):
    with pytest.raises(UserError, match=r"unknown benchmark option.*model") as info:
        service.benchmark({"model": "x"})
    assert info.value.status == 400 and "steps" in BENCH_FIELDS
    with pytest.raises(UserError, match="steps must be a whole number >= 1") as info:
        service.benchmark({"steps": 0})
    assert info.value.status == 400
    with pytest.raises(UserError, match="only available inside the web UI"):
        service.benchmark(SMALL, compare_builtin=True)  # standalone: no web UI trainer
    service.adapter.is_host = True  # a "host" that is not the web UI: refused before anything runs
    with pytest.raises(UserError, match="only available inside the web UI"):
        service.benchmark(SMALL, compare_builtin=True)


def test_one_benchmark_at_a_time_and_no_training_meanwhile(service):
    assert service._bench_lock.acquire(blocking=False)  # a benchmark running on another thread
    try:
        with pytest.raises(UserError, match="a benchmark is running") as info:
            service.benchmark(SMALL)
        assert info.value.status == 409
        with pytest.raises(UserError, match="a benchmark is running"):
            service.start_training({"name": "x", "overwrite": True, "data": "."})
    finally:
        service._bench_lock.release()


def test_service_compares_with_a_hosts_builtin_trainer(service, tmp_path):
    """A host's ``builtin_benchmark`` extra gets the adapter's backend; its figures end up side by
    side with ours. Here the "builtin" trainer is our own loop timed by the StepRecorder."""
    seen = []

    def builtin_benchmark(backend):
        seen.append(backend)

        def run(settings: BenchSettings, data_dir: Path) -> dict:
            rec = StepRecorder()
            config = TrainConfig(
                name="builtin", data=str(data_dir), width=settings.size, height=settings.size,
                max_steps=settings.warmup + settings.steps, batch_size=settings.batch_size,
                grad_accumulation=settings.grad_accumulation, save_every=0, progress_bar=False,
                tensorboard=False, log_dir=str(tmp_path / "b"), embeddings_dir=str(tmp_path / "b"),
            )  # fmt: skip
            train(config, backend, callbacks=TrainCallbacks(on_step=lambda *_: rec.mark()))
            return {"trainer": "our loop again", **rec.figures(settings.warmup, settings.batch_size)}

        return run

    service.adapter.builtin_benchmark = builtin_benchmark
    outcome = service.benchmark(SMALL, compare_builtin=True)
    assert seen == [service.adapter.backend()]
    c = outcome.data["comparison"]
    assert outcome.data["builtin"]["steps_timed"] == SMALL["steps"]
    assert c["speedup"] == pytest.approx(
        outcome.data["builtin"]["median_step_s"] / outcome.data["trainer"]["median_step_s"]
    )
    assert "TI Trainer vs the web UI's own trainer (our loop again)" in outcome.table
    saved = json.loads(outcome.json_path.read_text())
    assert saved["comparison"]["speedup"] == pytest.approx(c["speedup"])


def test_a_builtin_check_refuses_before_anything_runs(service, tmp_path):
    calls = []
    builtin = WebUIBuiltin(backend=None)
    service.adapter.builtin_benchmark = lambda backend: builtin
    service.adapter.log_dir = lambda: calls.append("ran") or tmp_path / "logs"
    with pytest.raises(UserError, match="use at least 8 images"):
        service.benchmark(
            {**SMALL, "batch_size": 2, "grad_accumulation": 4, "images": 6}, compare_builtin=True
        )
    assert calls == [] and not (tmp_path / "logs").exists() and not service._bench_lock.locked()


def test_benchmark_waits_for_nothing_when_idle_and_releases_its_lock(service):
    done = threading.Event()

    def run():
        service.benchmark(SMALL)
        done.set()

    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=120)
    assert done.is_set() and not service._bench_lock.locked()


# ---------------------------------------------------------------------------- the tab


def test_tab_benchmark_accordion(service, tmp_path):
    try:
        from extension.ui.compat import import_gradio

        import_gradio()
    except ImportError as exc:
        pytest.skip(f"gradio is not installed ({exc})")
    from extension.ui.tab import BENCH_INPUTS, bench_options, build_tab

    assert bench_options([20, 5.0, 2, 2, 0]) == {
        "steps": 20, "warmup": 5, "batch_size": 2, "grad_accumulation": 2, "size": 0,
    }  # fmt: skip
    with pytest.raises(UserError, match="Timed steps is empty"):
        bench_options([None, 5, 2, 2, 0])
    with pytest.raises(UserError, match="Benchmark batch size must be a whole number"):
        bench_options([20, 5, 1.5, 2, 0])

    standalone = build_tab(service)
    ids = [c.get("props", {}).get("elem_id") for c in standalone.get_config_file()["components"]]
    assert "ti_trainer_bench_button" not in ids  # host only

    service.adapter.is_host = True
    tab = build_tab(service)
    ids = [c.get("props", {}).get("elem_id") for c in tab.get_config_file()["components"]]
    for needed in ("ti_trainer_bench_button", "ti_trainer_bench_compare", "ti_trainer_bench_out"):
        assert needed in ids
    assert all(f"ti_trainer_bench_{key}" in ids for _, key, _ in BENCH_INPUTS)
    fns = tab.fns.values() if isinstance(tab.fns, dict) else tab.fns
    do_bench = next(f.fn for f in fns if getattr(f.fn, "__name__", "") == "do_bench")
    table, message = do_bench(False, 2, 1, 2, 1, 32)
    assert "trainer overhead" in table and "JSON" in message
    table, message = do_bench(False, None, 1, 2, 1, 32)
    assert table == "" and "Timed steps is empty" in message
    table, message = do_bench(True, 2, 1, 2, 1, 32)  # no web UI here
    assert table == "" and "only available inside the web UI" in message
