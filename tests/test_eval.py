"""`visrl-bench eval` on tiny LLaVA / Qwen2-VL / Qwen2.5-VL checkpoints built from config."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_ARCHS
from fixtures import hr_rows, make_vstar_folders, write_hr_tsv
from typer.testing import CliRunner

from visrl_bench.cli import app
from visrl_bench.core.boxes import Box, format_box
from visrl_bench.core.errors import DataError
from visrl_bench.core.registry import MODES, TASKS
from visrl_bench.core.rundir import read_records
from visrl_bench.eval.evaluate import EvalConfig, TaskSpec, evaluate, run_window
from visrl_bench.models import GenerationSettings
from visrl_bench.reasoning import COT

runner = CliRunner()
GOLD_TASKS = ("vstar_bench", "refcoco", "refcoco+", "refcocog")


def _cli_eval(checkpoint, fixtures, tasks, mode, out, *extra):
    args = [
        "eval",
        "--model",
        str(checkpoint),
        "--mode",
        mode,
        "--output",
        str(out),
        "--max-new-tokens",
        "6",
        "--batch-size",
        "3",
        "--no-progress",
        "--crop-min-side",
        "16",
    ]
    for name in tasks:
        data, _ = fixtures[name]
        args += ["--task", name, "--data", str(data)]
    return runner.invoke(app, [*args, *extra])


@pytest.mark.parametrize("arch", TINY_ARCHS)
@pytest.mark.parametrize("mode", MODES.names())
def test_every_mode_runs_every_task_through_the_cli(arch, mode, tiny_checkpoints, task_fixtures, tmp_path):
    tasks = GOLD_TASKS if mode == "gt_box" else TASKS.names()
    result = _cli_eval(tiny_checkpoints[arch], task_fixtures, tasks, mode, tmp_path / "run")
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    records = read_records(tmp_path / "run" / "samples.jsonl")
    for name in tasks:
        task_results = results["results"][name]
        recs = [r for r in records if r["task"] == name]
        assert task_results["n"] > 0 and task_results["errors"] == 0 and recs
        for r in recs:
            assert r["steps"][-1]["output"] == r["prediction"] and isinstance(r["prediction"], str)
            if MODES.load(mode).two_turns:
                assert r["steps"][0]["step"] == "box" and "focus" in r
        if TASKS.load(name).has_gold_boxes and mode != "direct":
            assert "focus_iou" in task_results and "focus_iou_ci95" in task_results
    if mode == "gt_box":  # the gold box, written in the model's convention, parses back to itself
        assert all(r["focus"]["iou"] == pytest.approx(1.0, abs=0.02) for r in records)
    prov = results["provenance"]
    assert prov["model"]["arch"] == arch and prov["mode"] == mode
    assert len(prov["prompt_sha256"][f"mode:{mode}"]) == 64
    for name in tasks:  # every record of the run was timed, and the rate is what the counts say
        timing = results["timing"][name]
        assert timing["samples"] == sum(r["task"] == name for r in records)
        seconds = timing["seconds"]  # rounded to 1 ms
        low, high = timing["samples"] / (seconds + 6e-4), timing["samples"] / max(seconds - 6e-4, 1e-9)
        # the rate is rounded to 3 decimals as well
        assert low - 6e-4 <= timing["samples_per_second"] <= high + 6e-4


class ScriptedAdapter:
    """A stand-in model that answers the box step with a fixed text in its convention (test double)."""

    arch = "scripted"
    path = "scripted"

    def __init__(self, convention, box_text, resized=None):
        self.box_convention = convention
        self.box_text = box_text
        self.resized = resized
        self.requests = []

    def input_size(self, image):
        return self.resized

    def describe(self):
        return {"arch": self.arch, "box_convention": self.box_convention.value}

    def generate(self, requests, settings, batch_size=1):
        self.requests += requests
        return [[self.box_text] if len(r.images) == 1 else ["A"] for r in requests]


@pytest.mark.parametrize("convention", ["pixel", "norm", "norm1000", "square_norm", "resized_pixel"])
def test_turn_one_box_is_converted_for_each_convention(convention, tmp_path):
    from fixtures import write_image

    from visrl_bench.core.boxes import BoxConvention
    from visrl_bench.task import ImageSource, Sample

    write_image(tmp_path / "wide.png", size=(200, 100))
    sample = Sample(
        id="s",
        question="q?",
        answer="A",
        image=ImageSource("x", path=tmp_path / "wide.png"),
        gold_boxes=[Box(20, 10, 60, 40)],
        meta={},
    )
    known = Box(20, 10, 60, 40)  # on a 200 x 100 image
    resized = (280, 140) if convention == "resized_pixel" else None
    text = format_box(known, convention, (200, 100), resized)
    adapter = ScriptedAdapter(BoxConvention(convention), f"The region is {text}.", resized)

    class OneTask:
        name = "one"

        def prompt(self, s):
            return "question?"

        def score(self, s, prediction, row=None):
            return {"id": s.id, "prediction": prediction, "scores": {}}

    cfg = EvalConfig(model="x", tasks=[], mode="cot", crop_min_side=50)
    rec = run_window(OneTask(), [(0, sample)], adapter, COT, cfg)[0]
    assert rec["focus"]["box"] == pytest.approx([20, 10, 60, 40], abs=0.5)
    # 40 x 30 box grows to the 50 px minimum around its centre (40, 25), shifted inside: x 15-65, y 0-50
    assert rec["focus"]["crop"] == [15, 0, 65, 50]
    second_image = adapter.requests[-1].images[1]
    assert second_image.size == (50, 50)
    assert rec["focus"]["iou"] == pytest.approx(1.0, abs=0.02)


def test_qwen25_input_size_is_what_its_processor_produces(tiny_adapters):
    from PIL import Image

    adapter = tiny_adapters["qwen2_5_vl"]
    ip = adapter.processor.image_processor
    for size in [(200, 100), (64, 48), (31, 300), (1000, 20)]:
        image = Image.new("RGB", size)
        grid = ip(images=[image], return_tensors="pt")["image_grid_thw"][0].tolist()
        assert adapter.input_size(image) == (grid[2] * ip.patch_size, grid[1] * ip.patch_size)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_batched_and_unbatched_greedy_agree(arch, tiny_adapters, task_fixtures, tmp_path):
    adapter = tiny_adapters[arch]
    specs = [TaskSpec(n, str(task_fixtures[n][0])) for n in ("vstar_bench", "textvqa", "hr_bench_4k")]
    predictions = []
    for batch in (1, 5):
        cfg = EvalConfig(
            model="tiny",
            tasks=specs,
            mode="cot",
            batch_size=batch,
            generation=GenerationSettings(max_new_tokens=8),
            crop_min_side=16,
        )
        evaluate(cfg, tmp_path / f"b{batch}", adapter=adapter, progress=False)
        recs = read_records(tmp_path / f"b{batch}" / "samples.jsonl")
        predictions.append([(r["task"], r["id"], r["steps"][0]["output"], r["prediction"]) for r in recs])
    assert predictions[0] == predictions[1]


def test_missing_image_is_an_error_record(tiny_adapters, tmp_path):
    data = make_vstar_folders(tmp_path / "v")
    (data / "direct_attributes" / "sa_2.jpg").unlink()
    cfg = EvalConfig(
        model="tiny",
        tasks=[TaskSpec("vstar_bench", str(data))],
        mode="cot",
        generation=GenerationSettings(max_new_tokens=4),
    )
    results = evaluate(cfg, tmp_path / "run", adapter=tiny_adapters["llava"], progress=False)
    assert results["results"]["vstar_bench"]["errors"] == 1 and results["results"]["vstar_bench"]["n"] == 4
    bad = [r for r in read_records(tmp_path / "run" / "samples.jsonl") if r.get("error")]
    assert "sa_2.jpg" in bad[0]["error"] and bad[0]["scores"]["accuracy"] == 0.0


def test_run_dir_guards(tiny_adapters, task_fixtures, tmp_path):
    spec = [TaskSpec("textvqa", str(task_fixtures["textvqa"][0]))]
    cfg = EvalConfig(model="tiny", tasks=spec, generation=GenerationSettings(max_new_tokens=4))
    adapter = tiny_adapters["qwen2_vl"]
    first = evaluate(cfg, tmp_path / "run", adapter=adapter, progress=False)
    with pytest.raises(Exception, match="already holds this run; pass --resume"):
        evaluate(cfg, tmp_path / "run", adapter=adapter, progress=False)
    other = EvalConfig(
        model="tiny", tasks=spec, mode="center_box", generation=GenerationSettings(max_new_tokens=4)
    )
    with pytest.raises(Exception, match="different config \\(differs in: mode\\)"):
        evaluate(other, tmp_path / "run", adapter=adapter, resume=True, progress=False)
    again = evaluate(
        cfg, tmp_path / "run", adapter=adapter, resume=True, progress=False
    )  # nothing left to do
    assert again["results"] == first["results"]
    assert (
        evaluate(other, tmp_path / "run", adapter=adapter, overwrite=True, progress=False)["config"]["mode"]
        == "center_box"
    )


def test_gt_box_needs_gold_boxes(task_fixtures, tmp_path):
    cfg = EvalConfig(
        model="tiny", tasks=[TaskSpec("textvqa", str(task_fixtures["textvqa"][0]))], mode="gt_box"
    )
    with pytest.raises(Exception, match="gt_box needs gold focus boxes"):
        evaluate(cfg, tmp_path / "run", adapter=object(), progress=False)


def test_bad_checkpoints(tmp_path):
    from visrl_bench.models import load_model

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no config\.json"):
        load_model(tmp_path / "empty")
    (tmp_path / "weird").mkdir()
    (tmp_path / "weird" / "config.json").write_text('{"model_type": "blip"}')
    with pytest.raises(
        DataError,
        match="unsupported architecture model_type='blip'; supported: llava, qwen2_5_vl, qwen2_vl, qwen3_vl",
    ):
        load_model(tmp_path / "weird")
    result = runner.invoke(
        app,
        [
            "eval",
            "--model",
            str(tmp_path / "weird"),
            "--task",
            "textvqa",
            "--data",
            str(tmp_path),
            "--output",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2 and "error:" in result.stderr


def _line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def test_sigkill_then_resume_equals_uninterrupted(tiny_checkpoints, tmp_path):
    data = write_hr_tsv(tmp_path / "hr" / "hr_bench_4k.tsv", hr_rows(n_questions=40, cycles=2))
    base = [
        sys.executable,
        "-m",
        "visrl_bench.cli",
        "eval",
        "--model",
        str(tiny_checkpoints["qwen2_vl"]),
        "--task",
        "hr_bench_4k",
        "--data",
        str(data),
        "--mode",
        "cot",
        "--max-new-tokens",
        "24",
        "--batch-size",
        "2",
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run([*base, "--output", str(tmp_path / "full")], check=True, env=env, capture_output=True)

    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [*base, "--output", str(run)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while _line_count(run / "samples.jsonl") < 16 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _line_count(run / "samples.jsonl")
    assert 16 <= done < 80, f"the kill should land mid-run, {done} of 80 samples were done"
    with (run / "samples.jsonl").open("ab") as f:  # as if the kill had landed in the middle of a write
        f.write(b'{"task": "hr_bench_4k", "position": 999, "id": "half-writ')

    subprocess.run([*base, "--output", str(run), "--resume"], check=True, env=env, capture_output=True)
    full = json.loads((tmp_path / "full" / "results.json").read_text())
    resumed = json.loads((run / "results.json").read_text())
    assert resumed["results"] == full["results"] and resumed["config"] == full["config"]
    ids = [r["id"] for r in read_records(run / "samples.jsonl")]
    assert len(ids) == len(set(ids)) == 80  # nothing lost, nothing twice
    by_id = {r["id"]: r["prediction"] for r in read_records(tmp_path / "full" / "samples.jsonl")}
    assert {r["id"]: r["prediction"] for r in read_records(run / "samples.jsonl")} == by_id


def test_cli_summary_and_multi_task_options(tiny_checkpoints, task_fixtures, tmp_path):
    result = _cli_eval(
        tiny_checkpoints["llava"],
        task_fixtures,
        ["vstar_bench", "textvqa"],
        "direct",
        tmp_path / "run",
        "-o",
        "textvqa.ocr=true",
        "-o",
        "vstar_bench.shuffle=false",
        "--limit",
        "2",
    )
    assert result.exit_code == 0, result.output
    assert "vstar_bench: n=2" in result.output and "textvqa: n=2" in result.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["provenance"]["task_config"]["textvqa"]["ocr"] is True
    assert results["provenance"]["task_config"]["vstar_bench"]["shuffle"] is False
    recs = read_records(tmp_path / "run" / "samples.jsonl")
    assert "Reference OCR token" in next(r for r in recs if r["task"] == "textvqa")["steps"][0]["prompt"]


def test_eval_from_yaml_config_with_flag_override(tiny_checkpoints, task_fixtures, tmp_path):
    import yaml

    cfg = {
        "model": str(tiny_checkpoints["qwen2_vl"]),
        "mode": "cot",
        "batch_size": 2,
        "max_new_tokens": 5,
        "tasks": [{"name": "textvqa", "data": str(task_fixtures["textvqa"][0]), "options": {"ocr": True}}],
        "output": str(tmp_path / "from-yaml"),
        "progress": False,
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["eval", "--config", str(path), "--mode", "center_box"])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "from-yaml" / "results.json").read_text())
    assert results["config"]["mode"] == "center_box"  # the flag wins over the file
    assert results["config"]["batch_size"] == 2 and results["config"]["generation"]["max_new_tokens"] == 5
    assert results["provenance"]["task_config"]["textvqa"]["ocr"] is True

    # every option the file sets is applied, nested ones too: flags the user did not type never override
    nested = {"max_new_tokens": 6, "temperature": 0.7, "top_p": 0.9, "top_k": 5, "seed": 4}
    path.write_text(yaml.safe_dump({**{k: v for k, v in cfg.items() if k != "max_new_tokens"},
                                    "seed": 3, "limit": 2, "generation": nested}))  # fmt: skip
    result = runner.invoke(app, ["eval", "--config", str(path), "--overwrite"])
    assert result.exit_code == 0, result.output
    recorded = json.loads((tmp_path / "from-yaml" / "results.json").read_text())["config"]
    assert recorded["generation"] == {**nested, "num_return_sequences": 1}
    assert recorded["seed"] == 3 and recorded["limit"] == 2
    assert recorded["batch_size"] == 2 and recorded["mode"] == "cot"
    result = runner.invoke(app, ["eval", "--config", str(path), "--overwrite", "--max-new-tokens", "7"])
    recorded = json.loads((tmp_path / "from-yaml" / "results.json").read_text())["config"]
    assert recorded["generation"]["max_new_tokens"] == 7 and recorded["generation"]["temperature"] == 0.7
    for bad, message in (
        ({"temperature": {"x": 1}}, "option generation.temperature takes a number"),
        ({"tempreature": 1}, "unknown option(s) generation.tempreature"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
    ):
        path.write_text(yaml.safe_dump({**cfg, "generation": bad}))
        result = runner.invoke(app, ["eval", "--config", str(path), "--overwrite"])
        assert result.exit_code == 2 and message in result.stderr, (bad, result.output)
    path.write_text(yaml.safe_dump({**cfg, "generation": {"max_new_tokens": 3}}))
    result = runner.invoke(app, ["eval", "--config", str(path)])
    assert (
        result.exit_code == 2
        and "max_new_tokens given both at the top level and under generation" in result.stderr
    )

    path.write_text(yaml.safe_dump({**cfg, "bach_size": 3}))
    result = runner.invoke(app, ["eval", "--config", str(path)])
    assert result.exit_code == 2 and "unknown option(s) bach_size" in result.stderr
    path.write_text("model: [unclosed\n")
    result = runner.invoke(app, ["eval", "--config", str(path)])
    assert result.exit_code == 2 and "eval.yaml:2: malformed YAML" in result.stderr
