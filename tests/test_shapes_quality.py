"""The quality benchmark scores our trainer's snapshots of a held-out concept against steps."""

from __future__ import annotations

import json

from extension.shapes.quality import Curve, main, summary_table


def test_curves_of_a_short_run(tmp_path, capsys):
    out = tmp_path / "curves.json"
    args = ["--concepts", "cyan triangle", "--seeds", "0", "--steps", "40", "--every", "20", "--samples", "4"]
    assert main([*args, "--json", str(out)]) == 0
    (run,) = json.loads(out.read_text("utf-8"))
    assert run["concept"] == "cyan triangle" and [s for s, _ in run["scores"]] == [0, 20, 40]
    assert [s for s, _ in run["validation"]][-1] == 40
    assert run["scores"][0][1] <= 0.25 and run["scores"][-1][1] >= 0.75  # measured: 0 % -> 100 %
    assert run["steps_to_target"] in (20, 40)
    assert "steps to 80%" in capsys.readouterr().out


def test_steps_to_target_and_table():
    curve = Curve("purple star", 1, scores=[(0, 0.0), (20, 0.5), (40, 0.81), (60, 0.7)])
    assert curve.steps_to_target == 40
    assert curve.mean_score == (0.5 + 0.81 + 0.7) / 3  # step 0 is the starting point, not a result
    assert Curve("red square", 0, scores=[(0, 0.1)]).mean_score is None
    assert Curve("red square", 0, scores=[(0, 0.1)]).steps_to_target is None
    table = summary_table([curve])
    assert "purple star" in table and "81%" in table and table.rstrip().endswith("67%  40")
