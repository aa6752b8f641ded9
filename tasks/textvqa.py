"""TextVQA 0.5.1 (Singh et al., 2019): questions that need reading text in the image.

Layout: a folder with `TextVQA_0.5.1_<split>.json` (`{"data": [{question_id, question, image_id, answers,
image_width, image_height, ...}]}`) and the images under `train_images/` (train and val) or `test_images/`.
With `ocr=true`, Rosetta OCR tokens from `TextVQA_Rosetta_OCR_v0.2_<split>.json` are put in the prompt, as
LLaVA-1.5 does; they change scores by many points, so they are off unless asked for and recorded in the
config. Metric: the TextVQA authors' VQA accuracy (`visrl_bench.metrics.vqa`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

from visrl_bench.core.boxes import image_dimensions
from visrl_bench.core.errors import DataError
from visrl_bench.core.io import read_json
from visrl_bench.metrics.vqa import vqa_accuracy
from visrl_bench.task import BaseTask, ImageSource, Sample, as_bool

INSTRUCTION = "Answer the question using a single word or phrase."


class TextVQA(BaseTask):
    name = "textvqa"
    version = "1.0"
    description = "TextVQA 0.5.1: reading text in images; official TextVQA (EvalAI-processed) VQA accuracy"
    prompt_template = "{question}\n" + INSTRUCTION
    ocr_prompt_template = "{question}\nReference OCR token: {ocr}\n" + INSTRUCTION
    headline_metrics = ("vqa_accuracy",)
    splits = ("train", "val", "test")
    default_split = "val"
    train_splits = ("train",)
    metric_notes: ClassVar[dict[str, str]] = {
        "vqa_accuracy": "TextVQA evaluator: EvalAI answer processing of prediction and all ten "
        "answers, mean over leave-one-out subsets of min(1, matches/3)"
    }

    def __init__(self, data, split=None, *, seed: int = 0, ocr: bool = False, image_dir: str | None = None):
        super().__init__(data, split, seed=seed, ocr=as_bool(ocr), image_dir=image_dir)
        self.ocr = as_bool(ocr)
        self.annotations = (
            self.data if self.data.is_file() else self.data / f"TextVQA_0.5.1_{self.split}.json"
        )
        folder = self.annotations.parent
        default_images = "test_images" if self.split == "test" else "train_images"
        self.image_dir = Path(image_dir) if image_dir else folder / default_images
        self.ocr_file = folder / f"TextVQA_Rosetta_OCR_v0.2_{self.split}.json"

    @property
    def prompt_sha256(self) -> str:
        return hashlib.sha256(
            (self.ocr_prompt_template if self.ocr else self.prompt_template).encode()
        ).hexdigest()

    def _ocr_tokens(self) -> dict[str, list[str]]:
        blob = read_json(self.ocr_file, "TextVQA Rosetta OCR file (needed for ocr=true)")
        rows = blob.get("data") if isinstance(blob, dict) else None
        if not isinstance(rows, list):
            raise DataError(self.ocr_file, "expected an object with a 'data' list")
        return {
            str(r["image_id"]): [str(t) for t in r.get("ocr_tokens", [])]
            for r in rows
            if isinstance(r, dict) and "image_id" in r
        }

    def count(self) -> int:
        return len(read_json(self.annotations, "TextVQA annotation file").get("data", []))

    def samples(self) -> Iterator[Sample]:
        blob = read_json(self.annotations, "TextVQA annotation file")
        rows = blob.get("data") if isinstance(blob, dict) else None
        if not isinstance(rows, list):
            raise DataError(self.annotations, "expected an object with a 'data' list (TextVQA 0.5.1 format)")
        ocr = self._ocr_tokens() if self.ocr else {}
        for i, row in enumerate(rows):
            where = {"row": i}
            if not isinstance(row, dict):
                raise DataError(self.annotations, "entry is not an object", **where)
            for key in ("question_id", "question", "image_id"):
                if key not in row:
                    raise DataError(self.annotations, f"entry lacks {key!r}", **where)
            answers = row.get("answers")
            if self.split != "test" and (not isinstance(answers, list) or not answers):
                raise DataError(
                    self.annotations, f"question {row['question_id']} has no 'answers' list", **where
                )
            size = None
            if row.get("image_width") and row.get("image_height"):
                try:
                    size = image_dimensions(row["image_width"], row["image_height"])
                except ValueError as exc:  # only used to report, never to convert a box: a clear stop
                    raise DataError(self.annotations, str(exc), **where) from None
            image_id = str(row["image_id"])
            yield Sample(
                id=str(row["question_id"]),
                question=str(row["question"]),
                answer=[str(a) for a in answers or []],
                image_size=size,
                meta={"image_id": image_id, "ocr_tokens": ocr.get(image_id, []) if self.ocr else None},
                image=ImageSource(
                    origin=str(self.annotations), path=self.image_dir / f"{image_id}.jpg", row=i
                ),
            )

    def prompt(self, sample: Sample) -> str:
        if self.ocr:
            return self.ocr_prompt_template.format(
                question=sample.question, ocr=", ".join(sample.meta["ocr_tokens"] or [])
            )
        return self.prompt_template.format(question=sample.question)

    def score(self, sample: Sample, prediction: str | None, row: dict | None = None) -> dict:
        if not sample.answer:
            raise DataError(
                self.annotations,
                f"split {self.split!r} has no answers to score against (write an EvalAI submission instead)",
            )
        value = vqa_accuracy(prediction, sample.answer) if prediction is not None else 0.0
        return self.record(sample, prediction, {"vqa_accuracy": value})

    def oracle_prediction(self, sample: Sample) -> str:
        # the most frequent human answer scores the highest attainable accuracy for the question
        return max(sample.answer, key=sample.answer.count)

    def aggregate(self, records: Sequence[dict]) -> dict:
        out = self.mean_metrics(records, by_category=False)
        out["n"] = len(records)
        return out

    def write_outputs(self, records: Sequence[dict], out_dir: Path) -> list[Path]:
        """The EvalAI submission file: [{"question_id": int, "answer": str}, ...]."""
        path = out_dir / f"textvqa_{self.split}_evalai_submission.json"
        rows = []
        for r in records:
            qid = int(r["id"]) if str(r["id"]).isdigit() else r["id"]
            rows.append({"question_id": qid, "answer": (r["prediction"] or "").strip()})
        path.write_text(json.dumps(rows))
        return [path]
