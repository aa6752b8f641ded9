"""What a ZoomWorld base model's grounding can do, measured through the eval adapter: greedy boxes for the
referring prompt (or the task's box step) on held-out ground scenes (IoU with the object's box, parse
failures) and the world's `ground_test` probe (1-object localisation, distinct boxes, 2-object selection,
3-5-object IoU). Pretraining records it in provenance; `zoomworld baselines` and `zoomworld screen` report
it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visrl_bench.core.boxes import gold_box, iou, parse_box
from visrl_bench.core.io import iter_jsonl
from visrl_bench.datagen.zoomworld import QUESTION
from visrl_bench.models import ChatRequest
from visrl_bench.reasoning import box_step_messages, direct_messages

# LLaVA-1.5's referring-expression prompt: a grounding phrasing real LMMs know besides the question's
GROUND_PROMPT = "Please provide the bounding box coordinate of the region this sentence describes: {phrase}."


def ground_request(phrase: str, image) -> ChatRequest:
    return ChatRequest(direct_messages(GROUND_PROMPT.format(phrase=phrase)), [image])


# grounding asked the other way round: the box given, the colour of the object in it the answer. Binding a
# colour word to one of several objects (picking the named one of two) was never learned from boxes alone;
# this asks the image tokens under a box to say their colour (docs/zoomworld.md, the binding screens)
COLOUR_PROMPT = "What colour is the object in the region {box}? Answer with one word."


def colour_request(box_text: str, image) -> ChatRequest:
    return ChatRequest(direct_messages(COLOUR_PROMPT.format(box=box_text)), [image])


def phrase_parts(phrase: str) -> tuple[str, str]:
    """ "the olive diamond" -> ("olive", "diamond")."""
    colour, shape = phrase.removeprefix("the ").rsplit(" ", 1)
    return colour, shape


def held_out_ground(rows: list[dict], n: int = 200) -> list[dict]:
    """The ground split's last rows (3-5-object scenes: the curriculum puts them last), never trained on;
    at most a tenth of the split."""
    return rows[len(rows) - min(n, len(rows) // 10) :]


def box_step_question(phrase: str) -> str:
    """The task's question about the object a referring phrase ("the red square") names."""
    colour, shape = phrase_parts(phrase)
    return QUESTION.format(colour=colour, shape=shape)


def box_step_request(phrase: str, image) -> ChatRequest:
    """Grounding asked as Visual CoT's box step: the task's question about the object, then the box."""
    return ChatRequest(box_step_messages(box_step_question(phrase)), [image])


def _ground_boxes(
    checkpoint: Path, root: Path, rows: list[dict], batch_size: int = 32, box_step: bool = False
) -> list:
    """Greedy boxes of a base model for ground rows, through the eval adapter, asked with the referring
    prompt or as the box step: a Box, or None where the reply does not parse."""
    from PIL import Image

    from visrl_bench.models import GenerationSettings, load_model

    adapter = load_model(checkpoint, device="cpu")
    ask = box_step_request if box_step else ground_request
    requests = [ask(r["phrase"], Image.open(root / r["image"]).convert("RGB")) for r in rows]
    outputs = adapter.generate(requests, GenerationSettings(max_new_tokens=16), batch_size=batch_size)
    boxes = []
    for request, out in zip(requests, outputs, strict=True):
        image = request.images[0]
        parsed = parse_box(out[0], adapter.box_convention, image.size, adapter.input_size(image))
        boxes.append(parsed.box if parsed.ok else None)
    return boxes


def _iou_summary(rows: list[dict], boxes: list) -> dict[str, Any]:
    ious = [
        iou(b, gold_box(r["bbox"], "xyxy")) if b is not None else 0.0
        for r, b in zip(rows, boxes, strict=True)
    ]
    return {
        "n": len(rows),
        "mean_iou": round(sum(ious) / max(1, len(ious)), 4),
        "iou_above_0.5": round(sum(v > 0.5 for v in ious) / max(1, len(ious)), 4),
        "parse_failures": sum(b is None for b in boxes),
    }


def grounding_iou(checkpoint: Path, root: Path, rows: list[dict], batch_size: int = 32) -> dict[str, Any]:
    """Greedy grounding on held-out ground rows through the eval adapter: mean IoU with the object's box,
    the share above 0.5 and parse failures (boxes are the base model's own, before any SFT)."""
    return _iou_summary(rows, _ground_boxes(checkpoint, root, rows, batch_size))


def grounding_probe(
    checkpoint: Path, root: Path, batch_size: int = 32, box_step: bool = False
) -> dict[str, Any]:
    """What a base model's grounding can do, on the world's held-out `ground_test` scenes: localise one object
    (1-object IoU, and how many distinct boxes it writes: one box for every image is the box prior, not
    grounding), pick the named object of two (selection: the box overlaps the named object more than the
    other; chance 0.5, undecided when it overlaps neither), and place one among 3-5. `box_step`: asked as
    the task's box step instead of the referring prompt."""
    rows = [r for _, r in iter_jsonl(root / "ground_test.jsonl", "ZoomWorld ground_test split")]
    boxes = _ground_boxes(checkpoint, root, rows, batch_size, box_step)
    by_size: dict[str, tuple[list, list]] = {"1": ([], []), "2": ([], []), "3-5": ([], [])}
    for r, b in zip(rows, boxes, strict=True):
        rs, bs = by_size["1" if r["objects"] == 1 else "2" if r["objects"] == 2 else "3-5"]
        rs.append(r)
        bs.append(b)
    report = {size: _iou_summary(*pair) for size, pair in by_size.items()}
    report["1"]["distinct_boxes"] = len({tuple(b.as_list()) for b in by_size["1"][1] if b is not None})
    named = {(r["image"], r["phrase"]): (r, b) for r, b in zip(*by_size["2"], strict=True)}
    picks = []
    for (image, phrase), (r, b) in named.items():
        other = [o for (im, ph), (o, _) in named.items() if im == image and ph != phrase]
        if b is None or not other:
            continue
        own, theirs = iou(b, gold_box(r["bbox"], "xyxy")), iou(b, gold_box(other[0]["bbox"], "xyxy"))
        if own != theirs:
            picks.append(own > theirs)
    report["2"]["selection"] = round(sum(picks) / max(1, len(picks)), 4)
    report["2"]["decided"] = len(picks)
    return report
