"""Each task scored on fixtures against metrics computed by hand (see the comments)."""

import json

import pytest
from fixtures import (
    hr_rows,
    make_refcoco,
    make_refcoco_parquet,
    make_textvqa,
    make_vstar_folders,
    make_vstar_jsonl,
    write_hr_parquet,
    write_hr_tsv,
)

from visrl_bench.core.registry import TASKS
from visrl_bench.eval.scoring import score_task
from visrl_bench.metrics.choice import LETTERS


def preds(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def build(name, data, split=None, **options):
    return TASKS.build(name, data, split, **options)


# --- V*Bench --------------------------------------------------------------------------------------------
def test_vstar_shuffled_by_hand(tmp_path):
    task = build("vstar_bench", make_vstar_folders(tmp_path / "v"))
    by_id = {s.id: s for s in task.samples()}
    assert set(by_id) == {
        "direct_attributes/sa_1",
        "direct_attributes/sa_2",
        "direct_attributes/sa_3",
        "relative_position/sa_10",
    }
    s2 = by_id["direct_attributes/sa_2"]
    wrong = next(x for x in LETTERS[:4] if x != by_id["direct_attributes/sa_3"].answer)
    rows = [
        {
            "id": "direct_attributes/sa_1",
            "prediction": f"The answer is {by_id['direct_attributes/sa_1'].answer}.",
        },
        {"id": "direct_attributes/sa_2", "prediction": "rubber"},  # the correct option's text
        {"id": "direct_attributes/sa_3", "prediction": wrong},
        # relative_position/sa_10 has no prediction: wrong, and still in n
    ]
    report = score_task(task, preds(tmp_path / "p.jsonl", rows))
    assert report.n == 4 and report.missing == 1
    assert report.metrics["accuracy"] == pytest.approx(50.0)
    assert report.metrics["direct_attributes/accuracy"] == pytest.approx(200 / 3, abs=1e-4)
    assert report.metrics["relative_position/accuracy"] == 0.0
    assert report.metrics["direct_attributes/n"] == 3
    rec = next(r for r in report.records if r["id"] == s2.id)
    assert rec["option_order"] == s2.meta["option_order"] and rec["parse_method"] == "option_text"
    # the prompt shows options in the recorded order
    assert task.prompt(s2).splitlines()[1] == f"A. {s2.meta['options'][s2.meta['option_order'][0]]}"


def test_vstar_unshuffled_rewards_always_a(tmp_path):
    data = make_vstar_folders(tmp_path / "v")
    always_a = [{"id": s.id, "prediction": "A"} for s in build("vstar_bench", data).samples()]
    p = preds(tmp_path / "p.jsonl", always_a)
    assert score_task(build("vstar_bench", data, shuffle=False), p).metrics["accuracy"] == 100.0
    shuffled = build("vstar_bench", data)
    expected = 100 * sum(s.answer == "A" for s in shuffled.samples()) / 4
    assert score_task(shuffled, p).metrics["accuracy"] == pytest.approx(expected)
    assert expected < 100


def test_vstar_prediction_rows_may_carry_their_option_order(tmp_path):
    task = build("vstar_bench", make_vstar_folders(tmp_path / "v"))
    rows = [
        # asked as A. blue B. red ...: "B" is right
        {"id": "direct_attributes/sa_1", "prediction": "B", "options": ["blue", "red", "green", "white"]},
        {"id": "direct_attributes/sa_2", "prediction": "A", "option_order": [0, 1, 2, 3]},
        {
            "id": "direct_attributes/sa_3",
            "prediction": "A",
            "option_order": [0, 0, 1, 2],
        },  # not a permutation
    ]
    report = score_task(task, preds(tmp_path / "p.jsonl", rows))
    recs = {r["id"]: r for r in report.records}
    assert recs["direct_attributes/sa_1"]["scores"]["accuracy"] == 1.0
    assert recs["direct_attributes/sa_2"]["scores"]["accuracy"] == 1.0
    assert "not a permutation" in recs["direct_attributes/sa_3"]["error"]
    assert report.errors == 1


def test_vstar_jsonl_layout_ids_aliases_and_boxes(tmp_path):
    task = build("vstar_bench", make_vstar_jsonl(tmp_path / "v"), shuffle=False)
    samples = list(task.samples())
    assert [s.id for s in samples] == ["0", "1", "2", "3"]
    assert samples[0].aliases == ("direct_attributes/sa_1",)
    assert samples[0].answer == "D"  # the fixture moved the correct option last
    assert samples[3].gold_boxes[1].as_list() == [40, 10, 48, 18]  # from the same-stem JSON, xywh -> xyxy
    rows = [
        {"id": 0, "prediction": "D"},
        {"id": "direct_attributes/sa_2", "prediction": "(D)"},
        {"id": "2", "prediction": "A"},
        {"id": 3, "prediction": "B"},
    ]
    report = score_task(task, preds(tmp_path / "p.jsonl", rows))
    assert report.missing == 0 and report.metrics["accuracy"] == pytest.approx(75.0)


def test_vstar_circular_by_hand(tmp_path):
    task = build("vstar_bench", make_vstar_folders(tmp_path / "v"), circular=True)
    samples = list(task.samples())
    assert len(samples) == 4 + 4 + 4 + 2  # every rotation of every question
    rows = []
    for s in samples:
        if s.meta["group"] == "direct_attributes/sa_1":
            rows.append({"id": s.id, "prediction": s.answer})  # right in all 4 rotations
        elif s.meta["group"] == "direct_attributes/sa_2":
            right = not s.id.endswith("#rot3")
            rows.append(
                {"id": s.id, "prediction": s.answer if right else next(x for x in "ABCD" if x != s.answer)}
            )  # right in 3 of 4
    report = score_task(task, preds(tmp_path / "p.jsonl", rows))
    assert report.n == 4
    assert report.metrics["accuracy"] == pytest.approx(25.0)  # only sa_1 is right in every rotation
    assert report.metrics["rotation_accuracy"] == pytest.approx(100 * 7 / 14)


# --- HR-Bench -------------------------------------------------------------------------------------------
def _hr_fixture():
    rows = hr_rows(n_questions=4, cycles=2)  # indices: q0 -> 0,1  q1 -> 2,3  q2 -> 4,5  q3 -> 6,7
    rows = [r for r in rows if r["index"] != 7]  # q3 is missing from cycle 2: cycles are unbalanced
    right = {0: True, 1: True, 2: True, 3: False, 4: False, 5: True, 6: False}
    wrong = {r["index"]: next(x for x in "ABCD" if x != r["answer"]) for r in rows}
    predictions = [
        {"id": r["index"], "prediction": r["answer"] if right[r["index"]] else wrong[r["index"]]}
        for r in rows
    ]
    return rows, predictions


@pytest.mark.parametrize("fmt", ["tsv", "parquet"])
def test_hr_bench_by_hand(tmp_path, fmt):
    rows, predictions = _hr_fixture()
    if fmt == "tsv":
        data = write_hr_tsv(tmp_path / "hr_bench_4k.tsv", rows)
    else:
        data = write_hr_parquet(tmp_path / "hr_bench_4k.parquet", rows)
    report = score_task(build("hr_bench_4k", data), preds(tmp_path / "p.jsonl", predictions))
    m = report.metrics
    # cycle1: q0 right, q1 right, q2 wrong, q3 wrong = 2/4; cycle2: q0 right, q1 wrong, q2 right = 2/3
    assert m["accuracy"] == pytest.approx(100 * (2 / 4 + 2 / 3) / 2)  # 58.33, not the micro 4/7 = 57.14
    assert m["circular_accuracy"] == pytest.approx(25.0)  # only q0 is right in every cycle
    assert report.n == 4 and m["n_rows"] == 7
    # FSP = q0, q1: cycle1 2/2, cycle2 1/2 -> 75; strict 1/2.  FCP = q2, q3: cycle1 0/2, cycle2 1/1 -> 50
    assert m["FSP/accuracy"] == pytest.approx(75.0) and m["FSP/circular_accuracy"] == pytest.approx(50.0)
    assert m["FCP/accuracy"] == pytest.approx(50.0) and m["FCP/circular_accuracy"] == 0.0
    assert m["cycle:cycle1/accuracy"] == pytest.approx(50.0)
    for name in ("accuracy", "circular_accuracy", "FSP/accuracy"):
        lo, hi = m[f"{name}_ci95"]
        assert lo <= m[name] <= hi
    assert "circular_accuracy" in report.notes


def test_hr_bench_streams_rows(tmp_path, monkeypatch):
    """samples() is a generator over the file: nothing is read before iteration asks for it."""
    rows, _ = _hr_fixture()
    task = build("hr_bench_8k", write_hr_tsv(tmp_path / "hr_bench_8k.tsv", rows))
    it = task.samples()
    first = next(it)
    assert first.id == "0" and first.image.data is not None
    assert first.load_image().size == (32, 24)


# --- TextVQA --------------------------------------------------------------------------------------------
def test_textvqa_by_hand(tmp_path):
    task = build("textvqa", make_textvqa(tmp_path / "t"))
    rows = [
        {"id": 34602, "prediction": "Dakota"},  # 6 of 10 say "dakota": 1.0
        # 34603 missing: 0
        {"id": 34604, "prediction": "ale"},  # 3 of 10: 0.9
        {"id": 34605, "prediction": "3"},  # 2 of 10 after "two" -> "2": 0.6
    ]
    report = score_task(task, preds(tmp_path / "p.jsonl", rows))
    assert report.metrics["vqa_accuracy"] == pytest.approx(100 * (1.0 + 0 + 0.9 + 0.6) / 4)
    assert report.missing == 1 and report.n == 4
    assert "Reference OCR token" not in task.prompt(next(task.samples()))


def test_textvqa_ocr_prompt_and_submission(tmp_path):
    from visrl_bench.eval.scoring import write_report

    task = build("textvqa", make_textvqa(tmp_path / "t"), ocr=True)
    sample = next(task.samples())
    assert "Reference OCR token: DAKOTA, copenhagen" in task.prompt(sample)
    assert task.prompt_sha256 != build("textvqa", tmp_path / "t").prompt_sha256
    report = score_task(task, preds(tmp_path / "p.jsonl", [{"id": 34602, "prediction": " Dakota "}]))
    written = write_report(report, task, tmp_path / "out")
    submission = json.loads((tmp_path / "out" / "textvqa_val_evalai_submission.json").read_text())
    assert submission[0] == {"question_id": 34602, "answer": "Dakota"} and len(submission) == 4
    assert {p.name for p in written} >= {"results.json", "samples.jsonl"}


# --- RefCOCO --------------------------------------------------------------------------------------------
def _ref_rows(fmt):
    # gold: sent 100/101 -> [10,10,50,50] on 100x80; sent 103 -> [0,0,30,30] on 60x60
    if fmt == "norm":
        return [
            {"id": 100, "prediction": "[0.1, 0.125, 0.5, 0.625]"},  # exact: IoU 1
            {"id": 101, "prediction": "Sure! [0.3, 0.125, 0.7, 0.625]"},  # [30,10,70,50]: IoU 800/2400
            {"id": 103, "prediction": "I can't tell."},
        ]  # no box: IoU 0
    if fmt == "pixel":
        return [
            {"id": 100, "prediction": "[10, 10, 50, 50]"},
            {"id": 101, "prediction": "(30 10 70 50)"},
            {"id": 103, "prediction": "I can't tell."},
        ]
    return [
        {"id": 100, "prediction": "(100,125),(500,625)"},
        {"id": 101, "prediction": "[300,125,700,625]"},
        {"id": 103, "prediction": "I can't tell."},
    ]


@pytest.mark.parametrize("fmt", ["norm", "pixel", "norm1000"])
def test_refcoco_by_hand(tmp_path, fmt):
    task = build("refcoco", make_refcoco(tmp_path / "r"), "val", box_format=fmt)
    assert [s.id for s in task.samples()] == ["100", "101", "103"]
    report = score_task(task, preds(tmp_path / "p.jsonl", _ref_rows(fmt)))
    m = report.metrics
    assert m["acc@0.5"] == pytest.approx(100 / 3)
    assert m["acc@0.75"] == pytest.approx(100 / 3)
    assert m["miou"] == pytest.approx(100 * (1 + 1 / 3 + 0) / 3)
    assert m["box_parse_failure_rate"] == pytest.approx(100 / 3)


def test_refcoco_splits_and_refcocog(tmp_path):
    data = make_refcoco(tmp_path / "r")
    assert [s.id for s in build("refcoco+", data, "testA").samples()] == ["102"]
    with pytest.raises(Exception, match="no split 'test'"):
        build("refcoco", data, "test")
    g = make_refcoco(tmp_path / "g", "refs(umd).p")
    assert [s.id for s in build("refcocog", g, "val").samples()] == ["100", "101", "103"]


def test_refcoco_parquet_layout(tmp_path):
    task = build("refcoco", make_refcoco_parquet(tmp_path / "rp"), "val", box_format="norm")
    samples = list(task.samples())
    assert [s.id for s in samples] == ["11#0", "11#1", "13#0"]
    assert samples[0].image_size == (100, 80)
    rows = [
        {"id": "11#0", "prediction": "[0.1, 0.125, 0.5, 0.625]"},
        {"id": "11#1", "prediction": "[0.3, 0.125, 0.7, 0.625]"},
    ]
    m = score_task(task, preds(tmp_path / "p.jsonl", rows)).metrics
    assert m["miou"] == pytest.approx(100 * (1 + 1 / 3) / 3)


def test_hr_bench_image_stored_once_and_referenced_by_index(tmp_path):
    """VLMEvalKit-style TSVs may keep an image in one row and put that row's index in the others."""
    rows = hr_rows(n_questions=2, cycles=2)
    rows[1]["image"] = "0"  # q0 cycle 2 reuses row 0's image
    task = build("hr_bench_4k", write_hr_tsv(tmp_path / "hr_bench_4k.tsv", rows))
    samples = list(task.samples())
    assert samples[1].load_image().size == samples[0].load_image().size
    assert samples[0].meta["group"] == samples[1].meta["group"]  # still one question across cycles
    assert samples[0].meta["group"] != samples[2].meta["group"]
