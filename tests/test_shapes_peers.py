"""Inputs for other trainers (python -m extension.shapes.peers) and scoring their snapshot files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from extension.backends.loading import load_backend
from extension.embedding import Embedding, save_embedding
from extension.shapes.peers import OBJECT_PROMPTS
from extension.shapes.peers import main as peers_main
from extension.shapes.quality import main as quality_main
from extension.shapes.quality import score_curve, score_files, snapshot_files


@pytest.fixture(scope="module")
def shapes():
    return load_backend("tiny-shapes", device="cpu")


def test_prepare_writes_a_diffusers_folder_that_computes_what_tiny_shapes_computes(tmp_path, shapes):
    out = tmp_path / "peer"
    assert peers_main(["prepare", str(out), "--concepts", "cyan triangle", "--seeds", "3"]) == 0
    folder = load_backend(str(out / "diffusers"), device="cpu")
    latents, t = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([500])
    with torch.no_grad():
        text = shapes.encode_text(["a photo of a cyan triangle"], {})
        assert torch.equal(folder.encode_text(["a photo of a cyan triangle"], {}).crossattn, text.crossattn)
        assert torch.allclose(folder.denoise(latents, t, text), shapes.denoise(latents, t, text), atol=1e-6)
    assert (
        json.loads((out / "diffusers" / "scheduler" / "scheduler_config.json").read_text())["beta_end"]
        == 0.012
    )
    pictures = sorted(p.name for p in (out / "data" / "cyan-triangle-3").iterdir())
    assert len(pictures) == 16 and sorted(
        p.name for p in (out / "data" / "cyan-triangle-3-images").iterdir()
    ) == [p for p in pictures if p.endswith(".png")]
    assert (out / "object.txt").read_text().splitlines() == list(OBJECT_PROMPTS)
    assert {p.name for p in (out / "webui").iterdir()} == {
        "tiny-shapes.safetensors", "tiny-shapes.yaml", "tiny-shapes-clip"
    }  # fmt: skip


def test_prepare_refuses_an_existing_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert peers_main(["prepare", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err and (tmp_path / "keep.txt").read_text() == "mine"


def test_score_files_reads_other_trainers_layouts_by_step(tmp_path, shapes):
    first = shapes.token_embeddings("cat cat")["clip_l"]
    second = torch.randn(2, 32, generator=torch.Generator().manual_seed(2))
    save_file({"<quality-shape>": first}, str(tmp_path / "learned_embeds-steps-10.safetensors"))  # diffusers
    save_embedding(
        Embedding("quality-shape", second, step=20), tmp_path / "quality-shape-20.pt", format="pt"
    )  # web UI
    (tmp_path / "quality-shape.optim").write_bytes(b"not an embedding")
    (tmp_path / "notes.txt").write_text("no")
    assert [step for step, _ in snapshot_files(tmp_path)] == [10, 20]
    curve = score_files(shapes, "cyan triangle", tmp_path, samples=2)
    expected = score_curve(
        shapes, "cyan triangle", [(10, {"clip_l": first}), (20, {"clip_l": second})], samples=2
    )
    assert curve.scores == expected


def test_quality_cli_scores_a_folder(tmp_path, capsys):
    vectors = torch.randn(2, 32, generator=torch.Generator().manual_seed(3))
    save_embedding(Embedding("x", vectors, step=40), tmp_path / "x-40.safetensors")
    out = tmp_path / "curve.json"
    assert (
        quality_main(
            ["--score", str(tmp_path), "--concept", "purple star", "--samples", "2", "--json", str(out)]
        )
        == 0
    )
    (curve,) = json.loads(out.read_text())
    assert curve["concept"] == "purple star" and [s for s, _ in curve["scores"]] == [40]
    assert curve["mean_score"] == curve["scores"][0][1]
    assert "purple star" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--concepts", "pink hexagon"], "unknown colour"),
        (["--seeds", "a,b"], "--seeds"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--score", "/nonexistent/folder"], "not a folder"),
        (["--data", "."], "given with --score"),
    ],
)
def test_quality_cli_refuses_bad_input_before_loading(args, words, capsys):
    assert quality_main(args) == 2
    assert words in capsys.readouterr().err


def test_bench_quality_runs_the_quality_benchmark_with_its_defaults(monkeypatch, tmp_path):
    from extension.cli import main as cli_main
    from extension.shapes import quality

    seen = []
    monkeypatch.setattr(quality, "run", lambda args: seen.append(args) or 0)
    assert cli_main(["bench", "--quality", "--json", str(tmp_path / "q.json")]) == 0
    (args,) = seen
    assert (
        args.json == tmp_path / "q.json" and args.steps == 100 and args.seeds == "0,1" and args.score is None
    )


def test_prepare_checks_its_arguments_before_writing(tmp_path, capsys):
    out = tmp_path / "new"
    assert peers_main(["prepare", str(out), "--concepts", "pink star", "--seeds", "1,x"]) == 2
    err = capsys.readouterr().err
    assert "unknown colour 'pink'" in err and "--seeds '1,x'" in err and not out.exists()


def test_validation_of_snapshot_files_equals_the_runs_own(tmp_path, shapes):
    from extension.shapes.quality import recipe_config, run_ours

    curve = run_ours(shapes, "cyan triangle", 5, steps=4, every=2, samples=1, learn_rate="0.02", work=tmp_path)
    (snapshots,) = {p.parent for p in (tmp_path / "logs").rglob("quality-shape-*.safetensors")}
    config = recipe_config(tmp_path / "data", 5, tmp_path / "again", steps=4, every=2)
    scored = score_files(shapes, "cyan triangle", snapshots, samples=1, seed=5, validation_config=config)
    assert [s for s, _ in scored.validation] == [2, 4]
    assert scored.validation == [(s, v) for s, v in curve.validation if s in (2, 4)]  # the same numbers
    assert scored.validation[0][1] != scored.validation[1][1]  # the vectors differ, so do the losses


def test_quality_cli_says_what_is_wrong_with_a_snapshot_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no snapshots here")
    assert quality_main(["--score", str(tmp_path), "--concepts", "cyan triangle"]) == 2
    assert "holds no embedding snapshot" in capsys.readouterr().err
    (tmp_path / "broken-10.safetensors").write_bytes(b"not safetensors")
    assert quality_main(["--score", str(tmp_path), "--concepts", "cyan triangle"]) == 2
    err = capsys.readouterr().err
    assert "broken-10.safetensors" in err and "Traceback" not in err
