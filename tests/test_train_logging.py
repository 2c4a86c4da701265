"""Loss CSV and plot, run folders, atomic writes and the resume file."""

from __future__ import annotations

import csv
import datetime
import json

import pytest
import torch
from safetensors.torch import save_file

from extension.training.charts import smooth
from extension.training.logging import LogRow, TrainLogger, read_loss_csv
from extension.training.outputs import (
    RunDirs,
    atomic_write,
    choose_run_dir,
    final_embedding_path,
    resume_state_path,
)
from extension.training.resume import (
    ResumeError,
    ResumeState,
    load_resume_state,
    save_resume_state,
    vectors_hash,
)


def rows(n: int, val_every: int = 0) -> list[LogRow]:
    return [
        LogRow(s, s / 4, 1.0 / s, (0.9 / s if val_every and s % val_every == 0 else None), 0.01 if s < 6 else 0.002)
        for s in range(1, n + 1)
    ]


def test_logger_writes_csv_rows_and_creates_nothing_before(tmp_path):
    log = TrainLogger(tmp_path / "run" / "loss.csv", tmp_path / "run" / "loss.png", total_steps=5, progress_bar=False)
    assert not (tmp_path / "run").exists()
    for r in rows(3, val_every=2):
        log.log(r)
    log.close()
    with open(tmp_path / "run" / "loss.csv", newline="") as f:
        got = list(csv.DictReader(f))
    assert list(got[0]) == ["step", "epoch", "loss", "validation_loss", "learn_rate"]
    assert [r["step"] for r in got] == ["1", "2", "3"]
    assert [r["validation_loss"] for r in got] == ["", "0.4500000", ""]
    assert float(got[0]["loss"]) == 1.0 and float(got[2]["learn_rate"]) == 0.01


def test_logger_append_keeps_earlier_rows_up_to_the_resume_step(tmp_path):
    csv_path = tmp_path / "loss.csv"
    first = TrainLogger(csv_path, tmp_path / "loss.png", total_steps=8, progress_bar=False)
    for r in rows(5):
        first.log(r)
    first.close()
    # resumed at step 3: rows 4 and 5 of the abandoned run are dropped
    second = TrainLogger(csv_path, tmp_path / "loss.png", total_steps=8, start_step=3, append=True, progress_bar=False)
    for r in rows(8)[3:]:
        second.log(r)
    second.close()
    assert [r.step for r in read_loss_csv(csv_path)] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [r.step for r in second.history] == [1, 2, 3, 4, 5, 6, 7, 8]


def test_logger_without_append_replaces_an_old_file(tmp_path):
    csv_path = tmp_path / "loss.csv"
    csv_path.write_text("step,epoch,loss,validation_loss,learn_rate\n0,0,,9.9,\n7,1,0.5,,0.1\n")
    log = TrainLogger(csv_path, tmp_path / "loss.png", total_steps=2, progress_bar=False)
    assert log.history == []
    log.log(LogRow(1, 0.5, 0.25, None, 0.01))
    assert [(r.step, r.loss) for r in read_loss_csv(csv_path)] == [(1, 0.25)]


# loss.png itself: tests/test_ui_plots.py


def test_smooth_is_bias_corrected():
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    s = smooth([0.0, 10.0], weight=0.5)
    assert s[0] == 0.0 and s[1] == pytest.approx(10 * 0.5 / 0.75)


def test_run_dirs_layout_and_fresh_folders(tmp_path):
    day = datetime.date(2024, 5, 17)
    first = choose_run_dir(tmp_path, "cat", reuse=False, today=day)
    assert first == tmp_path / "2024-05-17" / "cat"
    first.mkdir(parents=True)
    assert choose_run_dir(tmp_path, "cat", reuse=False, today=day) == first  # empty: reused
    (first / "loss.csv").write_text("x")
    assert choose_run_dir(tmp_path, "cat", reuse=False, today=day) == tmp_path / "2024-05-17" / "cat-2"
    assert choose_run_dir(tmp_path, "cat", reuse=True, today=day) == first
    dirs = RunDirs(first, "cat", "pt")
    assert dirs.snapshot(40) == first / "embeddings" / "cat-40.pt"
    assert dirs.preview(40) == first / "images" / "cat-40.png"
    assert dirs.card(40) == first / "image_embeddings" / "cat-40.png"
    final = final_embedding_path(tmp_path / "emb", "cat", "safetensors")
    assert final == tmp_path / "emb" / "cat.safetensors"
    assert resume_state_path(final) == tmp_path / "emb" / "cat.resume"


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"

    def boom(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert list(tmp_path.iterdir()) == []
    atomic_write(target, lambda tmp: tmp.write_bytes(b"ok"))
    assert target.read_bytes() == b"ok" and len(list(tmp_path.iterdir())) == 1


def _adamw_after(steps: int, state: dict | None = None, start: int = 0):
    torch.manual_seed(0)
    params = [torch.randn(2, 4, requires_grad=True), torch.randn(2, 6, requires_grad=True)]
    opt = torch.optim.AdamW(params, lr=0.1, weight_decay=0.0)
    if state is not None:
        params[0].data.copy_(state["p"][0])
        params[1].data.copy_(state["p"][1])
        opt.load_state_dict(state["opt"])
    for s in range(start, steps):
        g = torch.Generator().manual_seed(s)
        opt.zero_grad()
        ((params[0] * torch.randn(2, 4, generator=g)).sum() + (params[1] ** 2).sum()).backward()
        opt.step()
    return params, opt


def test_resume_state_round_trip_continues_adamw_exactly(tmp_path):
    straight, _ = _adamw_after(6)
    params, opt = _adamw_after(3)
    vectors = {"clip_l": params[0].detach(), "clip_g": params[1].detach()}
    path = tmp_path / "x.resume"
    save_resume_state(
        path,
        ResumeState(3, "abc", ["clip_l", "clip_g"], vectors_hash(vectors), opt.state_dict(), {"scale": 1024.0}),
    )
    loaded = load_resume_state(path)
    assert (loaded.step, loaded.config_hash, loaded.encoder_keys) == (3, "abc", ["clip_l", "clip_g"])
    assert loaded.vectors_hash == vectors_hash(vectors) and loaded.scaler_state == {"scale": 1024.0}
    resumed, _ = _adamw_after(6, {"p": [p.detach().clone() for p in params], "opt": loaded.optimizer_state}, start=3)
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)


def test_resume_state_rejects_damaged_files(tmp_path):
    with pytest.raises(ResumeError, match="does not exist"):
        load_resume_state(tmp_path / "none.resume")
    junk = tmp_path / "junk.resume"
    junk.write_bytes(b"\x00" * 40)
    with pytest.raises(ResumeError, match="cannot be read"):
        load_resume_state(junk)
    other = tmp_path / "other.resume"
    save_file({"a": torch.zeros(1)}, str(other), metadata={"ti_trainer_resume": json.dumps({"format": "x"})})
    with pytest.raises(ResumeError, match="unknown format"):
        load_resume_state(other)
    save_file({"a": torch.zeros(1)}, str(other), metadata={"something": "else"})
    with pytest.raises(ResumeError, match="damaged"):
        load_resume_state(other)


def test_vectors_hash_depends_on_every_value():
    a = {"clip_l": torch.zeros(2, 3)}
    b = {"clip_l": torch.zeros(2, 3)}
    b["clip_l"][1, 2] = 1e-6
    assert vectors_hash(a) != vectors_hash(b) and vectors_hash(a) == vectors_hash({"clip_l": torch.zeros(2, 3)})


def test_runs_started_together_never_share_a_run_folder(tmp_path):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from extension.training.outputs import CLAIM_FILE, claim_run_dir

    # runs of one name that have not written anything yet: choose_run_dir alone gave all of them "cat"
    for round_ in range(5):
        start = threading.Barrier(16)

        def claim(_, root=tmp_path / str(round_), start=start):
            start.wait()
            return claim_run_dir(root, "cat", reuse=False)

        with ThreadPoolExecutor(16) as pool:
            folders = list(pool.map(claim, range(16)))
        assert len(set(folders)) == 16 and all((f / CLAIM_FILE).is_file() for f in folders)


def test_a_claimed_run_folder_is_removed_when_nothing_was_written(tmp_path):
    from extension.training.outputs import claim_run_dir, release_run_dir

    empty = claim_run_dir(tmp_path, "cat", reuse=False)
    used = claim_run_dir(tmp_path, "cat", reuse=False)
    (used / "loss.csv").write_text("step,loss\n")
    release_run_dir(empty)
    release_run_dir(used)
    assert not empty.exists() and (used / "loss.csv").is_file()
    assert claim_run_dir(tmp_path, "cat", reuse=False) == empty  # free again
