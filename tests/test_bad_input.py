"""Bad input gets an error naming the file and line/row, never a deep traceback or a silent score."""

import json
import pickle

import pytest
from fixtures import hr_rows, make_refcoco, make_textvqa, make_vstar_folders, write_hr_tsv

from visrl_bench.core.errors import DataError, UnknownNameError
from visrl_bench.core.registry import TASKS
from visrl_bench.eval.scoring import load_predictions, score_task


def test_malformed_prediction_line(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"id": 1, "prediction": "a"}\n{"id": 2, "prediction": \n')
    with pytest.raises(DataError, match=r"p\.jsonl:2: malformed JSON line"):
        load_predictions(p)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prediction": "a"}\n', r"p\.jsonl:1: row has no 'id'"),
        ('{"id": 1}\n', r"p\.jsonl:1: row has no 'prediction'"),
        ('{"id": 1, "prediction": 5}\n', r"p\.jsonl:1: 'prediction' must be text"),
        ("[1, 2]\n", r"p\.jsonl:1: expected a JSON object"),
        (
            '{"id": 1, "prediction": "a"}\n\n{"id": "1", "prediction": "b"}\n',
            r"p\.jsonl:3: duplicate id '1' \(first on line 1\)",
        ),
    ],
)
def test_bad_prediction_rows(tmp_path, content, message):
    p = tmp_path / "p.jsonl"
    p.write_text(content)
    with pytest.raises(DataError, match=message):
        load_predictions(p)


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match="predictions file not found"):
        load_predictions(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="textvqa data not found"):
        TASKS.build("textvqa", tmp_path / "nowhere", None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="TextVQA annotation file not found"):
        list(TASKS.build("textvqa", tmp_path / "empty", None).samples())
    with pytest.raises(DataError, match="not a V\\*Bench folder"):
        TASKS.build("vstar_bench", tmp_path / "empty", None)


def test_unknown_task_suggests(tmp_path):
    with pytest.raises(UnknownNameError, match="did you mean 'textvqa'"):
        TASKS.build("textvq", tmp_path, None)
    with pytest.raises(UnknownNameError, match="did you mean 'hr_bench_4k'"):
        TASKS.entry("hrbench_4k")


def test_hr_tsv_short_row(tmp_path):
    path = write_hr_tsv(tmp_path / "hr_bench_4k.tsv", hr_rows())
    lines = path.read_text().splitlines()
    lines[2] = "\t".join(lines[2].split("\t")[:5])  # row on line 3 lost its last columns
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"hr_bench_4k\.tsv:3: row has 5 fields, the header has 10"):
        list(TASKS.build("hr_bench_4k", path, None).samples())


def test_hr_tsv_missing_column_and_empty_value(tmp_path):
    header = ["index", "question", "answer", "category", "A", "B", "C", "D", "image"]  # no cycle_category
    path = write_hr_tsv(tmp_path / "a" / "hr_bench_4k.tsv", hr_rows(), header)
    with pytest.raises(DataError, match=r"hr_bench_4k\.tsv:1: header lacks column\(s\) cycle_category"):
        list(TASKS.build("hr_bench_4k", path, None).samples())
    rows = hr_rows()
    rows[1]["answer"] = ""
    path = write_hr_tsv(tmp_path / "b" / "hr_bench_4k.tsv", rows)
    with pytest.raises(DataError, match=r"hr_bench_4k\.tsv:3: empty value in column 'answer'"):
        list(TASKS.build("hr_bench_4k", path, None).samples())
    rows = hr_rows()
    rows[0]["answer"] = "Q"
    path = write_hr_tsv(tmp_path / "c" / "hr_bench_4k.tsv", rows)
    with pytest.raises(DataError, match=r":2: answer 'Q' is not one of options ABCD"):
        list(TASKS.build("hr_bench_4k", path, None).samples())


def test_bad_base64_image_names_file_and_row(tmp_path):
    rows = hr_rows()
    rows[1]["image"] = "this is not base64!!" * 5
    path = write_hr_tsv(tmp_path / "hr_bench_4k.tsv", rows)
    samples = list(TASKS.build("hr_bench_4k", path, None).samples())  # scoring never decodes images
    samples[0].load_image()
    # the TSV's line, numbered as its column errors are (file:line), not a second "(row N)" numbering
    with pytest.raises(DataError, match=r"hr_bench_4k\.tsv:3: bad base64 image"):
        samples[1].load_image()
    rows[1]["image"] = "aGVsbG8gd29ybGQ="  # valid base64 of text, not an image
    path = write_hr_tsv(tmp_path / "b" / "hr_bench_4k.tsv", rows)
    with pytest.raises(DataError, match=r"hr_bench_4k\.tsv:3: unreadable image"):
        list(TASKS.build("hr_bench_4k", path, None).samples())[1].load_image()


def test_missing_image_file_named(tmp_path):
    data = make_textvqa(tmp_path / "t")
    (data / "train_images" / "img_a.jpg").unlink()
    sample = next(TASKS.build("textvqa", data, None).samples())
    referenced = r"\(referenced by .*TextVQA_0\.5\.1_val\.json \(row 0\)\)"
    with pytest.raises(DataError, match=r"img_a\.jpg: image file not found " + referenced):
        sample.load_image()


def test_vstar_malformed_json_names_file(tmp_path):
    data = make_vstar_folders(tmp_path / "v")
    (data / "direct_attributes" / "sa_2.json").write_text('{"question": "x",\n "options": [}')
    with pytest.raises(DataError, match=r"sa_2\.json:2: malformed JSON"):
        list(TASKS.build("vstar_bench", data, None).samples())


def test_refs_pickle_with_globals_is_refused(tmp_path):
    data = make_refcoco(tmp_path / "r")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (data / "refs(unc).p").write_bytes(pickle.dumps([Evil()], protocol=2))
    with pytest.raises(DataError, match=r"refs\(unc\)\.p: refused to unpickle (__builtin__|builtins)\.print"):
        list(TASKS.build("refcoco", data, "val").samples())


def test_refs_pickle_garbage(tmp_path):
    data = make_refcoco(tmp_path / "r")
    (data / "refs(unc).p").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"refs\(unc\)\.p: unreadable refs pickle"):
        list(TASKS.build("refcoco", data, "val").samples())


def test_textvqa_entry_without_answers(tmp_path):
    data = make_textvqa(tmp_path / "t")
    blob = json.loads((data / "TextVQA_0.5.1_val.json").read_text())
    del blob["data"][2]["answers"]
    (data / "TextVQA_0.5.1_val.json").write_text(json.dumps(blob))
    with pytest.raises(
        DataError, match=r"TextVQA_0\.5\.1_val\.json \(row 2\): question 34604 has no 'answers'"
    ):
        list(TASKS.build("textvqa", data, None).samples())


def test_unknown_ids_are_reported_not_dropped(tmp_path):
    data = make_textvqa(tmp_path / "t")
    p = tmp_path / "p.jsonl"
    p.write_text(
        json.dumps({"id": 34602, "prediction": "dakota"})
        + "\n"
        + json.dumps({"id": 99999, "prediction": "x"})
        + "\n"
    )
    report = score_task(TASKS.build("textvqa", data, None), p)
    assert report.unknown_ids == ["99999"] and report.summary()["unknown_ids"] == 1
    assert report.n == 4 and report.missing == 3


def test_split_on_a_task_without_splits(tmp_path):
    data = make_vstar_folders(tmp_path / "v")
    with pytest.raises(DataError, match="vstar_bench has no splits"):
        TASKS.build("vstar_bench", data, "test")
