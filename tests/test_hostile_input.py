"""Hostile input, as a demanding new user meets it: corrupt images, aspect ratios a processor refuses, NaN and
inverted gold boxes, numbers out of range. Every good sample is still scored; every bad one is a counted error
record naming its file; samples.jsonl stays strict JSON; nothing already written is lost."""

import base64
import json
import math
import re

import pytest
from fixtures import hr_rows, make_refcoco_parquet, make_vstar_folders, png_bytes, write_hr_tsv, write_image
from typer.testing import CliRunner

from visrl_bench.cli import app
from visrl_bench.core.boxes import BoxConvention, parse_box
from visrl_bench.core.errors import DataError, VisrlError
from visrl_bench.core.registry import TASKS
from visrl_bench.core.rundir import read_records
from visrl_bench.eval.aggregate import aggregate_run
from visrl_bench.eval.evaluate import EvalConfig, TaskSpec, evaluate
from visrl_bench.eval.scoring import score_task
from visrl_bench.models import GenerationSettings

runner = CliRunner()


def _refuse(token):
    raise ValueError(f"non-JSON constant {token}")


def strict_json_lines(path):
    """Each line parsed with NaN / Infinity refused, as jq or a strict reader would."""
    return [json.loads(line, parse_constant=_refuse) for line in path.read_text().splitlines()]


def _hostile_vstar(root):
    """V*Bench folders: the four good fixture questions plus one of each kind of bad input."""
    make_vstar_folders(root)
    folder = root / "direct_attributes"

    def question(stem, bbox):
        meta = {"target_object": ["thing"], "bbox": [bbox], "question": f"What is {stem}?"}
        meta["options"] = ["red", "blue", "green", "white"]
        (folder / f"{stem}.json").write_text(
            json.dumps(meta)
        )  # json writes NaN as a bare NaN, as pandas does

    write_image(folder / "sa_4.jpg")
    (folder / "sa_4.jpg").write_bytes((folder / "sa_4.jpg").read_bytes()[:60])  # truncated download
    question("sa_4", [4, 6, 10, 8])
    write_image(folder / "sa_5.jpg", size=(4000, 16))  # 250:1, past Qwen's 200:1 limit
    question("sa_5", [100, 2, 300, 10])
    write_image(folder / "sa_6.jpg")
    question("sa_6", [math.nan, 2, math.nan, 9])
    write_image(folder / "sa_7.jpg")
    question("sa_7", [20, 5, -4, 6])  # negative width
    return root


BAD = {
    "direct_attributes/sa_4": r"sa_4\.jpg: unreadable image",
    "direct_attributes/sa_6": r"sa_6\.json: gold bbox has a non-finite value",
    "direct_attributes/sa_7": r"sa_7\.json: gold bbox has no area \(width -4",
}
WIDE = "direct_attributes/sa_5"


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_an_eval_over_good_and_bad_samples_scores_the_good_and_counts_the_bad(
    arch, tiny_checkpoints, tmp_path
):
    data = _hostile_vstar(tmp_path / "vstar")
    cfg = EvalConfig(
        model=str(tiny_checkpoints[arch]),
        tasks=[TaskSpec("vstar_bench", str(data))],
        mode="cot",
        batch_size=3,  # the 200:1 image shares its batch with good samples
        crop_min_side=16,
        generation=GenerationSettings(max_new_tokens=4),
    )
    results = evaluate(cfg, tmp_path / "run", progress=False)
    records = strict_json_lines(tmp_path / "run" / "samples.jsonl")
    assert len(records) == 8 and len({r["id"] for r in records}) == 8  # nothing lost, nothing doubled
    by_id = {r["id"]: r for r in records}
    bad = dict(BAD)
    if arch == "qwen2_vl":  # Qwen's resize refuses > 200:1; LLaVA pads it to a square and answers
        bad[WIDE] = r"model input rejected \(image of sample direct_attributes/sa_5 from .*sa_5\.json\).*200"
    for sample_id, record in by_id.items():
        if sample_id in bad:
            assert record["error"] and record["scores"] == {"accuracy": 0.0}, sample_id
            assert re.search(bad[sample_id], record["error"]), record["error"]
            assert "focus" not in record
        else:
            assert record.get("error") is None and isinstance(record["prediction"], str), sample_id
            assert record["focus"]["box"] is None or len(record["focus"]["box"]) == 4
    metrics = results["results"]["vstar_bench"]
    assert metrics["n"] == 8 and metrics["errors"] == len(bad)
    assert metrics["focus_n"] == 8 - len(bad)  # focus IoU is over the samples whose focus step ran
    assert "focus_iou" in results["notes"]["vstar_bench"]
    json.loads((tmp_path / "run" / "results.json").read_text(), parse_constant=_refuse)

    # a resumed run meets none of them again: the error records are finished samples
    before = (tmp_path / "run" / "samples.jsonl").read_bytes()
    again = evaluate(cfg, tmp_path / "run", resume=True, progress=False)
    assert (tmp_path / "run" / "samples.jsonl").read_bytes() == before
    assert again["results"] == results["results"]


def test_a_rejected_sample_does_not_take_its_batch_with_it(tiny_adapters, tmp_path):
    """The processor raises inside a batched call: only the sample it rejects becomes an error."""
    from visrl_bench.eval.evaluate import run_window
    from visrl_bench.reasoning import COT, DIRECT
    from visrl_bench.task import ImageSource, Sample

    write_image(tmp_path / "ok.png", size=(64, 48))
    write_image(tmp_path / "wide.png", size=(3000, 10))
    samples = [
        Sample(
            id=str(i), question="q?", answer="A", meta={"options": ["a", "b"]}, image=ImageSource("f", path=p)
        )
        for i, p in enumerate([tmp_path / "ok.png", tmp_path / "wide.png", tmp_path / "ok.png"])
    ]

    class Task:
        name = "t"
        default_crop_min_side = 16

        def prompt(self, s):
            return s.question

        def score(self, s, prediction, row=None):
            return {"id": s.id, "prediction": prediction, "scores": {"accuracy": 0.0}}

    cfg = EvalConfig(model="x", tasks=[], batch_size=3, generation=GenerationSettings(max_new_tokens=2))
    for mode in (DIRECT, COT):
        recs = run_window(Task(), list(enumerate(samples)), tiny_adapters["qwen2_5_vl"], mode, cfg)
        assert [r["position"] for r in recs] == [0, 1, 2]
        assert [bool(r.get("error")) for r in recs] == [False, True, False], mode.name
        assert "ValueError" in recs[1]["error"] and "absolute aspect ratio" in recs[1]["error"]


def test_bad_gold_boxes_are_error_records_in_scoring_too(tmp_path):
    """`score` reads gold data the same way: a NaN or inverted box is the sample's error, never a score."""
    data = _hostile_vstar(tmp_path / "vstar")
    task = TASKS.build("vstar_bench", data, None)
    preds = tmp_path / "p.jsonl"
    preds.write_text(
        "".join(
            json.dumps({"id": s.id, "prediction": task.oracle_prediction(s)}) + "\n" for s in task.samples()
        )
    )
    report = score_task(task, preds)
    assert report.errors == 2 and report.n == 8
    errors = {r["id"]: r["error"] for r in report.records if r.get("error")}
    assert set(errors) == {"direct_attributes/sa_6", "direct_attributes/sa_7"}
    assert report.metrics["accuracy"] == pytest.approx(100 * 6 / 8)


@pytest.mark.parametrize(
    "bbox", [[float("nan"), 1, 4, 4], [10, 10, -3, 4], [1, 1, 5, 0], [1, 1, float("inf"), 5]]
)
def test_refcoco_parquet_gold_box_is_checked_with_its_row(tmp_path, bbox):
    import pandas as pd

    root = make_refcoco_parquet(tmp_path / "r")
    path = next((root / "data").glob("val-*.parquet"))
    frame = pd.read_parquet(path)
    frame.at[1, "bbox"] = bbox
    frame.to_parquet(path)
    samples = list(TASKS.build("refcoco", root, None).samples())
    bad = [s for s in samples if s.error]
    assert bad and all(s.meta["question_id"] == frame.at[1, "question_id"] for s in bad)
    assert f"{path.name}" in bad[0].error and "(row 1)" in bad[0].error and "gold bbox" in bad[0].error
    assert all(not s.error and s.gold_boxes for s in samples if s not in bad)


def test_zoomworld_gold_box_is_checked_with_its_line(tmp_path):
    from fixtures import make_zoomworld

    root = make_zoomworld(tmp_path / "zw")
    test_file = root / "test.jsonl"
    lines = test_file.read_text().splitlines()
    row = json.loads(lines[2])
    row["bbox"] = [row["bbox"][2], row["bbox"][1], row["bbox"][0], row["bbox"][3]]  # x2 < x1
    lines[2] = json.dumps(row)
    test_file.write_text("\n".join(lines) + "\n")
    samples = list(TASKS.build("zoomworld", root, "test").samples())
    assert [s.error is not None for s in samples].count(True) == 1
    assert samples[2].error.startswith(f"{test_file}:3: gold bbox has no area")


def test_focus_metrics_and_task_metrics_have_their_own_names(tiny_checkpoints, task_fixtures, tmp_path):
    data, _ = task_fixtures["refcoco"]
    cfg = EvalConfig(
        model=str(tiny_checkpoints["llava"]),
        tasks=[TaskSpec("refcoco", str(data))],
        mode="cot",
        crop_min_side=16,
        generation=GenerationSettings(max_new_tokens=4),
    )
    results = evaluate(cfg, tmp_path / "run", progress=False)["results"]["refcoco"]
    records = read_records(tmp_path / "run" / "samples.jsonl")
    answer_failures = sum(1 for r in records if r["parse_error"] not in (None, "missing"))
    focus_failures = sum(1 for r in records if r["focus"]["box"] is None)
    assert results["box_parse_failure_rate"] == pytest.approx(100 * answer_failures / len(records))
    assert results["focus_parse_failure_rate"] == pytest.approx(100 * focus_failures / len(records))


def test_a_task_metric_that_collides_with_a_run_metric_is_refused():
    class Clashing:
        name = "clash"

        def aggregate(self, records):
            return {"focus_iou": 50.0, "n": len(records)}

    records = [
        {
            "task": "clash",
            "position": 0,
            "id": "a",
            "focus": {"source": "gold", "box": [0, 0, 1, 1], "iou": 1.0},
        }
    ]
    with pytest.raises(VisrlError, match="clash reports metric\\(s\\) focus_iou"):
        aggregate_run([Clashing()], records, seed=0)


def test_a_corrupt_hr_bench_image_does_not_split_its_question(tmp_path):
    rows = hr_rows(n_questions=4, cycles=4)
    rows[5]["image"] = base64.b64encode(png_bytes()[:40]).decode()  # truncated PNG, valid base64
    path = write_hr_tsv(tmp_path / "hr_bench_4k.tsv", rows)
    task = TASKS.build("hr_bench_4k", path, None)
    samples = list(task.samples())
    assert len({s.meta["group"] for s in samples}) == 4
    with pytest.raises(DataError, match=r"hr_bench_4k\.tsv:7: unreadable image"):
        samples[5].load_image()
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"id": s.id, "prediction": s.answer}) + "\n" for s in samples))
    report = score_task(task, preds)
    assert report.n == 4 and report.metrics["n_rows"] == 16 and report.metrics["circular_accuracy"] == 100.0


def test_hr_bench_questions_with_the_same_text_stay_apart(tmp_path):
    """Two questions may share text and options on different images: they are told apart by order."""
    rows = hr_rows(n_questions=2, cycles=2)
    for r in rows:
        r["question"] = "What is written on the sign?"
        r["A"], r["B"], r["C"], r["D"] = sorted([r["A"], r["B"], r["C"], r["D"]], key=lambda o: o[-1])
        r["answer"] = "A"
    rows = [rows[0], rows[2], rows[1], rows[3]]  # cycle 1 of both questions, then cycle 2 of both
    for r in rows:
        r["category"] = "FSP"
    path = write_hr_tsv(tmp_path / "hr_bench_4k.tsv", rows)
    samples = list(TASKS.build("hr_bench_4k", path, None).samples())
    groups = [s.meta["group"] for s in samples]
    assert groups[0] != groups[1] and groups[0] == groups[2] and groups[1] == groups[3]
    for group in set(groups):  # one row per cycle in every question
        cycles = [s.meta["cycle"] for s in samples if s.meta["group"] == group]
        assert sorted(cycles) == ["cycle1", "cycle2"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--limit", "0"], "option limit must be at least 1, got 0"),
        (["--limit", "-5"], "option limit must be at least 1, got -5"),
        (["--batch-size", "0"], "option batch_size must be at least 1, got 0"),
        (["--max-new-tokens", "0"], "option max_new_tokens must be at least 1, got 0"),
        (["--temperature", "nan"], "option temperature must be a finite number"),
        (["--temperature", "-1"], "option temperature must be at least 0"),
        (["--top-p", "0"], "option top_p must be between"),
        (["--num-return-sequences", "0"], "option num_return_sequences must be at least 1"),
        (["--crop-min-side", "0"], "option crop_min_side must be at least 1"),
        (["--seed", "-1"], "option seed must be at least 0"),
    ],
)
def test_eval_refuses_numbers_out_of_range_before_loading_a_model(flags, message, tmp_path):
    (tmp_path / "data").mkdir()
    result = runner.invoke(
        app,
        [
            "eval",
            "--model",
            str(tmp_path / "nope"),
            "--task",
            "textvqa",
            "--data",
            str(tmp_path / "data"),
            *flags,
        ],
    )
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "model=m", "data=d", "out=o", "k=0"], "option k must be at least 1, got 0"),
        (["generate", "model=m", "data=d", "out=o", "limit=0"], "option limit must be at least 1"),
        (["train", "--trainer", "sft", "model=m", "out=o", "lr=-1"], "option lr must be at least"),
        (["train", "--trainer", "dpo", "model=m", "out=o", "beta=0"], "option beta must be at least"),
        (
            ["train", "--trainer", "sft", "model=m", "out=o", "batch_size=0"],
            "option batch_size must be at least 1",
        ),
        (
            ["zoomworld", "pretrain", "--arch", "llava", "--data", "d", "--out", "o", "steps=0"],
            "option steps must",
        ),
        (["ablate", "--jobs", "0"], "'--jobs'"),
        (
            ["train", "--trainer", "visrl", "model=m", "out=o", "data=d", "dpo={beta: 0}"],
            "visrl: option dpo.beta",
        ),
        (
            ["train", "--trainer", "visrl", "model=m", "out=o", "data=d", "generate={k: 0}"],
            "visrl: option generate.k",
        ),
        (["zoomworld", "generate", "--out", "o", "--seed", "-1"], "'--seed'"),
    ],
)
def test_every_command_refuses_numbers_out_of_range(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.output, result.output
    written = sorted(p.name for p in (tmp_path / "o").iterdir()) if (tmp_path / "o").exists() else []
    assert written in ([], ["train.log"])  # nothing started


def test_a_zoomworld_config_with_numbers_out_of_range_is_refused(tmp_path):
    (tmp_path / "zw.yaml").write_text("sft_questions: 0\n")
    args = ["zoomworld", "generate", "--out", str(tmp_path / "o"), "--config", str(tmp_path / "zw.yaml")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "option sft_questions must be at least 1, got 0" in result.output


def test_the_inputs_of_every_box_conversion_are_in_samples_jsonl(tiny_checkpoints, task_fixtures, tmp_path):
    """Qwen2.5-VL's boxes are pixels of its resized input: the run's own files must let anyone re-derive
    them, and `visrl-bench score` on samples.jsonl must give the eval's numbers."""
    data, _ = task_fixtures["refcoco"]
    cfg = EvalConfig(
        model=str(tiny_checkpoints["qwen2_5_vl"]),
        tasks=[TaskSpec("refcoco", str(data))],
        mode="cot",
        crop_min_side=16,
        generation=GenerationSettings(max_new_tokens=8),
    )
    results = evaluate(cfg, tmp_path / "run", progress=False)["results"]["refcoco"]
    records = read_records(tmp_path / "run" / "samples.jsonl")
    for r in records:
        assert (
            r["box_format"] == "resized_pixel" and len(r["resized_size"]) == 2 and len(r["image_size"]) == 2
        )
        again = parse_box(
            r["focus"]["text"], r["box_format"], tuple(r["image_size"]), tuple(r["resized_size"])
        )
        assert (again.box.as_list() if again.box else None) == r["focus"]["box"]
    rescored = score_task(TASKS.build("refcoco", data, None), tmp_path / "run" / "samples.jsonl")
    for key in ("acc@0.5", "miou", "box_parse_failure_rate"):
        assert rescored.metrics[key] == pytest.approx(results[key]), key


def test_a_record_line_is_strict_json_whatever_it_holds():
    from visrl_bench.core.io import json_line

    line = json_line({"iou": float("nan"), "ci": [float("inf"), 1.0], "text": "é"})
    assert "NaN" not in line and "Infinity" not in line and "é" in line
    assert json.loads(line) == {"iou": None, "ci": [None, 1.0], "text": "é"}


def test_generate_over_good_and_bad_samples_records_the_bad_and_goes_on(tiny_checkpoints, tmp_path):
    """Self-evolution data generation meets the same hostile folder: every question gets one record."""
    from visrl_bench.datagen.pairs import GenerateConfig, generate

    data = _hostile_vstar(tmp_path / "vstar")
    cfg = GenerateConfig(
        model=str(tiny_checkpoints["qwen2_vl"]),
        task="vstar_bench",
        data=str(data),
        split=None,
        train_on_eval_split=True,  # a benchmark: all of it is evaluation data
        out=str(tmp_path / "gen"),
        k=2,
        answer_samples=1,
        batch_size=8,
        max_new_tokens=4,
        crop_min_side=16,
        progress=False,
    )
    stats = generate(cfg)
    records = strict_json_lines(tmp_path / "gen" / "questions.jsonl")
    assert sorted(r["position"] for r in records) == list(range(8))
    errors = {r["id"]: r["error"] for r in records if "error" in r}
    assert set(errors) == {*BAD, WIDE} and stats["errors"] == 4
    assert "model input rejected" in errors[WIDE] and "aspect ratio" in errors[WIDE]


class _FailingAdapter:
    """A model whose every call fails the same way: a bug or a broken model, never bad input."""

    arch, path, box_convention = "failing", "failing", BoxConvention.NORM

    def __init__(self, exc):
        self.exc = exc

    def input_size(self, image):
        return None

    def describe(self):
        return {"arch": self.arch, "box_convention": "norm"}

    def generate(self, requests, settings, batch_size=1):
        raise self.exc


@pytest.mark.parametrize(
    "exc",
    [
        TypeError("'float' object cannot be interpreted as an integer"),
        RuntimeError("CUDA error: device-side assert"),
    ],
)
def test_a_failure_of_every_sample_is_raised_not_recorded(exc, tmp_path):
    from visrl_bench.core.errors import SystematicFailure
    from visrl_bench.eval.evaluate import run_window
    from visrl_bench.reasoning import DIRECT

    data = make_vstar_folders(tmp_path / "vstar")
    task = TASKS.build("vstar_bench", data, None)
    window = list(enumerate(task.samples()))
    cfg = EvalConfig(model="x", tasks=[], batch_size=2)
    with pytest.raises(
        SystematicFailure if isinstance(exc, TypeError) else RuntimeError,
        match=r"all 4 samples of a batch failed|CUDA error",
    ):
        run_window(task, window, _FailingAdapter(exc), DIRECT, cfg)


def test_a_long_blank_stretch_does_not_slow_the_letter_extractor():
    import time

    from visrl_bench.metrics.choice import extract_letter

    for text in (
        "answer" + " " * 90_000 + "x",
        ("option" + " " * 3000) * 30,
        "The answer is" + "\n" * 90_000 + "B",
    ):
        start = time.perf_counter()
        extract_letter(text, ["red", "blue", "green", "white"])
        assert time.perf_counter() - start < 1.0  # 40,000 spaces took 34 s before whitespace was collapsed
    assert extract_letter("The answer is\n\n  (B)", ["red", "blue"]).letter == "B"


def test_whole_number_options_refuse_fractions():
    from visrl_bench.eval.evaluate import eval_config_from_dict

    for key in ("batch_size", "limit", "max_new_tokens", "crop_min_side"):
        with pytest.raises(VisrlError, match=rf"option (generation\.)?{key} takes a whole number, got 2.5"):
            eval_config_from_dict({"model": "m", "tasks": [], key: 2.5})
    assert eval_config_from_dict({"model": "m", "tasks": [], "temperature": 1}).generation.temperature == 1
