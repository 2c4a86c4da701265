"""Textual inversion on tiny-shapes finds a held-out concept: the demo's score rises, and only with learning."""

from __future__ import annotations

import json
from pathlib import Path

from extension.cli import main


def _demo(out: Path, *extra: str) -> dict:
    assert main(["demo", "--out", str(out), "--samples", "8", "--no-progress-bar", *extra]) == 0
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    assert (folder / "demo-shape.safetensors").is_file()
    assert (folder / "previews_before.png").is_file() and (folder / "previews_after.png").is_file()
    return json.loads((folder / "demo_summary.json").read_text("utf-8"))


def test_training_on_a_held_out_concept_raises_its_score(tmp_path, capsys):
    summary = _demo(tmp_path)
    assert summary["concept"] == "cyan triangle" and summary["samples"] == 8
    print(f"score {summary['score_before']:.0%} -> {summary['score_after']:.0%} in {summary['seconds']} s")
    assert summary["score_before"] <= 0.25
    assert summary["score_after"] >= 0.75
    assert "score: " in capsys.readouterr().out


def test_without_learning_the_score_stays_where_it_was(tmp_path):
    summary = _demo(tmp_path, "--learn-rate", "1e-9", "--steps", "8")
    assert summary["score_after"] == summary["score_before"] <= 0.25


def test_bad_demo_options_are_refused_before_any_work(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--concept", "purple heart", "--steps", "0"]) == 2
    err = capsys.readouterr().err
    assert "unknown shape 'heart'" in err and "--steps must be at least 1" in err
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
