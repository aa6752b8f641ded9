"""`generate` end to end with a scripted model: files, pairs, statistics, resume, datasets loading."""

from __future__ import annotations

import hashlib
import json

import pytest

from visrl_bench.core.boxes import Box, BoxConvention, format_box


class ScriptedModel:
    """Box step: the gold box and a mirrored (wrong) box, alternately. Answer step: the right answer when the
    dialogue's box is the gold one, else "none". A test double that makes every question mixed."""

    arch = "scripted"
    path = "scripted"
    box_convention = BoxConvention.NORM1000

    def __init__(self, task):
        self.table = {}
        for s in task.samples():
            image = s.load_image()
            gold = s.gold_boxes[0]
            w, h = image.size
            far = Box(w - gold.x2, h - gold.y2, w - gold.x1, h - gold.y1)
            key = (hashlib.sha1(image.tobytes()).hexdigest(), s.question)
            self.table[key] = (
                format_box(gold, self.box_convention, image.size),
                format_box(far, self.box_convention, image.size),
                s.answer,
            )
        self.calls = 0

    def input_size(self, image):
        return None

    def describe(self):
        return {"arch": self.arch, "box_convention": self.box_convention.value}

    def generate(self, requests, settings, batch_size=1):
        self.calls += 1
        out = []
        for r in requests:
            question = r.messages[0]["content"][1]["text"].split(" Please provide")[0]
            gold, far, answer = self.table[(hashlib.sha1(r.images[0].tobytes()).hexdigest(), question)]
            k = settings.num_return_sequences
            if len(r.images) == 1:
                out.append([(gold, far)[i % 2] for i in range(k)])
            else:
                box_text = r.messages[1]["content"][0]["text"]
                out.append([answer if box_text == gold else "none"] * k)
        return out


@pytest.fixture(scope="module")
def zoomworld(tmp_path_factory):
    from fixtures import make_zoomworld

    return make_zoomworld(tmp_path_factory.mktemp("zw_gen") / "zw")


def _cfg(zoomworld, out, **kw):
    from visrl_bench.datagen.pairs import GenerateConfig

    values = {"k": 4, "perturb_prob": 0.0, "progress": False, **kw}
    return GenerateConfig(model="scripted", data=str(zoomworld), out=str(out), **values)


def test_generate_writes_pairs_stats_and_crops(zoomworld, tmp_path):
    from visrl_bench.core.registry import TASKS
    from visrl_bench.datagen.pairs import generate

    task = TASKS.build("zoomworld", zoomworld, "rl")
    stats = generate(_cfg(zoomworld, tmp_path / "gen"), adapter=ScriptedModel(task))
    n = task.count()
    assert stats["questions_seen"] == n and stats["mixed"] == n and stats["kept"] == n
    assert stats["candidates_per_question"] == 2  # four samples, two distinct boxes kept apart
    assert stats["pairs"] == {"box": n, "answer": n, "trajectory": n}
    assert stats["gold_iou"]["chosen"] > 0.9 and stats["focus_signal"] is True
    rows = [json.loads(x) for x in (tmp_path / "gen" / "pairs.jsonl").read_text().splitlines()]
    answer = next(r for r in rows if r["step"] == "answer")
    assert answer["rejected_answer"] == "none" and answer["rejected_answer_source"] == "rejected_trajectory"
    for r in rows:
        assert (tmp_path / "gen" / r["image"]).is_file() and (tmp_path / "gen" / r["chosen_crop"]).is_file()
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset("json", data_files=str(tmp_path / "gen" / "pairs.jsonl"), split="train")
    assert len(loaded) == 3 * n and set(loaded["step"]) == {"box", "answer", "trajectory"}


def test_filter_off_and_diversity_off_are_ablations(zoomworld, tmp_path):
    from visrl_bench.core.registry import TASKS
    from visrl_bench.datagen.pairs import generate

    task = TASKS.build("zoomworld", zoomworld, "rl")
    stats = generate(_cfg(zoomworld, tmp_path / "plain", diversity=False), adapter=ScriptedModel(task))
    assert stats["candidates_per_question"] == 4  # duplicates are not rejected without the controller
    assert stats["config"]["diversity"] is False


class BoxBreakingModel(ScriptedModel):
    """Box step: a box that misses (its answer is "none") and text that is no box at all, alternately; the
    answer step, given no crop, still names the right tile: a lucky guess from the global view."""

    def generate(self, requests, settings, batch_size=1):
        out = []
        for r in requests:
            k = settings.num_return_sequences
            if len(r.messages) == 1:  # the box step
                question = r.messages[0]["content"][1]["text"].split(" Please provide")[0]
                _, far, _ = self.table[(hashlib.sha1(r.images[0].tobytes()).hexdigest(), question)]
                out.append([(far, "[black-white")[i % 2] for i in range(k)])
            else:
                box_text = r.messages[1]["content"][0]["text"]
                question = r.messages[0]["content"][1]["text"].split(" Please provide")[0]
                answer = self.table[(hashlib.sha1(r.images[0].tobytes()).hexdigest(), question)][2]
                out.append([answer if box_text == "[black-white" else "none"] * k)
        return out


def test_a_box_that_does_not_parse_earns_nothing(zoomworld, tmp_path):
    """Breaking the box must not pay: scored by its answer, the unparsable trajectory would be chosen over a
    box that misses (the reward hack step-DPO learned on a base that guesses rather than says "none")."""
    from visrl_bench.core.registry import TASKS
    from visrl_bench.datagen.pairs import generate

    task = TASKS.build("zoomworld", zoomworld, "rl")
    stats = generate(_cfg(zoomworld, tmp_path / "strict"), adapter=BoxBreakingModel(task))
    assert stats["mixed"] == 0 and stats["pairs"] == {"box": 0, "answer": 0, "trajectory": 0}
    hacked = generate(
        _cfg(zoomworld, tmp_path / "lax", invalid_box_reward=None), adapter=BoxBreakingModel(task)
    )
    assert hacked["mixed"] == task.count() and hacked["pairs"]["box"] == task.count()
    rows = [json.loads(x) for x in (tmp_path / "lax" / "pairs.jsonl").read_text().splitlines()]
    assert all(r["chosen_box"] == "[black-white" for r in rows if r["step"] == "box")


def test_resume_continues_and_matches_a_single_run(zoomworld, tmp_path):
    from visrl_bench.core.errors import VisrlError
    from visrl_bench.core.registry import TASKS
    from visrl_bench.datagen.pairs import generate

    task = TASKS.build("zoomworld", zoomworld, "rl")
    generate(_cfg(zoomworld, tmp_path / "whole"), adapter=ScriptedModel(task))
    generate(_cfg(zoomworld, tmp_path / "parts", limit=4), adapter=ScriptedModel(task))
    with (tmp_path / "parts" / "questions.jsonl").open("a") as f:
        f.write('{"position": 4, "id": "half-writ')  # a crash mid-line
    with pytest.raises(VisrlError, match="--resume"):
        generate(_cfg(zoomworld, tmp_path / "parts"), adapter=ScriptedModel(task))
    with pytest.raises(VisrlError, match="different settings"):
        generate(_cfg(zoomworld, tmp_path / "parts", k=6), adapter=ScriptedModel(task), resume=True)
    # limit is not part of a run's identity: the resumed run goes on to the whole split
    generate(_cfg(zoomworld, tmp_path / "parts"), adapter=ScriptedModel(task), resume=True)
    for name in ("questions.jsonl", "pairs.jsonl"):
        whole = sorted((tmp_path / "whole" / name).read_text().splitlines())
        parts = sorted((tmp_path / "parts" / name).read_text().splitlines())
        assert whole == parts, name


def test_generate_cli_refuses_missing_options(tmp_path):
    from typer.testing import CliRunner

    from visrl_bench.cli import app

    result = CliRunner().invoke(app, ["generate", f"out={tmp_path}"])
    assert result.exit_code == 2 and "model" in result.output and "data" in result.output
