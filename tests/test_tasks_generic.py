"""Every registered task passes the same checks on a fixture in its real format."""

import json
import math

import pytest
from fixtures import make_fixture

from visrl_bench.core.registry import TASKS
from visrl_bench.eval.scoring import score_task
from visrl_bench.task import Task


def _write_predictions(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(params=TASKS.names())
def task(request, tmp_path):
    data, options = make_fixture(request.param, tmp_path / "data")
    return TASKS.build(request.param, data, None, **options)


def test_task_contract(task, tmp_path):
    assert isinstance(task, Task)
    assert task.version and task.description and task.name
    name, version, _ = type(task).info(**TASKS.entry(task.name).kwargs)
    assert (name, version) == (task.name, task.version)
    samples = list(task.samples())
    assert samples, "fixture yields no samples"
    ids = [s.id for s in samples]
    assert len(ids) == len(set(ids)), "sample ids must be unique"
    for s in samples:
        assert isinstance(task.prompt(s), str) and s.question in task.prompt(s)
    image = samples[0].load_image()
    assert image.mode == "RGB" and image.size[0] > 0
    assert len(task.prompt_sha256) == 64


def test_oracle_predictions_score_perfectly(task, tmp_path):
    samples = list(task.samples())
    preds = _write_predictions(
        tmp_path / "p.jsonl", [{"id": s.id, "prediction": task.oracle_prediction(s)} for s in samples]
    )
    report = score_task(task, preds)
    assert report.missing == 0 and not report.unknown_ids and report.errors == 0
    for metric in task.headline_metrics:
        assert report.metrics[metric] == pytest.approx(100.0), metric
        lo, hi = report.metrics[f"{metric}_ci95"]
        assert lo <= report.metrics[metric] <= hi


def test_missing_predictions_count_as_wrong(task, tmp_path):
    samples = list(task.samples())
    preds = _write_predictions(tmp_path / "p.jsonl", [{"id": "not-a-real-id", "prediction": "A"}])
    report = score_task(task, preds)
    assert report.missing == len(samples)
    assert report.unknown_ids == ["not-a-real-id"]
    for metric in task.headline_metrics:
        assert report.metrics[metric] == 0.0
        assert all(not math.isnan(v) for v in report.metrics[f"{metric}_ci95"])


# 10 MB runaway generations in hostile shapes; two were measured quadratic or worse before the fixes:
# "(1,2)" + spaces in the box parser, "(A" repeated in the letter extractor
HOSTILE = {
    "point-then-spaces": "(1,2)" + " " * 10_000_000 + "x",
    "open-letters": "(A" * 5_000_000,
    "letters": "A B C D " * 1_250_000,
    "open-boxes": "[1 2 " * 2_000_000,
}


@pytest.mark.parametrize("shape", HOSTILE)
def test_a_10_mb_prediction_is_scored_quickly(task, shape):
    import time

    sample = next(iter(task.samples()))
    start = time.perf_counter()
    record = task.score(sample, HOSTILE[shape], {"box_format": "norm1000", "resized_size": [28, 28]})
    # generous: measured well under 0.5 s each; a quadratic scan takes minutes at this size
    assert time.perf_counter() - start < 5.0
    assert record["id"] == sample.id and record["scores"]
    assert all(math.isfinite(v) for v in record["scores"].values())
