"""`leaderboard`: CI and paired-test arithmetic against hand-computed values, seeds pooled, the average
column, and the three export formats, on runs written in eval's real format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from visrl_bench.cli import app
from visrl_bench.metrics import stats
from visrl_bench.metrics.stats import bootstrap_ci
from visrl_bench.report import leaderboard as lb
from visrl_bench.report import render


def write_run(
    root: Path,
    scores: list[float],
    row: str | None = None,
    base: str = "m",
    seed: int = 0,
    task: str = "zoomworld",
) -> Path:
    """An eval run dir: samples.jsonl (one record per question), results.json with the metric as eval
    computes it, and, for an ablation cell, cell.json."""
    from visrl_bench.metrics.stats import mean_ci_percent

    root.mkdir(parents=True, exist_ok=True)
    with (root / "samples.jsonl").open("w") as f:
        for i, s in enumerate(scores):
            f.write(
                json.dumps({"task": task, "position": i, "id": f"q{i}", "scores": {"accuracy": s}}) + "\n"
            )
    value, ci = mean_ci_percent(scores)
    results = {
        "results": {task: {"accuracy": value, "accuracy_ci95": ci, "n": len(scores)}},
        "config": {"model": f"/ckpt/{row or 'model'}", "mode": "cot"},
    }
    (root / "results.json").write_text(json.dumps(results))
    if row is not None:
        (root / "cell.json").write_text(json.dumps({"row": row, "base": base, "seed": seed}))
    return root


# --- arithmetic ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("diffs", "p"),
    [
        ([1, 1, 1], 2 / 8),  # only all-plus and all-minus reach |mean| = 1
        ([1, 2, 3], 2 / 8),  # sums 6 4 2 0 0 -2 -4 -6: |6| twice
        ([3, 1], 2 / 4),  # sums 4 2 -2 -4
        ([1, -1], 1.0),  # observed mean 0: every pattern is as extreme
        ([0, 0, 0], 1.0),
    ],
)
def test_sign_flip_pvalue_exact(diffs, p):
    assert stats.sign_flip_pvalue(np.array(diffs, dtype=float)) == pytest.approx(p)


def test_sign_flip_pvalue_monte_carlo_is_never_zero():
    p = stats.sign_flip_pvalue(np.ones(40), n_resamples=999)
    assert p == pytest.approx(1 / 1000)  # no random sign pattern of 40 reaches |mean| = 1 (chance 2^-39)
    p_null = stats.sign_flip_pvalue(np.r_[np.ones(20), -np.ones(20)], n_resamples=999)
    assert p_null == 1.0


def test_bootstrap_ci_against_the_exact_bootstrap_distribution():
    # n = 2 scores {0, 1}: resample means are 0 (1/4), 0.5 (1/2), 1 (1/4), so the 95% interval is [0, 1]
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)
    mean, lo, hi = stats.mean_ci(np.array([0.0, 1.0]))
    assert (mean, lo, hi) == (50.0, 0.0, 100.0)


def test_paired_difference_by_hand():
    a = {"q0": 1.0, "q1": 0.0}
    b = {"q0": 0.0, "q1": 0.0, "q2": 1.0}  # q2 is not in both: left out, and n says so
    diff, ci, p, n = stats.paired_difference(a, b)
    assert (diff, n) == (50.0, 2)
    assert ci == (0.0, 100.0)  # differences {1, 0}: the n = 2 case above
    assert p == 1.0  # |(+-1 +-0)/2| = 0.5 for all four sign patterns


# --- the table -------------------------------------------------------------------------------------------
@pytest.fixture()
def grid(tmp_path):
    """Two bases x three rows (one with two seeds), four questions each, scores chosen by hand."""
    cells = tmp_path / "cells"
    write_run(cells / "visrl/A/seed0", [0, 0, 1, 1], "visrl", "A")
    write_run(cells / "visrl/B/seed0", [1, 0, 0, 0], "visrl", "B")
    write_run(cells / "sft/A/seed0", [1, 0, 1, 1], "sft", "A")
    write_run(cells / "sft/B/seed0", [1, 1, 0, 0], "sft", "B")
    write_run(cells / "x/A/seed0", [1, 1, 0, 0], "x", "A", seed=0)
    write_run(cells / "x/A/seed1", [1, 1, 1, 0], "x", "A", seed=1)
    write_run(cells / "x/B/seed0", [0, 0, 0, 0], "x", "B", seed=0)
    write_run(cells / "x/B/seed1", [0, 0, 0, 1], "x", "B", seed=1)
    return cells


def test_values_seeds_average_and_differences(grid):
    runs = lb.find_runs([grid])
    assert len(runs) == 8
    entries = lb.build_entries(
        runs, [("zoomworld", "accuracy")], reference="visrl", rows=["visrl", "sft", "x"]
    )
    at = {(e.row, e.column): e for e in entries}
    # a single run: its results.json value and CI
    assert at["sft", "A"].value == 75.0 and at["sft", "A"].n == 4 and at["sft", "A"].seeds == 1
    # two seeds: mean of the seeds (50 and 75), their spread, CI over questions of seed-averaged scores
    x = at["x", "A"]
    assert x.value == pytest.approx(62.5) and x.seeds == 2
    assert x.seed_sd == pytest.approx(np.std([50, 75], ddof=1))
    assert x.scores == {"q0": 1.0, "q1": 1.0, "q2": 0.5, "q3": 0.0}
    # the average column: per question over bases; sft: A [1,0,1,1], B [1,1,0,0] -> [1, .5, .5, .5]
    avg = at["sft", lb.AVERAGE]
    assert avg.value == pytest.approx(62.5) and avg.n == 4
    # paired differences to visrl, per column: sft - visrl on A = [1,0,0,0] -> +25, on the average
    # ([1,.5,.5,.5] - [.5,0,.5,.5]) = [.5,.5,0,0] -> +25
    assert at["sft", "A"].diff == pytest.approx(25.0) and at["sft", "A"].diff_n == 4
    assert at["sft", lb.AVERAGE].diff == pytest.approx(25.0)
    # sign flips of [.5,.5,0,0]: |mean| = .25 whenever the two .5 agree in sign: 8 of 16 patterns
    assert at["sft", lb.AVERAGE].diff_p == pytest.approx(0.5)
    assert at["visrl", "A"].diff is None  # the reference itself
    # x - visrl on B: seed-averaged x [0,0,0,.5] - visrl [1,0,0,0] = [-1,0,0,.5] -> -12.5
    assert at["x", "B"].diff == pytest.approx(-12.5)


def test_unknown_reference_is_refused(grid):
    with pytest.raises(Exception, match="reference row 'nope'"):
        lb.build_entries(lb.find_runs([grid]), [("zoomworld", "accuracy")], reference="nope")


def test_three_formats(grid, tmp_path):
    runs = lb.find_runs([grid])
    entries = lb.build_entries(
        runs, [("zoomworld", "accuracy")], reference="visrl", rows=["visrl", "sft", "x"]
    )
    out = tmp_path / "board" / "table"
    written = render.write(entries, out, title="Test board", reference="visrl")
    assert [p.suffix for p in written] == [".csv", ".md", ".png"]

    frame = pd.read_csv(out.with_suffix(".csv"))
    assert list(frame.columns[:8]) == ["row", "column", "task", "metric", "value", "ci_low", "ci_high", "n"]
    row = frame[(frame.row == "sft") & (frame.column == "average")].iloc[0]
    assert row.value == 62.5 and row.diff_vs_reference == 25.0 and row.diff_p_value == 0.5
    # every cell links to its results.json, relative to the table, and the link resolves
    sft_a = frame[(frame.row == "sft") & (frame.column == "A")].iloc[0]
    assert (out.parent / sft_a.results).resolve() == (grid / "sft/A/seed0/results.json").resolve()

    md = out.with_suffix(".md").read_text()
    assert "| configuration | A | B | average |" in md
    assert "| sft | [75.0 [" in md and "](../cells/sft/A/seed0/results.json)" in md
    assert "| sft | +25.0 [" in md and "p = 0.500" in md

    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_bundle_copies_provenance_next_to_the_table(grid, tmp_path):
    entries = lb.build_entries(lb.find_runs([grid]), [("zoomworld", "accuracy")])
    stale = tmp_path / "board" / "t_runs" / "sft" / "old_base" / "seed0"  # an earlier table's run
    stale.mkdir(parents=True)
    (stale / "results.json").write_text("{}")
    render.bundle_results(entries, tmp_path / "board" / "t_runs", grid.resolve())
    assert not (tmp_path / "board" / "t_runs" / "sft" / "old_base").exists()
    render.write(entries, tmp_path / "board" / "t", formats=("md",))
    md = (tmp_path / "board" / "t.md").read_text()
    assert "](t_runs/sft/A/seed0/results.json)" in md
    assert (tmp_path / "board/t_runs/sft/A/seed0/cell.json").is_file()


def test_cli_on_plain_eval_runs(tmp_path):
    """Not only ablations: two models' eval runs, one row each."""
    write_run(tmp_path / "runs" / "one", [1, 1, 0, 0])
    r2 = write_run(tmp_path / "runs" / "two", [1, 1, 1, 0])
    cfg = json.loads((r2 / "results.json").read_text())
    cfg["config"]["model"] = "/ckpt/other"
    (r2 / "results.json").write_text(json.dumps(cfg))
    result = CliRunner().invoke(
        app,
        [
            "leaderboard",
            str(tmp_path / "runs"),
            "--out",
            str(tmp_path / "b"),
            "--format",
            "csv",
            "--reference",
            "model (cot)",
        ],
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "b.csv")
    assert list(frame.row) == ["model (cot)", "other (cot)"]
    assert frame.value.tolist() == [50.0, 75.0]
    assert frame.diff_vs_reference.tolist()[1] == 25.0
    assert not (tmp_path / "b.md").exists()


def test_cli_errors_name_the_problem(tmp_path):
    result = CliRunner().invoke(app, ["leaderboard", str(tmp_path / "missing"), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "no such run dir" in result.output
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text("{not json")
    result = CliRunner().invoke(app, ["leaderboard", str(bad), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "results.json: not a readable results file" in result.output
    write_run(tmp_path / "ok", [1, 0])
    result = CliRunner().invoke(
        app, ["leaderboard", str(tmp_path / "ok"), "--out", str(tmp_path / "b"), "--format", "pdf"]
    )
    assert result.exit_code == 2 and "unknown format(s) pdf" in result.output
