"""`visrl-bench show`: reports built from real run directories (one run, two runs, a trainer dir), boxes
drawn at the right pixels of a non-square image in every box convention, a contact sheet, and a headless
browser rendering the report from disk."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from visrl_bench.core.boxes import Box, format_box
from visrl_bench.eval.evaluate import EvalConfig, TaskSpec, evaluate
from visrl_bench.models import GenerationSettings
from visrl_bench.report.draw import BOX, CROP, GOLD, THUMB
from visrl_bench.report.show import write_report

SIZE = (800, 400)  # non-square: a convention that mixes up width and height draws a visibly wrong box
GOLD_BOX = Box(500, 60, 620, 140)  # the V* annotation, [x, y, w, h] = [500, 60, 120, 80]
MODEL_BOX = Box(80, 200, 280, 360)  # where the stand-in model looks (left, lower half)


@pytest.fixture(scope="module")
def vstar(tmp_path_factory):
    """A V*Bench folder of grey 800 x 400 images, one gold box each."""
    root = tmp_path_factory.mktemp("vstar_show")
    (root / "direct_attributes").mkdir()
    for i in range(4):
        Image.new("RGB", SIZE, (128, 128, 128)).save(root / "direct_attributes" / f"sa_{i}.jpg")
        meta = {
            "target_object": ["cup"],
            "bbox": [[500, 60, 120, 80]],
            "question": f"What is the color of cup {i}?",
            "options": ["red", "blue", "green", "white"],
        }
        (root / "direct_attributes" / f"sa_{i}.json").write_text(json.dumps(meta))
    return root


class LookingAdapter:
    """A stand-in model (test double): writes MODEL_BOX in its convention, then answers `answers[i]` for
    the i-th question (in order of the requests it is given)."""

    arch = "scripted"
    path = "scripted"

    def __init__(self, convention, answers):
        self.box_convention = convention
        self.answers, self.asked = answers, 0

    def input_size(self, image):
        # resized_pixel reads boxes in the model's resized input (Qwen2.5-VL's): 448 x 224 here
        return (448, 224) if self.box_convention.value == "resized_pixel" else None

    def describe(self):
        return {"arch": self.arch, "box_convention": self.box_convention.value}

    def generate(self, requests, settings, batch_size=1):
        out = []
        for r in requests:
            if len(r.images) == 1:  # the box turn
                out.append([format_box(MODEL_BOX, self.box_convention, SIZE, self.input_size(None))])
            else:
                out.append([self.answers[self.asked % len(self.answers)]])
                self.asked += 1
        return out


def _run(vstar, out, convention="norm1000", answers=("A",)):
    from visrl_bench.core.boxes import as_convention

    cfg = EvalConfig(
        model="scripted",
        tasks=[TaskSpec("vstar_bench", str(vstar), options={"shuffle": False})],  # "A" is right
        mode="cot",
        generation=GenerationSettings(max_new_tokens=8),
        crop_min_side=240,  # the crop region grows past the box: it is drawn apart from it
    )
    evaluate(cfg, out, adapter=LookingAdapter(as_convention(convention), list(answers)), progress=False)
    return out


GREY = (128, 128, 128)


def _near(pixel, colour, tol=70):
    return sum(abs(a - b) for a, b in zip(pixel, colour, strict=True)) < tol


def _nearest(pixel):
    """Which of the report's colours (or the grey image) a pixel is closest to (JPEG shifts them)."""
    return min((BOX, GOLD, CROP, GREY), key=lambda c: sum(abs(a - b) for a, b in zip(pixel, c, strict=True)))


def _edges(thumb, box: Box, scale: float):
    """Pixels on the middle of the box's top and left edges, and one well inside it."""
    x1, y1, x2, y2 = (v * scale for v in box.as_list())
    return (
        thumb.getpixel((round((x1 + x2) / 2), round(y1) + 1)),
        thumb.getpixel((round(x1) + 1, round((y1 + y2) / 2))),
        thumb.getpixel((round((x1 + x2) / 2), round((y1 + y2) / 2))),
    )


@pytest.mark.parametrize("convention", ["norm", "norm1000", "pixel", "square_norm", "resized_pixel"])
def test_boxes_are_drawn_where_the_records_say_in_every_convention(vstar, tmp_path, convention):
    run = _run(vstar, tmp_path / "run", convention)
    record = json.loads((run / "samples.jsonl").read_text().splitlines()[0])
    assert record["focus"]["box"] == pytest.approx(MODEL_BOX.as_list(), abs=1.0)  # parsed in its convention
    summary = write_report([run], tmp_path / "report", progress=False)
    assert summary["samples"] == 4
    thumb = Image.open(tmp_path / "report" / "img" / "00000-0.jpg").convert("RGB")
    assert thumb.size == (THUMB, THUMB // 2)  # the 800 x 400 image, its longest side at THUMB
    scale = THUMB / SIZE[0]
    for box, colour in ((MODEL_BOX, BOX), (GOLD_BOX, GOLD)):
        top, left, inside = _edges(thumb, box, scale)
        assert [_nearest(p) for p in (top, left, inside)] == [colour, colour, GREY], (box, top, left, inside)
    crop = Box(*record["focus"]["crop"])
    top, _, _ = _edges(thumb, crop, scale)
    assert crop != MODEL_BOX and _nearest(top) == CROP, top  # the crop region (grown to min side) outlined
    # and nowhere else: the boxes' mirror images (a convention bug's x/y or width/height swap) are grey
    mirrored = Box(SIZE[0] - MODEL_BOX.x2, MODEL_BOX.y1, SIZE[0] - MODEL_BOX.x1, MODEL_BOX.y2)
    assert _nearest(_edges(thumb, mirrored, scale)[0]) == GREY
    assert (tmp_path / "report" / "img" / "00000-0-crop1.jpg").is_file()


def test_one_run_report_has_every_sample_its_turns_and_headline(vstar, tmp_path):
    run = _run(vstar, tmp_path / "run")
    summary = write_report([run], tmp_path / "report", page_size=3, progress=False)
    assert summary["pages"] == 2
    index = (tmp_path / "report" / "index.html").read_text()
    assert "accuracy" in index and "95% CI" in index and "page-0002.html" in index
    pages = "".join((tmp_path / "report" / f"page-000{i}.html").read_text() for i in (1, 2))
    for i in range(4):
        assert f"cup {i}?" in pages  # every sample is in the report
    assert pages.count("<section class='card'>") == 4
    assert "Please provide the bounding box coordinate" in pages  # the box turn's prompt
    assert "gold answer: <b>" in pages and "IoU with gold" in pages


def test_two_runs_pair_up_and_filter_to_the_flipped_questions(vstar, tmp_path):
    sft = _run(vstar, tmp_path / "sft", answers=("B", "B", "A", "B"))  # right on question 2 only
    visrl = _run(vstar, tmp_path / "visrl", answers=("A", "A", "B", "B"))  # right on 0 and 1
    summary = write_report([sft, visrl], tmp_path / "report", filter="flipped", progress=False)
    assert summary["samples"] == 3  # 0 and 1 wrong -> right, 2 right -> wrong; 3 wrong in both
    index = (tmp_path / "report" / "index.html").read_text()
    assert "paired over 4 questions" in index and "wrong → right 2, right → wrong 1" in index
    page = (tmp_path / "report" / "page-0001.html").read_text()
    assert page.count("<div class='col'>") == 6  # each question's two runs side by side
    assert "cup 3?" not in page
    wrong = write_report([sft], tmp_path / "wrong", filter="wrong", progress=False)
    assert wrong["samples"] == 3


def test_hostile_record_text_is_escaped(vstar, tmp_path):
    run = _run(vstar, tmp_path / "run", answers=("<script>alert(1)</script>",))
    write_report([run], tmp_path / "report", progress=False)
    page = (tmp_path / "report" / "page-0001.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_contact_sheet_is_a_grid_of_the_samples(vstar, tmp_path):
    run = _run(vstar, tmp_path / "run")
    sheet = tmp_path / "fig" / "sheet.png"
    write_report([run], tmp_path / "report", contact_sheet=sheet, progress=False)
    image = Image.open(sheet)
    assert image.size == (2 * THUMB, 2 * (THUMB + 18))  # 4 samples: 2 x 2


def test_training_curves_from_a_trainer_dir(tiny_checkpoints, tmp_path):
    from fixtures import make_zoomworld
    from visrl_bench.trainers.sft import SFTConfig, train

    from visrl_bench.report.curves import write_curves

    data = make_zoomworld(tmp_path / "zw")
    out = tmp_path / "sft"
    train(
        SFTConfig(
            model=str(tiny_checkpoints["qwen2_vl"]),
            out=str(out),
            data=str(data),
            max_steps=3,
            batch_size=4,
            logging_steps=1,
            progress=False,
        )
    )
    summary = write_curves(out, tmp_path / "curves")
    assert summary["figures"] == 1
    png = Image.open(tmp_path / "curves" / "curves" / "000.png")
    assert png.size[0] > 300 and "loss" in (tmp_path / "curves" / "index.html").read_text()


def test_step_dpo_and_round_curves_draw_each_step_apart(tmp_path):
    from visrl_bench.report.curves import write_curves

    run = tmp_path / "visrl"
    (run / "round_1" / "train").mkdir(parents=True)
    header = (
        "step,loss,box/loss,answer/loss,box/rewards/margins,answer/rewards/margins,box/rewards/accuracies\n"
    )
    rows = "".join(f"{s},{0.7 - s / 20},{0.7},{0.6},{s / 10},{s / 20},{0.5}\n" for s in range(1, 6))
    (run / "round_1" / "train" / "log.csv").write_text(header + rows)
    summary = {
        "task": "zoomworld",
        "metric": "accuracy",
        "rows": [
            {
                "model": "sft",
                "cot/accuracy": 20.0,
                "cot/accuracy_ci95": [15, 25],
                "cot/focus_iou": 10.0,
                "gt_box/accuracy": 90.0,
            },
            {
                "model": "round_1",
                "cot/accuracy": 30.0,
                "cot/accuracy_ci95": [24, 36],
                "cot/focus_iou": 15.0,
                "gt_box/accuracy": 91.0,
            },
        ],
    }
    (run / "summary.json").write_text(json.dumps(summary))
    result = write_curves(run, tmp_path / "out")
    assert result["figures"] == 2
    index = (tmp_path / "out" / "index.html").read_text()
    assert "reward margins (DPO)" in index and "gold-crop accuracy (gt_box)" in index


@pytest.mark.skipif(
    not (shutil.which("chromium") or shutil.which("chromium-browser")),
    reason="headless Chromium is not installed (Debian: apt-get install chromium)",
)
def test_a_headless_browser_renders_the_report_with_its_images(vstar, tmp_path):
    run = _run(vstar, tmp_path / "run")
    write_report([run], tmp_path / "report", progress=False)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    shot = tmp_path / "shot.png"
    page = (tmp_path / "report" / "page-0001.html").resolve().as_uri()
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1200,900",
            page,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    # the page drew its images: the grey photo and the red box are on screen, not only text on white
    assert any(_near(c, GREY, 30) for _, c in colours)
    assert any(_near(c, BOX, 60) for _, c in colours)


def test_runs_are_named_by_as_much_of_their_path_as_tells_them_apart(tmp_path):
    from visrl_bench.report.runs import Run, name_runs

    runs = [Run(tmp_path / row / "qwen2_vl" / "seed0", {}) for row in ("sft", "visrl")]
    name_runs(runs)
    assert [r.name for r in runs] == ["sft/qwen2_vl/seed0", "visrl/qwen2_vl/seed0"]
    single = [Run(tmp_path / "runs" / "sft-cot", {})]
    name_runs(single)
    assert single[0].name == "sft-cot"


def test_reports_of_tiny_model_runs_one_and_paired(tiny_checkpoints, tmp_path):
    """Real runs of a tiny Qwen2-VL on ZoomWorld (cot and gt_box) through the CLI, shown alone and paired."""
    from fixtures import make_zoomworld
    from typer.testing import CliRunner

    from visrl_bench.cli import app

    data = make_zoomworld(tmp_path / "zw")
    runs = {}
    for mode in ("cot", "gt_box"):
        runs[mode] = tmp_path / mode
        args = [
            "eval",
            "--model",
            str(tiny_checkpoints["qwen2_vl"]),
            "--task",
            "zoomworld",
            "--data",
            str(data),
        ]
        args += ["--split", "test", "--mode", mode, "--max-new-tokens", "6", "--no-progress"]
        result = CliRunner().invoke(app, [*args, "--output", str(runs[mode])])
        assert result.exit_code == 0, result.output
    n = len((runs["cot"] / "samples.jsonl").read_text().splitlines())
    shown = CliRunner().invoke(
        app, ["show", str(runs["cot"]), "--out", str(tmp_path / "one"), "--no-progress"]
    )
    assert shown.exit_code == 0 and f"wrote {n} samples" in shown.output, shown.output
    page = (tmp_path / "one" / "page-0001.html").read_text()
    assert page.count("<section class='card'>") == n
    paired = CliRunner().invoke(
        app, ["show", str(runs["cot"]), str(runs["gt_box"]), "--out", str(tmp_path / "two"), "--no-progress"]
    )
    assert paired.exit_code == 0, paired.output
    index = (tmp_path / "two" / "index.html").read_text()
    assert f"paired over {n} questions" in index
    assert len(list((tmp_path / "two" / "img").glob("*-1.jpg"))) == n  # the second run's thumbnails
    assert len(list((tmp_path / "two" / "img").glob("*-1-crop1.jpg"))) == n  # gt_box: every crop is drawn
    bad = CliRunner().invoke(
        app, ["show", str(runs["cot"]), "--out", str(tmp_path / "x"), "--filter", "flipped"]
    )
    assert bad.exit_code == 2 and "compares two runs" in bad.output


def test_show_reads_what_the_run_recorded_and_fails_in_one_line(vstar, tmp_path, monkeypatch):
    """The hostile-user class: each wrong path or hand-edited record is one line or a per-sample note."""
    from typer.testing import CliRunner

    from visrl_bench.cli import app

    runner = CliRunner()
    monkeypatch.chdir(vstar.parent)
    run = _run(Path(vstar.name), tmp_path / "run")  # the data named relative to where eval ran
    monkeypatch.chdir(tmp_path)  # elsewhere: the run's recorded working dir finds the data
    shown = runner.invoke(app, ["show", str(run), "--out", str(tmp_path / "ok"), "--no-progress"])
    assert shown.exit_code == 0 and "wrote 4 samples on 1 page " in shown.output, shown.output

    afile = tmp_path / "afile"
    afile.write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "log.csv").write_text("step,epoch\n1,0.1\n")
    for args, message in (
        ([str(run), "--out", str(afile)], "a file is there; the report is a folder"),
        (
            [str(run), "--out", str(tmp_path / "r"), "--contact-sheet", str(tmp_path)],
            "a folder; give the PNG",
        ),
        (
            [str(run), "--out", str(tmp_path / "r"), "--contact-sheet", str(afile / "s.png")],
            "is a file, not a folder",
        ),
        (
            [str(run), "--out", str(tmp_path / "r"), "--category", "nope"],
            "--category 'nope': no sample has it",
        ),
        ([str(tmp_path / "missing"), "--out", str(tmp_path / "r")], "missing: no such directory"),
        ([str(tmp_path / "empty"), "--out", str(tmp_path / "r")], "not an eval run (no results.json)"),
        ([str(tmp_path / "trainer"), "--out", str(tmp_path / "r")], "none with a column to draw"),
    ):
        result = runner.invoke(app, ["show", *args, "--no-progress"])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output

    other = tmp_path / "other"
    shutil.copytree(run, other)
    records = [json.loads(line) for line in (other / "samples.jsonl").read_text().splitlines()]
    for record in records:
        record["id"] = "x" + str(record["id"])
    (other / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = runner.invoke(app, ["show", str(run), str(other), "--out", str(tmp_path / "r"), "--no-progress"])
    assert result.exit_code == 2 and "share no question" in result.output

    edited = tmp_path / "edited"
    shutil.copytree(run, edited)
    records = [json.loads(line) for line in (edited / "samples.jsonl").read_text().splitlines()]
    records[0]["focus"]["box"] = [1e308, 0, 1e308, 10]
    records[1]["focus"]["box"] = "[1, 2, 3, 4]"
    records[2]["image_size"] = [0, 0]
    records[3]["focus"]["crop"] = [5000, 5000, 5100, 5100]
    (edited / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = runner.invoke(app, ["show", str(edited), "--out", str(tmp_path / "e"), "--no-progress"])
    assert result.exit_code == 0 and "wrote 4 samples" in result.output, result.output
    pages = "".join(p.read_text() for p in (tmp_path / "e").glob("page-*.html"))
    assert "crop 1 lies outside the image" in pages
    assert pages.count("bad record") + pages.count("image not shown") >= 2, pages[:2000]
