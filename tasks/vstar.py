"""V*Bench (Wu & Xie, 2023): 191 high-resolution images, attribute and spatial-relation questions.

Layouts read from a local folder:
- the original release: `direct_attributes/` and `relative_position/`, each image `X.jpg` beside `X.json`
  with `question`, `options` (the FIRST option is always the correct one), `target_object`, `bbox`
  (list of [x, y, w, h] pixels). Sample id: `<category>/<stem>`.
- the `test_questions.jsonl` variant (`image`, `text` with "(A) ..." option lines, `category`,
  `question_id`, `label`). Sample id: `question_id`; `<category>/<stem>` is accepted too, and gold boxes are
  read from the same-stem JSON when it is there.

Because the original files always list the correct option first, options are shown in a seeded shuffled
order recorded per sample (`shuffle=False` keeps the file's order); `circular=True` asks every rotation
and counts a question right only if every rotation is right.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

from visrl_bench.core.boxes import Box, gold_box, image_dimensions
from visrl_bench.core.errors import DataError
from visrl_bench.core.io import iter_jsonl, read_json
from visrl_bench.metrics.choice import LETTERS, format_options, option_order, rotate
from visrl_bench.metrics.stats import add_metric, mean_ci_percent
from visrl_bench.task import BaseTask, ImageSource, Sample, as_bool, checked

CATEGORIES = ("direct_attributes", "relative_position")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
_OPTION_LINE = re.compile(r"^\(([A-Z])\)\s*(.*)$")
_TRAILING_INSTRUCTION = re.compile(r"^answer with the option", re.IGNORECASE)


class VStarBench(BaseTask):
    name = "vstar_bench"
    version = "1.0"
    description = (
        "V*Bench: attribute / relative-position MCQ on high-res images; shuffled options, focus boxes"
    )
    prompt_template = (
        "{question}\n{options}\nAnswer with the option's letter from the given choices directly."
    )
    headline_metrics = ("accuracy",)
    has_gold_boxes = True

    def __init__(self, data, split=None, *, seed: int = 0, shuffle: bool = True, circular: bool = False):
        super().__init__(data, split, seed=seed, shuffle=as_bool(shuffle), circular=as_bool(circular))
        self.shuffle = as_bool(shuffle)
        self.circular = as_bool(circular)
        jsonl = self.data / "test_questions.jsonl" if self.data.is_dir() else self.data
        self.layout = "jsonl" if jsonl.suffix == ".jsonl" and jsonl.is_file() else "folders"
        self.root = jsonl.parent if self.layout == "jsonl" else self.data
        if self.layout == "folders" and not any((self.root / c).is_dir() for c in CATEGORIES):
            raise DataError(
                self.data,
                "not a V*Bench folder: expected test_questions.jsonl or the category "
                f"folders {', '.join(CATEGORIES)}",
            )

    # --- loading ----------------------------------------------------------------------------------------
    def _questions(self) -> Iterator[dict]:
        """Yield one dict per question in the benchmark's order, whatever the layout."""
        if self.layout == "jsonl":
            yield from self._jsonl_questions(self.root / "test_questions.jsonl")
            return
        for category in CATEGORIES:
            folder = self.root / category
            if not folder.is_dir():
                continue
            for meta_path in sorted(folder.glob("*.json")):
                meta = read_json(meta_path, "V*Bench question file")
                for key in ("question", "options"):
                    if key not in meta:
                        raise DataError(meta_path, f"missing key {key!r}")
                options = meta["options"]
                if not isinstance(options, list) or len(options) < 2:
                    raise DataError(meta_path, "'options' must be a list of at least two answers")
                yield {
                    "id": f"{category}/{meta_path.stem}",
                    "aliases": (),
                    "category": category,
                    "question": str(meta["question"]),
                    "options": [str(o) for o in options],
                    "correct": 0,
                    "meta_path": meta_path,
                    "meta": meta,
                    "image": self._image_path(folder, meta_path.stem),
                }

    def _jsonl_questions(self, path: Path) -> Iterator[dict]:
        for lineno, row in iter_jsonl(path, "V*Bench test_questions.jsonl"):
            for key in ("image", "text", "category", "question_id", "label"):
                if key not in row:
                    raise DataError(path, f"missing key {key!r}", line=lineno)
            question, options = self._split_text(row["text"])
            if len(options) < 2:
                raise DataError(path, "no '(A) ...' option lines in 'text'", line=lineno)
            label = str(row["label"]).strip().strip("()").upper()
            if label not in LETTERS[: len(options)]:
                raise DataError(
                    path, f"label {row['label']!r} is not one of the {len(options)} options", line=lineno
                )
            image_rel = Path(str(row["image"]))
            stem_id = f"{row['category']}/{image_rel.stem}"
            meta_path = (self.root / image_rel).with_suffix(".json")
            meta = read_json(meta_path, "V*Bench question file") if meta_path.is_file() else {}
            yield {
                "id": str(row["question_id"]),
                "aliases": (stem_id,),
                "category": str(row["category"]),
                "question": question,
                "options": options,
                "correct": LETTERS.index(label),
                "meta_path": meta_path if meta else path,
                "line": None if meta else lineno,
                "meta": meta,
                "image": self.root / image_rel,
            }

    @staticmethod
    def _split_text(text: str) -> tuple[str, list[str]]:
        question_lines, options = [], []
        for line in str(text).splitlines():
            m = _OPTION_LINE.match(line.strip())
            if m:
                options.append(m.group(2).strip())
            elif not options and not _TRAILING_INSTRUCTION.match(line.strip()):
                question_lines.append(line)
        return "\n".join(question_lines).strip(), options

    @staticmethod
    def _image_path(folder: Path, stem: str) -> Path:
        for suffix in IMAGE_SUFFIXES:
            p = folder / f"{stem}{suffix}"
            if p.is_file():
                return p
        return folder / f"{stem}.jpg"  # reported as missing when the image is loaded

    def _gold_boxes(self, q: dict) -> tuple[list[Box], tuple[int, int] | None, str | None]:
        """The question's gold boxes, its image size, and what is wrong with its boxes (if anything)."""
        meta = q["meta"]

        def read() -> tuple[list[Box], tuple[int, int] | None]:
            boxes = [gold_box(raw, "xywh") for raw in meta.get("bbox", []) or []]
            size = None
            if "width" in meta and "height" in meta:
                size = image_dimensions(meta["width"], meta["height"])
            return boxes, size

        found, error = checked(read, path=q["meta_path"], line=q.get("line"))
        return (*found, None) if found else ([], None, error)

    def count(self) -> int:
        if self.layout == "jsonl":
            return sum(1 for _ in iter_jsonl(self.root / "test_questions.jsonl"))
        per_question = [
            len(read_json(p)["options"]) if self.circular else 1
            for c in CATEGORIES
            for p in (self.root / c).glob("*.json")
        ]
        return sum(per_question)

    def samples(self) -> Iterator[Sample]:
        for q in self._questions():
            boxes, size, error = self._gold_boxes(q)
            n = len(q["options"])
            base_order = option_order(q["id"], n, self.seed if self.shuffle else None)
            rotations = range(n) if self.circular else range(1)
            for k in rotations:
                order = rotate(base_order, k)
                sid = f"{q['id']}#rot{k}" if self.circular else q["id"]
                aliases = tuple(f"{a}#rot{k}" for a in q["aliases"]) if self.circular else q["aliases"]
                yield Sample(
                    id=sid,
                    question=q["question"],
                    answer=LETTERS[order.index(q["correct"])],
                    category=q["category"],
                    image_size=size,
                    gold_boxes=boxes,
                    aliases=aliases,
                    meta={
                        "options": q["options"],
                        "correct_index": q["correct"],
                        "option_order": order,
                        "group": q["id"],
                        "target_object": q["meta"].get("target_object"),
                    },
                    image=ImageSource(origin=str(q["meta_path"]), path=q["image"]),
                    error=error,
                )

    # --- prompting and scoring --------------------------------------------------------------------------
    @staticmethod
    def presented_options(sample: Sample, order: Sequence[int] | None = None) -> list[str]:
        order = sample.meta["option_order"] if order is None else order
        return [sample.meta["options"][i] for i in order]

    def prompt(self, sample: Sample) -> str:
        return self.prompt_template.format(
            question=sample.question, options=format_options(self.presented_options(sample))
        )

    def _order_from_row(self, sample: Sample, row: dict | None) -> list[int] | str:
        """The option order a prediction was asked in: the row's own record when it has one."""
        n = len(sample.meta["options"])
        if not row:
            return sample.meta["option_order"]
        if row.get("option_order") is not None:
            order = row["option_order"]
            if not (isinstance(order, list) and sorted(order) == list(range(n))):
                return f"option_order {order!r} is not a permutation of 0..{n - 1}"
            return order
        if row.get("options") is not None:
            texts = row["options"]
            if not (isinstance(texts, list) and sorted(map(str, texts)) == sorted(sample.meta["options"])):
                return f"options {texts!r} are not the question's options"
            remaining = list(range(n))
            order = []
            for t in texts:
                i = next(i for i in remaining if sample.meta["options"][i] == str(t))
                remaining.remove(i)
                order.append(i)
            return order
        return sample.meta["option_order"]

    def score(self, sample: Sample, prediction: str | None, row: dict | None = None) -> dict:
        order = self._order_from_row(sample, row)
        if isinstance(order, str):
            rec = self.record(sample, prediction, {"accuracy": 0.0}, error=order)
            rec["group"] = sample.meta["group"]
            return rec
        gold = LETTERS[order.index(sample.meta["correct_index"])]
        return self.choice_record(
            sample,
            prediction,
            self.presented_options(sample, order),
            gold,
            option_order=order,
            group=sample.meta["group"],
        )

    def oracle_prediction(self, sample: Sample) -> str:
        return sample.answer

    def aggregate(self, records: Sequence[dict]) -> dict:
        if not self.circular:
            out = self.mean_metrics(records)
            out["n"] = len(records)
            return out
        # circular: a question is one unit, right only if every rotation was right
        groups: dict[str, list[dict]] = defaultdict(list)
        for r in records:
            groups[r["group"]].append(r)
        units = [
            {
                "category": rs[0]["category"],
                "scores": {"accuracy": float(all(x["scores"]["accuracy"] == 1.0 for x in rs))},
            }
            for rs in groups.values()
        ]
        out = self.mean_metrics(units)
        value, ci = mean_ci_percent([r["scores"]["accuracy"] for r in records], seed=self.seed)
        add_metric(out, "rotation_accuracy", value, ci)
        out["n"] = len(units)
        return out
