"""Multi-turn zoom (`--mode zoom`): one crop is visual CoT token for token; later turns continue from the
previous turn's KV cache; the records and metrics of several crops."""

import json

import pytest
from conftest import TINY_ARCHS
from test_eval import _cli_eval

from visrl_bench.core.boxes import Box, BoxConvention, format_box, holds_box, parse_box
from visrl_bench.core.rundir import read_records
from visrl_bench.eval.aggregate import focus_metrics
from visrl_bench.eval.evaluate import EvalConfig, run_window
from visrl_bench.models import ChatRequest, GenerationSettings, generate_turns
from visrl_bench.reasoning import ANSWER_INSTRUCTION, ZOOM, ZOOM_INSTRUCTION, box_step_messages, zoom_messages

TASKS = ("vstar_bench", "textvqa", "hr_bench_4k")


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_zoom_with_one_crop_is_cot(arch, tiny_checkpoints, task_fixtures, tmp_path):
    runs = {}
    for mode, extra in (("cot", ()), ("zoom", ("--max-turns", "1"))):
        result = _cli_eval(tiny_checkpoints[arch], task_fixtures, TASKS, mode, tmp_path / mode, *extra)
        assert result.exit_code == 0, result.output
        runs[mode] = (
            read_records(tmp_path / mode / "samples.jsonl"),
            json.loads((tmp_path / mode / "results.json").read_text())["results"],
        )
    (cot, cot_results), (zoom, zoom_results) = runs["cot"], runs["zoom"]
    assert len(cot) == len(zoom) > 0
    for a, b in zip(cot, zoom, strict=True):  # the same prompts, boxes, crops and greedy outputs
        assert (a["task"], a["id"], a["prediction"]) == (b["task"], b["id"], b["prediction"])
        assert a["steps"] == b["steps"] and a.get("focus") == b.get("focus")
        assert b["zoom"]["crops"] == 1 and b["zoom"]["boxes"][0] == b["focus"]
    for name, metrics in cot_results.items():
        assert {k: v for k, v in zoom_results[name].items() if k in metrics} == metrics
        assert zoom_results[name]["zoom_crops"] == 1.0


class _Plain:
    """The adapter without its own generate_turns: every turn prefilled from scratch."""

    def __init__(self, adapter):
        self.generate = adapter.generate


def _three_turn_dialogues(images):
    """A follow-up that zooms twice on rows 0 and 2 and stops row 1 after one crop; crops are kept so that
    every turn repeats the previous turn's images (the same objects)."""
    seen = {i: [] for i in range(len(images))}
    crops = {i: [] for i in range(len(images))}

    def follow_up(i, turn, reply):
        seen[i].append(reply)
        if i == 1 and turn == 2:
            return None
        crops[i].append(images[i].crop((0, 0, 40 + 8 * turn, 40)))
        messages = zoom_messages(f"what is here {i}?", seen[i], "Answer briefly.", final=turn == 2)
        return ChatRequest(messages, [images[i], *crops[i]])

    return follow_up


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_later_turns_from_the_cache_match_fresh_prefills(arch, tiny_adapters):
    from PIL import Image

    adapter = tiny_adapters[arch]
    images = [Image.new("RGB", (96 + 32 * i, 64), (40 * i, 90, 200)) for i in range(3)]
    first = [ChatRequest(box_step_messages(f"what is here {i}?"), [im]) for i, im in enumerate(images)]
    settings = [GenerationSettings(max_new_tokens=5)]
    before = dict(adapter.turn_two_batches)
    reused = generate_turns(
        adapter, first, _three_turn_dialogues(images), settings, batch_size=3, max_turns=3
    )
    continued = adapter.turn_two_batches["from_turn_one_cache"] - before["from_turn_one_cache"]
    plain = generate_turns(_Plain(adapter), first, _three_turn_dialogues(images), settings, 3, max_turns=3)
    assert reused == plain
    assert [len(t) for t in reused] == [3, 2, 3]  # row 1 left the batch after its second turn
    assert continued == 2  # both later turns continued from the cache
    assert adapter.turn_two_batches["refilled"] == before["refilled"]
    with pytest.raises(ValueError, match="must decode 1 sample"):
        generate_turns(
            adapter, first, _three_turn_dialogues(images), [GenerationSettings(num_return_sequences=2)]
        )


class ZoomingAdapter:
    """A stand-in model (test double): a box on the image, then a box on the first crop, then what `last`
    says; in norm1000 on a 200 x 100 image."""

    arch = "scripted"
    path = "scripted"
    box_convention = BoxConvention.NORM1000

    def __init__(self, last="B"):
        self.last = last
        self.requests = []

    def input_size(self, image):
        return None

    def describe(self):
        return {"arch": self.arch, "box_convention": self.box_convention.value}

    def generate(self, requests, settings, batch_size=1):
        self.requests += requests
        first, second = (
            format_box(b, "norm1000", (200, 100)) for b in (Box(0, 0, 100, 50), Box(20, 10, 60, 40))
        )
        return [[{1: first, 2: second}.get(len(r.images), self.last)] for r in requests]


class OneTask:
    name = "one"

    def prompt(self, s):
        return "Answer with the letter."

    def score(self, s, prediction, row=None):
        return {"id": s.id, "prediction": prediction, "scores": {}}


def _sample(tmp_path):
    from fixtures import write_image

    from visrl_bench.task import ImageSource, Sample

    write_image(tmp_path / "wide.png", size=(200, 100))
    image = ImageSource("x", path=tmp_path / "wide.png")
    return Sample(id="s", question="q?", answer="B", image=image, gold_boxes=[Box(20, 10, 60, 40)], meta={})


@pytest.mark.parametrize("max_turns", [1, 2, 3])
def test_zoom_records_every_crop_and_stops_at_max_turns(max_turns, tmp_path):
    adapter = ZoomingAdapter()
    cfg = EvalConfig(model="x", tasks=[], mode="zoom", crop_min_side=16, max_turns=max_turns)
    rec = run_window(OneTask(), [(0, _sample(tmp_path))], adapter, ZOOM, cfg)[0]
    crops = min(max_turns, 2)  # it zooms once more, then answers
    assert rec["zoom"]["crops"] == crops and len(rec["zoom"]["boxes"]) == crops
    assert [s["step"] for s in rec["steps"]] == ["box"] + ["zoom"] * (crops - 1) + ["answer"]
    assert rec["prediction"] == ("B" if max_turns > 2 else rec["steps"][-1]["output"])
    last_prompt = rec["steps"][-1]["prompt"]
    # the turn after the last allowed crop must answer; before it, the model may zoom again
    assert last_prompt.startswith(ANSWER_INSTRUCTION if crops == max_turns else ZOOM_INSTRUCTION)
    final = adapter.requests[-1]
    assert len(final.images) == crops + 1  # the image, then every crop in turn order
    ious = [b["iou"] for b in rec["zoom"]["boxes"]]
    assert ious[0] == pytest.approx(0.24, abs=0.01) and rec["focus"]["iou"] == ious[0]
    metrics = focus_metrics([rec], seed=0)
    assert metrics["zoom_crops"] == crops
    assert metrics["focus_iou_best"] == pytest.approx(100 * max(ious)) and metrics[
        "focus_iou_last"
    ] == pytest.approx(100 * ious[-1])
    assert metrics["zoom_invalid_call_rate"] == 0


def test_a_call_whose_box_does_not_parse_shows_the_full_image_and_is_counted(tmp_path):
    bad = "[1200, 1300, 1400, 1500]"  # box-like, outside the image: a call for a crop, with no usable box
    assert holds_box(bad) and parse_box(bad, "norm1000", (200, 100)).box is None
    assert not holds_box("B") and not holds_box("the pattern is stripes")
    adapter = ZoomingAdapter(last=bad)  # its third reply is the bad call, and every later one
    cfg = EvalConfig(model="x", tasks=[], mode="zoom", crop_min_side=16, max_turns=3)
    rec = run_window(OneTask(), [(0, _sample(tmp_path))], adapter, ZOOM, cfg)[0]
    assert rec["zoom"]["crops"] == 3 and rec["zoom"]["invalid_calls"] == [3]
    third = rec["zoom"]["boxes"][2]
    assert third["box"] is None and third["crop"] is None and third["iou"] == 0.0
    final = adapter.requests[-1]
    assert final.images[-1] is final.images[0]  # the full image again, as for an unparsable first box
    assert rec["prediction"] == bad  # the reply after the last allowed crop is the answer, whatever it says
    assert focus_metrics([rec], seed=0)["zoom_invalid_call_rate"] == pytest.approx(100 / 3)  # 1 of 3


def test_zoom_refuses_sampling_several_answers_across_turns():
    from visrl_bench.core.errors import VisrlError

    with pytest.raises(VisrlError, match="num_return_sequences 1"):
        EvalConfig(model="x", tasks=[], mode="zoom", generation=GenerationSettings(num_return_sequences=4))
    EvalConfig(
        model="x", tasks=[], mode="zoom", max_turns=1, generation=GenerationSettings(num_return_sequences=4)
    )
