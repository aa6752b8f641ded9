"""ZoomWorld: the synthetic benchmark where the answer needs the right crop (see
visrl_bench.datagen.zoomworld). `--data` is a folder written by `visrl-bench zoomworld generate`.

Metric: accuracy of the answer (exact match of the pattern name after lower-casing and trimming), overall and
per target shape; chance is 25% (four patterns). Gold focus boxes are the target objects' boxes. The `pairs`
split asks whether two objects carry the same tile (yes / no, chance 50%; category `pair`); both objects'
boxes are its gold boxes, and no single crop holds both tiles.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from visrl_bench.core.boxes import gold_box, image_dimensions
from visrl_bench.core.errors import DataError
from visrl_bench.core.io import iter_jsonl, read_json
from visrl_bench.datagen.zoomworld import ANSWERS, NONE, PAIR_ANSWERS, PATTERNS
from visrl_bench.task import BaseTask, ImageSource, Sample, checked

_ANSWER_RE = re.compile("|".join(re.escape(a) for a in sorted(ANSWERS, key=len, reverse=True)))
_PAIR_RE = re.compile(r"\b(" + "|".join(PAIR_ANSWERS) + r")\b")
PAIR = "pair"


def extract_answer(text: str, pair: bool = False) -> str | None:
    """The first answer word in the text (the tiny models write just the word; real ones may say more): a
    pattern name or none, or for a two-region question yes or no ("none" is not "no")."""
    m = (_PAIR_RE if pair else _ANSWER_RE).search(text.lower())
    return m.group(0) if m else None


class ZoomWorld(BaseTask):
    name = "zoomworld"
    version = "2.0"  # 2.0: the world's geometry D (zoomworld.json version 2.0; docs/zoomworld.md)
    description = (
        "ZoomWorld (synthetic): read an object's tile, unreadable without a crop; accuracy, focus IoU"
    )
    prompt_template = "{question} Answer with the pattern name, or none."
    pair_prompt_template = "{question} Answer yes or no."
    headline_metrics = ("accuracy",)
    splits = ("test", "sft", "rl", "pairs")
    default_split = "test"
    train_splits = ("sft", "rl")
    has_gold_boxes = True
    default_crop_min_side: ClassVar[int] = 32  # = ZoomWorldConfig.crop_min_side: the rule it was trained with
    metric_notes: ClassVar[dict[str, str]] = {
        "accuracy": f"exact pattern name; chance {100 / len(PATTERNS):.0f}%"
    }

    def __init__(self, data, split=None, *, seed: int = 0):
        super().__init__(data, split, seed=seed)
        self.meta = read_json(self.data / "zoomworld.json", "ZoomWorld metadata (zoomworld.json)")
        self.file = self.data / f"{self.split}.jsonl"
        if self.split == "pairs":
            self.metric_notes = {"accuracy": "yes / no: do the two objects carry the same tile; chance 50%"}

    def count(self) -> int:
        return sum(1 for _ in iter_jsonl(self.file, f"ZoomWorld {self.split} split"))

    def samples(self) -> Iterator[Sample]:
        for lineno, row in iter_jsonl(self.file, f"ZoomWorld {self.split} split"):
            missing = [
                k for k in ("id", "image", "question", "answer", "bbox", "width", "height") if k not in row
            ]
            if missing:
                raise DataError(self.file, f"row lacks {', '.join(missing)}", line=lineno)
            size, size_error = checked(
                image_dimensions, row["width"], row["height"], path=self.file, line=lineno
            )
            golds, error = [], None
            for raw in row.get("bboxes") or [row["bbox"]]:
                gold, box_error = checked(gold_box, raw, "xyxy", path=self.file, line=lineno)
                golds += [gold] if gold else []
                error = error or box_error
            error = size_error or error
            yield Sample(
                id=str(row["id"]),
                question=row["question"],
                answer=row["answer"],
                category=row.get("category"),
                image_size=size,
                gold_boxes=golds,
                meta={"target": row.get("target") or row.get("targets")},
                image=ImageSource(origin=str(self.file), path=self.data / row["image"], line=lineno),
                error=error,
            )

    def prompt(self, sample: Sample) -> str:
        template = self.pair_prompt_template if sample.category == PAIR else self.prompt_template
        return template.format(question=sample.question)

    def score(self, sample: Sample, prediction: str | None, row: dict | None = None) -> dict:
        pair = sample.category == PAIR
        answer = extract_answer(prediction, pair) if prediction is not None else None
        return self.record(
            sample,
            prediction,
            {"accuracy": float(answer == sample.answer)},
            parsed_answer=answer,
            said_none=answer == NONE,
        )

    def oracle_prediction(self, sample: Sample) -> str:
        return sample.answer

    def aggregate(self, records: Sequence[dict]) -> dict[str, Any]:
        out = self.mean_metrics(records)
        out["none_rate"] = round(
            100 * sum(1 for r in records if r.get("said_none")) / max(len(records), 1), 6
        )
        out["n"] = len(records)
        return out
