"""`ablate`: grid expansion and config precedence, the swapped-label control, filtering shared samples after
the fact, and a real grid on tiny models interrupted and resumed."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from test_generate import ScriptedModel
from typer.testing import CliRunner

from visrl_bench.cli import app
from visrl_bench.core.errors import VisrlError
from visrl_bench.experiments import ablation
from visrl_bench.experiments.ablation import load_ablation_config, run_ablation


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ablation.yaml"
    path.write_text(text)
    return path


BASE_YAML = """
data: /data/zw
bases: {llava: /ckpt/llava, qwen2_vl: /ckpt/qwen}
sft: {lr: 5.0e-4}
"""


# --- config ------------------------------------------------------------------------------------------------
def test_grid_expansion_and_precedence(tmp_path):
    cfg = load_ablation_config(
        _yaml(tmp_path, BASE_YAML + "rounds: 3\n"),
        "full",
        ["sft.max_steps=7", "generate.k=4", "seeds=[5, 6]"],
    )
    # preset < YAML < key=value, stage dicts merged key by key
    assert cfg.rounds == 3  # YAML over the preset's 2
    assert cfg.sft["lr"] == 5.0e-4 and cfg.sft["max_steps"] == "7" and cfg.sft["batch_size"] == 32
    assert cfg.generate["k"] == "4" and cfg.generate["limit"] == ablation.PRESETS["full"]["generate"]["limit"]
    assert cfg.seeds == [5, 6]
    cells = cfg.cells()
    rows = len(ablation.ROWS) + len(ablation.GRPO_ROWS)  # the full preset runs the GRPO family too
    assert len(cells) == rows * 2 * 2
    # lanes outermost (a lane's shared SFT is reused at once), rows in table order inside a lane
    assert [(r.name, b, s) for r, b, s in cells[:2]] == [("base_direct", "llava", 5), ("sft", "llava", 5)]
    assert {(b, s) for _, b, s in cells[:rows]} == {("llava", 5)}
    assert cfg.cell_dir("visrl", "llava", 5) == Path(cfg.out) / "cells" / "visrl" / "llava" / "seed5"
    # the grid may grow without invalidating finished cells; a stage setting may not
    grown = load_ablation_config(_yaml(tmp_path, BASE_YAML + "rounds: 3\n"), "full", ["seeds=[5, 6, 7]"])
    assert (
        grown.identity()
        == load_ablation_config(_yaml(tmp_path, BASE_YAML + "rounds: 3\n"), "full").identity()
    )


def test_every_paper_row_is_a_preset_row():
    names = [r.name for r in ablation.ROWS]
    assert names == [
        "base_direct", "sft", "sft_more_data", "trajectory_dpo", "visrl", "wo_step_level", "wo_diversity",
        "wo_filter", "swapped_labels",
    ]  # fmt: skip
    rows = ablation.ROW_BY_NAME
    assert rows["wo_step_level"].trainer == "dpo" and rows["wo_step_level"].generate == {}  # the same data
    assert rows["visrl"].generate == {} and rows["visrl"].trainer == "step_dpo"
    assert rows["swapped_labels"].dpo == {"swap_labels": True}
    for preset in ablation.PRESETS.values():
        assert load_ablation_config(None, None, [f"{k}={json.dumps(v)}" for k, v in {
            **preset, "data": "d", "bases": {"a": "b"}}.items()]).rounds == preset["rounds"]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        (BASE_YAML, ["sft.lrate=1"], "command line: unknown option\\(s\\) sft.lrate for SFTConfig"),
        (BASE_YAML, ["generate.kk=1"], "unknown option\\(s\\) generate.kk"),
        (BASE_YAML, ["dpo.lr=x"], "option dpo.lr takes a number, got 'x'"),
        (BASE_YAML, ["grpo.num_generations=1"], "option grpo.num_generations must be"),
        (
            BASE_YAML,
            ["task_options.bogus=1"],
            "task 'zoomworld' does not take option\\(s\\) task_options.bogus",
        ),
        (BASE_YAML, ["rows=[visrl, nope]"], "unknown row\\(s\\) nope"),
        (BASE_YAML, ["colour=red"], "unknown option\\(s\\) colour"),
        ("data: d\n", [], "`bases` names no base model"),
        (BASE_YAML, ["sft"], "not key=value"),
    ],
)
def test_bad_config_fails_before_any_cell(tmp_path, text, overrides, message):
    with pytest.raises(VisrlError, match=message):
        load_ablation_config(_yaml(tmp_path, text), "quick", overrides)


def test_cli_refuses_unknown_preset(tmp_path):
    result = CliRunner().invoke(
        app, ["ablate", "--config", str(_yaml(tmp_path, BASE_YAML)), "--preset", "huge"]
    )
    assert result.exit_code == 2 and "unknown preset 'huge'" in result.output


# --- the swapped-label control -----------------------------------------------------------------------------
def test_swap_labels_flips_about_half_and_keeps_the_context():
    from visrl_bench.trainers.dpo import swap_labels

    rows = []
    for i in range(400):
        for step in ("box", "answer", "trajectory"):
            rows.append(
                {
                    "id": f"q{i}#{step}0",
                    "step": step,
                    "chosen_box": "[1]",
                    "rejected_box": "[2]",
                    "chosen_crop": "c1.png",
                    "rejected_crop": "c2.png",
                    "chosen_answer": "right",
                    "rejected_answer": "wrong",
                    "chosen_score": 1.0,
                    "rejected_score": 0.0,
                }
            )
    out = swap_labels(rows, seed=0)
    assert out == swap_labels(rows, seed=0)  # seeded per pair id
    assert out != swap_labels(rows, seed=1)
    flipped = [r for r in out if r["labels_swapped"]]
    assert 0.45 < len(flipped) / len(out) < 0.55
    for r in flipped:
        assert (r["chosen_answer"], r["rejected_answer"]) == ("wrong", "right")
        if r["step"] == "answer":  # both answers were given the chosen crop: the context stays
            assert (r["chosen_box"], r["chosen_crop"]) == ("[1]", "c1.png")
        else:
            assert (r["chosen_box"], r["chosen_crop"], r["chosen_score"]) == ("[2]", "c2.png", 0.0)
    assert all(r["chosen_answer"] == "right" for r in out if not r["labels_swapped"])
    assert rows[0]["chosen_answer"] == "right"  # the input is not modified


# --- shared samples, filtered after the fact ---------------------------------------------------------------
class HalfRightModel(ScriptedModel):
    """Like ScriptedModel, but for about half the questions the far box's crop is read right in the first of
    its answer samples: rewards 1.0 (gold) and 0.5 (far), both "right" -> all-right, yet still a pair."""

    def generate(self, requests, settings, batch_size=1):
        out = super().generate(requests, settings, batch_size)
        for i, (r, outs) in enumerate(zip(requests, out, strict=True)):
            if len(r.images) == 2 and outs[0] == "none":
                question = r.messages[0]["content"][1]["text"].split(" Please provide")[0]
                if int(hashlib.sha1(question.encode()).hexdigest(), 16) % 2:
                    key = (hashlib.sha1(r.images[0].tobytes()).hexdigest(), question)
                    out[i] = [self.table[key][2], *outs[1:]]
        return out


@pytest.fixture(scope="module")
def zoomworld(tmp_path_factory):
    from fixtures import make_zoomworld

    return make_zoomworld(tmp_path_factory.mktemp("zw_abl") / "zw")


def test_apply_filter_equals_generating_with_the_filter(zoomworld, tmp_path):
    from visrl_bench.core.registry import TASKS
    from visrl_bench.datagen.pairs import GenerateConfig, apply_filter, generate

    task = TASKS.build("zoomworld", zoomworld, "rl")
    common = {
        "model": "scripted",
        "data": str(zoomworld),
        "k": 4,
        "perturb_prob": 0.0,
        "answer_samples": 2,
        "progress": False,
    }
    direct = generate(GenerateConfig(**common, out=str(tmp_path / "direct")), adapter=HalfRightModel(task))
    everything = generate(
        GenerateConfig(**common, filter=False, out=str(tmp_path / "all")), adapter=HalfRightModel(task)
    )
    derived = apply_filter(tmp_path / "all", tmp_path / "view", GenerateConfig(**common, out="x"))
    assert 0 < direct["kept"] < everything["kept"] == task.count()  # the filter did drop questions
    for key in ("questions_seen", "kept", "mixed", "all_right", "all_wrong", "pairs", "gold_iou"):
        assert derived[key] == direct[key], key
    assert (tmp_path / "view" / "pairs.jsonl").read_text() == (
        tmp_path / "direct" / "pairs.jsonl"
    ).read_text()
    # every image a pair names is reachable from the view
    for line in (tmp_path / "view" / "pairs.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert (tmp_path / "view" / row["image"]).is_file() and (
            tmp_path / "view" / row["chosen_crop"]
        ).is_file()
    with pytest.raises(VisrlError, match="needs a finished `generate` run with filter=false"):
        apply_filter(tmp_path / "direct", tmp_path / "v2", GenerateConfig(**common, out="x"))
    with pytest.raises(VisrlError, match="different settings \\(k\\)"):
        apply_filter(tmp_path / "all", tmp_path / "v3", GenerateConfig(**{**common, "k": 6}, out="x"))


# --- a real grid on tiny models ----------------------------------------------------------------------------
TINY_STAGES = [
    "sft.max_steps=2",
    "sft.batch_size=4",
    "sft.logging_steps=1",
    "generate.k=2",
    "generate.limit=4",
    "generate.batch_size=8",
    "generate.max_new_tokens=12",
    "dpo.batch_size=4",
    "dpo.max_steps=1",
    "dpo.logging_steps=1",
    "eval_limit=4",
    "max_new_tokens=12",
]


def _grid_config(tmp_path, zoomworld, tiny_checkpoints, rows, extra=()):
    text = (
        f"data: {zoomworld}\nout: {tmp_path / 'grid'}\nleaderboard: {tmp_path / 'board' / 'table'}\n"
        f"bases: {{llava: {tiny_checkpoints['llava']}, qwen2_vl: {tiny_checkpoints['qwen2_vl']}}}\n"
        f"rows: [{', '.join(rows)}]\n"
    )
    return load_ablation_config(_yaml(tmp_path, text), "quick", [*TINY_STAGES, *extra])


def test_grid_interrupted_then_resumed(tmp_path, zoomworld, tiny_checkpoints, monkeypatch):
    rows = ["base_direct", "sft", "visrl", "swapped_labels"]
    cfg = _grid_config(tmp_path, zoomworld, tiny_checkpoints, rows)
    real_evaluate = ablation.Lane.evaluate
    calls = []

    def interrupted(self, model, out, mode):
        if out.name != "gold_check":  # a cell's own eval, not its gold-crop check
            calls.append(out)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the third cell
        return real_evaluate(self, model, out, mode)

    monkeypatch.setattr(ablation.Lane, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_ablation(cfg, progress=False)
    done = [c for c in (tmp_path / "grid" / "cells").rglob("cell.json")]
    assert len(done) == 2 and not (tmp_path / "board" / "table.md").exists()
    first = {p: p.stat().st_mtime_ns for p in done}

    monkeypatch.setattr(ablation.Lane, "evaluate", real_evaluate)
    summary = run_ablation(cfg, progress=False)
    assert summary["done"] == summary["cells"] == 8 and summary["failed"] == 0
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())  # finished cells were not redone
    for name in ("table.csv", "table.md", "table.png"):
        assert (tmp_path / "board" / name).is_file()

    # shared work: one SFT per lane, and the full method and its control drew the same samples
    for base in ("llava", "qwen2_vl"):
        lane = tmp_path / "grid" / "shared" / base / "seed0"
        assert (lane / "sft" / "final" / "config.json").is_file()
        cells = {
            r: json.loads((cfg.cell_dir(r, base, 0) / "cell.json").read_text())
            for r in ("sft", "visrl", "swapped_labels")
        }
        sft_model = str((lane / "sft" / "final").resolve())
        assert cells["sft"]["model"] == sft_model
        full, control = cells["visrl"]["generate_stats"], cells["swapped_labels"]["generate_stats"]
        assert len(full) == 1 and full[0]["derived_from"] == control[0]["derived_from"]
        assert full[0]["questions_seen"] == 4
        # where the round's pairs came from, relative to the grid's folder
        assert (Path(cfg.out) / full[0]["samples"] / "stats.json").is_file()
        # every cell's final model is also asked from the gold crop: reading must survive training
        assert all(0 <= cells[r]["gold_crop_accuracy"] <= 100 for r in cells)
        trained = cfg.cell_dir("visrl", base, 0) / "work" / "round_1" / "train"
        # a round either trained on its pairs or, with none, kept the policy on the record
        assert (trained / "train_summary.json").is_file() or (trained / "no_pairs.json").is_file()

    # a rerun does nothing; a changed stage setting is refused instead of mixing incomparable cells
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "grid" / "cells").rglob("results.json")}
    assert run_ablation(cfg, progress=False)["done"] == 8
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "grid" / "cells").rglob("results.json")}
    changed = _grid_config(tmp_path, zoomworld, tiny_checkpoints, rows, ["sft.max_steps=3"])
    with pytest.raises(VisrlError, match="different settings \\(sft\\)"):
        run_ablation(changed, progress=False)

    md = (tmp_path / "board" / "table.md").read_text()
    # a rerun over one of the two bases leaves the two-base table as it is
    alone = _grid_config(tmp_path, zoomworld, tiny_checkpoints, rows)
    alone.bases = {"llava": alone.bases["llava"]}
    assert "qwen2_vl" in run_ablation(alone, progress=False)["leaderboard_skipped"]
    assert (tmp_path / "board" / "table.md").read_text() == md
    assert "| configuration | llava | qwen2_vl | average |" in md
    assert "## Which of the paper's findings reproduce here" in md
    # each claim is judged on accuracy, with where the models look (focus IoU) beside it
    claim = next(line for line in md.splitlines() if line.startswith("- **RL improves on its SFT warm-up**"))
    assert re.search(r"visrl − sft = [+-]\d+\.\d points .*; focus IoU: average: [+-]\d+\.\d \[", claim)
    assert re.search(r"- \*\*control\*\* — swapped_labels − sft = .*; focus IoU [+-]\d+\.\d \[", md)
    assert "](table_runs/visrl/llava/seed0/results.json)" in md
    # a DPO round's cost: 4 questions x 2 boxes, each answered twice (the tiny models may give no pair)
    assert re.search(r"\| visrl \| llava \| 8 \| 16 \| \d+ \| [\d,]+ \| \d+ \| \d+ \| \d+ \|", md)
    assert "Gold-crop accuracy (%) of each cell's final model" in md and "| swapped_labels | " in md


def test_a_base_retrained_in_place_is_not_resumed(tmp_path, zoomworld, tiny_checkpoints):
    """The same base path with other weights (a base retrained by its recipe) would reuse the old base's SFT
    models and cells: the grid refuses it while that base has work in `out`, and only for that base. Bases
    may be added or dropped (the grid's extent), and a base retrained before its lanes began is taken. A
    grid written before the weights were part of its identity still resumes."""
    import shutil

    from visrl_bench.core.rundir import changed_keys
    from visrl_bench.experiments.ablation.grid import _resumable_identity

    bases = {a: tmp_path / a for a in ("llava", "qwen2_vl")}
    for arch, path in bases.items():
        shutil.copytree(tiny_checkpoints[arch], path)
    cfg = _grid_config(tmp_path, zoomworld, {a: str(p) for a, p in bases.items()}, ["base_direct"])
    before = cfg.identity()
    assert changed_keys(before, cfg.identity()) == []
    weights = next(bases["llava"].glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one more training step's worth of change, in the tensor data
    weights.write_bytes(bytes(data))
    assert changed_keys(before, cfg.identity()) == ["weights"]
    grid = tmp_path / "grid"
    grid.mkdir()
    (grid / "ablation.json").write_text(json.dumps({"identity": before}))
    # no work of the retrained base yet: taken, and recorded with its new weights
    assert _resumable_identity(cfg, before, cfg.identity())["weights"] == cfg.identity()["weights"]
    (grid / "cells" / "base_direct" / "llava" / "seed0").mkdir(parents=True)  # begun, nothing made yet
    assert _resumable_identity(cfg, before, cfg.identity())["weights"] == cfg.identity()["weights"]
    (grid / "cells" / "base_direct" / "llava" / "seed0" / "cell.json").write_text("{}")
    with pytest.raises(VisrlError, match="work of base\\(s\\) llava made from another weights"):
        run_ablation(cfg, progress=False)
    # a base whose folder did not exist when the grid began: nothing was made from it
    missing = {**before, "weights": {**before["weights"], "llava": ""}}
    assert _resumable_identity(cfg, missing, cfg.identity())["weights"] == cfg.identity()["weights"]
    older = {k: v for k, v in before.items() if k != "weights"}
    assert changed_keys(older, cfg.identity()) == []
    assert _resumable_identity(cfg, older, cfg.identity()) == cfg.identity()

    # the extent: a grid of llava alone resumes one of both bases, and the other base's record is kept
    alone = _grid_config(tmp_path, zoomworld, {a: str(p) for a, p in bases.items()}, ["base_direct"])
    alone.bases = {"llava": str(bases["llava"])}
    merged = _resumable_identity(alone, cfg.identity(), alone.identity())
    assert set(merged["weights"]) == {"llava", "qwen2_vl"}
    assert _resumable_identity(cfg, alone.identity(), cfg.identity()) == cfg.identity()
    # a setting every cell depends on still refuses the whole grid
    paths = {a: str(p) for a, p in bases.items()}
    lr = _grid_config(tmp_path, zoomworld, paths, ["base_direct"], ["sft.lr=1"])
    with pytest.raises(VisrlError, match="different settings \\(sft\\)"):
        _resumable_identity(lr, cfg.identity(), lr.identity())


def test_a_failing_cell_is_recorded_and_the_grid_goes_on(tmp_path, zoomworld, tiny_checkpoints):
    text = (
        f"data: {zoomworld}\nout: {tmp_path / 'grid'}\n"
        f"bases: {{good: {tiny_checkpoints['llava']}, broken: {tmp_path / 'no_such_ckpt'}}}\n"
        "rows: [base_direct]\n"
    )
    cfg = load_ablation_config(_yaml(tmp_path, text), "quick", ["eval_limit=2", "max_new_tokens=4"])
    summary = run_ablation(cfg, progress=False)
    assert (summary["done"], summary["failed"]) == (1, 1)
    error = json.loads((cfg.cell_dir("base_direct", "broken", 0) / "error.json").read_text())
    assert "no_such_ckpt" in error["error"]
    assert (cfg.cell_dir("base_direct", "good", 0) / "results.json").is_file()


def test_the_terminal_shows_cells_and_the_table_not_stage_logs(tmp_path, zoomworld, tiny_checkpoints):
    """`ablate` prints one line per finished cell and the final tables; what the stages print (TRL's
    per-step dicts, library warnings) is in the lane's log file, not on the terminal."""
    text = (
        f"data: {zoomworld}\nout: {tmp_path / 'grid'}\nleaderboard: {tmp_path / 'board' / 'table'}\n"
        f"bases: {{llava: {tiny_checkpoints['llava']}}}\nrows: [base_direct, sft, wo_step_level]\n"
    )
    args = ["ablate", "--config", str(_yaml(tmp_path, text)), "--preset", "quick", *TINY_STAGES]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for row in ("base_direct", "sft", "wo_step_level"):  # the bar shares the stream: count, not lines
        assert result.output.count(f"{row} / llava / seed0: accuracy ") == 1, result.output
    assert "| configuration | llava |" in result.output and "## zoomworld: focus_iou" in result.output
    assert result.output.rstrip().splitlines()[-1].startswith("3/3 cells done, 0 failed")
    assert "{'loss'" not in result.output and "'epoch'" not in result.output
    assert "Warning" not in result.output, result.output
    log = tmp_path / "grid" / "logs" / "llava-seed0.log"
    assert log.is_file() and "{'loss'" not in log.read_text()  # no dicts at all: log.csv has the numbers
    trained = tmp_path / "grid" / "shared" / "llava" / "seed0" / "sft" / "log.csv"
    assert "loss" in trained.read_text().splitlines()[0]  # the per-step numbers are kept, in log.csv


def test_more_lanes_than_jobs_in_worker_processes(tmp_path, zoomworld, tiny_checkpoints, capfd):
    """`--jobs 2` over 4 lanes: each worker process runs two lanes in a row, its output in each lane's log
    (nothing of it reaches the terminal's file descriptors), every cell reported once."""
    text = (
        f"data: {zoomworld}\nout: {tmp_path / 'grid'}\nleaderboard: {tmp_path / 'board' / 'table'}\n"
        f"bases: {{llava: {tiny_checkpoints['llava']}, qwen2_vl: {tiny_checkpoints['qwen2_vl']}}}\n"
        "rows: [base_direct]\nseeds: [0, 1]\n"
    )
    args = ["ablate", "--config", str(_yaml(tmp_path, text)), "--preset", "quick", "--jobs", "2"]
    result = CliRunner().invoke(app, [*args, "--no-progress", "eval_limit=2", "max_new_tokens=4"])
    assert result.exit_code == 0, result.output
    for base in ("llava", "qwen2_vl"):
        for seed in (0, 1):
            assert result.output.count(f"base_direct / {base} / seed{seed}: accuracy ") == 1, result.output
            assert (tmp_path / "grid" / "logs" / f"{base}-seed{seed}.log").is_file()
    assert "4/4 cells done, 0 failed" in result.output
    leaked = capfd.readouterr()
    assert leaked.out.strip() == "" and leaked.err.strip() == "", leaked


def test_grpo_findings_say_which_family_wins_and_judge_the_control():
    """Per base and on the average: a − b paired over the questions, the winner named only when the CI
    excludes 0, and the permuted control judged by whether it lies above SFT."""
    from types import SimpleNamespace

    from visrl_bench.experiments.ablation.findings import _grpo_lines

    ids = [f"q{i}" for i in range(200)]
    scores = {
        "sft": {q: float(i % 2) for i, q in enumerate(ids)},  # 50%
        "visrl": {q: float(i % 4 != 0) for i, q in enumerate(ids)},  # 75%
        "grpo": {q: float(i % 4 != 0) for i, q in enumerate(ids)},  # the same questions right as visrl
        "grpo_permuted_rewards": {q: float(i % 4 == 0) for i, q in enumerate(ids)},  # 25%
    }
    at = {
        (row, col, m): SimpleNamespace(scores=s)
        for row, s in scores.items()
        for col in ("average", "llava")
        for m in ("accuracy", "focus_iou")
    }
    cfg = SimpleNamespace(rows=list(scores))
    text = "\n".join(_grpo_lines(cfg, at, ["average", "llava"], "accuracy"))
    assert "grpo − visrl: average: accuracy +0.0 [+0.0, +0.0], p = 1 (no difference detected)" in text
    assert "grpo − sft: average: accuracy +25.0" in text and "(grpo wins)" in text
    assert "grpo_permuted_rewards − sft: average: accuracy -25.0" in text and "(not above sft)" in text
    assert "llava: accuracy" in text and "grpo_zoom" not in text  # no grpo_zoom row, no claim
    at.update({(r, c, m): SimpleNamespace(scores=scores["visrl"]) for r, c, m in at if r.endswith("rewards")})
    assert "ABOVE sft" in "\n".join(_grpo_lines(cfg, at, ["average"], "accuracy"))


def test_grpo_rows_run_in_the_grid_and_record_their_compute(tmp_path, zoomworld, tiny_checkpoints):
    from visrl_bench.experiments.ablation import PRESETS

    rows = ["sft", "grpo", "grpo_permuted_rewards", "grpo_zoom"]
    assert set(rows) <= set(PRESETS["full"]["rows"])  # the full table has them
    tiny_grpo = ["grpo.max_steps=2", "grpo.batch_size=4", "grpo.num_generations=4", "grpo.limit=4"]
    tiny_grpo += ["grpo.reply_max_new_tokens=5", "grpo.logging_steps=1"]
    cfg = _grid_config(tmp_path, zoomworld, tiny_checkpoints, rows, tiny_grpo)
    # multi-turn zoom rollouts need a Qwen-style processor: LLaVA's lane has no grpo_zoom cell, and the
    # grid is complete (its leaderboard written) without one
    assert cfg.lane_rows("llava") == ["sft", "grpo", "grpo_permuted_rewards"]
    assert cfg.lane_rows("qwen2_vl") == rows
    summary = run_ablation(cfg, jobs=1, progress=False)
    assert summary["done"] == summary["cells"] == 7 and summary["failed"] == 0
    assert not cfg.cell_dir("grpo_zoom", "llava", 0).exists()
    md = (tmp_path / "board" / "table.md").read_text()
    assert "| grpo_zoom | - | [0.0 [0.0, 0.0]](table_runs/grpo_zoom/qwen2_vl/seed0/results.json) | - |" in md
    # the families' cost side by side: GRPO samples its 8 boxes (and their answers) inside training
    assert re.search(r"\| grpo \| llava \| 8 \| 8 \| - \| [\d,]+ \| in training \| \d+ \| \d+ \|", md)
    zoom = json.loads((cfg.cell_dir("grpo_zoom", "qwen2_vl", 0) / "cell.json").read_text())
    assert zoom["mode"] == "zoom" and zoom["grpo_overrides"] == {"rollout": "zoom"}
    assert zoom["grpo"]["answer_rollouts"] == 8 and zoom["grpo"]["crops_per_trajectory"] >= 1
    assert "zoom_crops" in zoom["metrics"]
    # the findings judge the family per base, paired over the questions, the permuted control included
    assert "## The GRPO family" in md
    assert re.search(r"- \*\*box-step GRPO against its SFT warm-up\*\* — grpo − sft: average: accuracy", md)
    assert re.search(r"qwen2_vl: accuracy [+-]\d+\.\d \[.*\] \((no difference detected|\w+ wins)\)", md)
    assert re.search(r"grpo_permuted_rewards − sft: .*\((not above sft|ABOVE sft)", md)
    assert "multi-turn zoom GRPO against box-step GRPO** — grpo_zoom − grpo: qwen2_vl: accuracy" in md
    for row in ("grpo", "grpo_permuted_rewards"):
        info = json.loads((cfg.cell_dir(row, "qwen2_vl", 0) / "cell.json").read_text())
        assert info["trainer"] == "grpo" and info["grpo"]["steps"] == 2
        assert info["grpo"]["sampled_boxes"] == info["grpo"]["answer_rollouts"] == 8
    permuted = json.loads((cfg.cell_dir("grpo_permuted_rewards", "qwen2_vl", 0) / "cell.json").read_text())
    assert permuted["grpo_overrides"] == {"permute_rewards": True}
    stamp = (cfg.cell_dir("grpo", "qwen2_vl", 0) / "cell.json").stat().st_mtime_ns
    run_ablation(cfg, jobs=1, progress=False)  # a rerun skips finished cells
    assert (cfg.cell_dir("grpo", "qwen2_vl", 0) / "cell.json").stat().st_mtime_ns == stamp


def test_cells_run_as_submitit_jobs_and_a_rerun_skips_them(tmp_path, zoomworld, tiny_checkpoints):
    """`--scheduler local`: each lane a job of submitit's local executor (a process of its own, with its
    stdout and pickled result under OUT/submitit/); the same cells and the same resume as the pool."""
    text = (
        f"data: {zoomworld}\nout: {tmp_path / 'grid'}\nleaderboard: {tmp_path / 'board' / 'table'}\n"
        f"bases: {{llava: {tiny_checkpoints['llava']}, qwen2_vl: {tiny_checkpoints['qwen2_vl']}}}\n"
        "rows: [base_direct]\n"
    )
    args = ["ablate", "--config", str(_yaml(tmp_path, text)), "--preset", "quick", "--jobs", "2"]
    args += ["--scheduler", "local", "--no-progress", "eval_limit=2", "max_new_tokens=4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2/2 cells done, 0 failed" in result.output
    for base in ("llava", "qwen2_vl"):
        assert result.output.count(f"base_direct / {base} / seed0: accuracy ") == 1, result.output
    jobs = sorted((tmp_path / "grid" / "submitit").glob("*/*_result.pkl"))
    assert len(jobs) == 2  # two submitit jobs, one per lane
    cells = sorted((tmp_path / "grid" / "cells").rglob("cell.json"))
    stamps = [c.stat().st_mtime_ns for c in cells]
    rerun = CliRunner().invoke(app, args)
    assert rerun.exit_code == 0 and "2/2 cells done" in rerun.output
    assert [c.stat().st_mtime_ns for c in cells] == stamps  # finished cells are not run again
    bad = CliRunner().invoke(app, [*(a if a != "local" else "cron" for a in args)])
    assert bad.exit_code == 2 and "scheduler must be one of pool, local, slurm" in bad.output
    stray = CliRunner().invoke(app, [*args, "--slurm", "slurm_partition=gpu"])
    assert stray.exit_code == 2 and "--slurm options are for --scheduler slurm" in stray.output
    slurm = [*(a if a != "local" else "slurm" for a in args)]
    typo = CliRunner().invoke(app, [*slurm, "--slurm", "slurm_partiton=gpu"])
    assert typo.exit_code == 2 and "--slurm slurm_partiton: not a submitit parameter" in typo.output
    assert "did you mean slurm_partition?" in typo.output
    wrong = CliRunner().invoke(app, [*slurm, "--slurm", "gpus_per_node=two"])
    assert wrong.exit_code == 2 and "--slurm gpus_per_node: expected" in wrong.output


def test_a_pool_worker_exits_when_its_grid_is_killed(tmp_path):
    """A killed grid (SIGKILL, an OOM kill, `pkill` of its command line) must not leave its lane workers
    writing into cells that the restarted grid writes too."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "grid.py"
    script.write_text(
        "import multiprocessing, os, sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from visrl_bench.experiments.ablation.grid import _exit_with_parent\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn'),\n"
        "                               initializer=_exit_with_parent, initargs=(os.getpid(), 0.1))\n"
        "    print(pool.submit(os.getpid).result(), flush=True)\n"
        "    pool.submit(time.sleep, 120)\n"
        "    time.sleep(120)\n"
    )

    def alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return False
        return state != "Z"  # a zombie has exited; only its reaper is missing

    grid = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(grid.stdout.readline())
        os.kill(grid.pid, signal.SIGKILL)
        grid.wait()

        deadline = time.monotonic() + 20
        while alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(worker)
    finally:
        grid.kill()
        if "worker" in locals() and alive(worker):
            os.kill(worker, signal.SIGKILL)
