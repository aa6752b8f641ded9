"""RefCOCO, RefCOCO+ (UNC splits val / testA / testB) and RefCOCOg (UMD splits val / test):
referring-expression grounding, one sample per sentence.

Layouts:
- the REFER release: a folder with `refs(unc).p` (RefCOCO/+) or `refs(umd).p` (RefCOCOg) and
  `instances.json`, loaded with pycocotools' COCO API. The `.p` file is a pickle, so it is read through a
  restricted unpickler that admits only builtin containers and scalars. Sample id: `sent_id`.
- the lmms-lab parquet layout (`<split>-*.parquet` with question_id, image, answer = list of sentences,
  bbox = [x, y, w, h]). Sample id: `<question_id>#<k>` for the k-th sentence.
Predictions are box text in the declared `box_format` (default `norm`); metrics Acc@0.5, Acc@0.75, mIoU.
"""

from __future__ import annotations

import contextlib
import io
import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from visrl_bench.core.boxes import (
    BoxConvention,
    as_convention,
    format_box,
    gold_box,
    image_dimensions,
    iou,
    parse_box,
)
from visrl_bench.core.errors import DataError
from visrl_bench.task import BaseTask, ImageSource, Sample, checked

DATASETS = {
    # name: (default split_by, splits)
    "refcoco": ("unc", ("train", "val", "testA", "testB")),
    "refcoco+": ("unc", ("train", "val", "testA", "testB")),
    "refcocog": ("umd", ("train", "val", "test")),
}


class UnsafePickleError(DataError):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    """Builtin containers and scalars are pickle opcodes, not globals: refusing every global admits exactly
    them, and refuses any pickle that would import or call something."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="utf-8")
        self.path = path

    def find_class(self, module: str, name: str):
        raise UnsafePickleError(
            self.path,
            f"refused to unpickle {module}.{name}: only builtin containers and "
            "scalars are allowed in a refs file",
        )


def load_refs(path: Path) -> list[dict]:
    try:
        with path.open("rb") as f:
            refs = _RestrictedUnpickler(f, path).load()
    except UnsafePickleError:
        raise
    except FileNotFoundError:
        raise DataError(path, "refs pickle not found") from None
    except Exception as exc:
        raise DataError(path, f"unreadable refs pickle: {type(exc).__name__}: {exc}") from None
    if not isinstance(refs, list):
        raise DataError(path, f"expected a list of refs, got {type(refs).__name__}")
    return refs


class RefCOCO(BaseTask):
    version = "1.0"
    prompt_template = (
        "Please provide the bounding box coordinate of the region this sentence describes: {sentence}"
    )
    headline_metrics = ("acc@0.5", "acc@0.75", "miou")
    reward_metric = "miou"  # graded: a closer box is a better trajectory, not just one over 0.5
    has_gold_boxes = True
    train_splits = ("train",)
    metric_notes: ClassVar[dict[str, str]] = {
        "acc@0.5": "share of sentences whose predicted box has IoU >= 0.5 with the gold box",
        "miou": "mean IoU; an unparsable or missing box scores 0",
    }

    @classmethod
    def info(cls, dataset: str = "refcoco", **_: Any) -> tuple[str, str, str]:
        by, splits = DATASETS[dataset]
        return (
            dataset,
            cls.version,
            (
                f"{dataset} ({by.upper()} splits {', '.join(s for s in splits if s != 'train')}):"
                " referring-expression grounding; Acc@0.5, Acc@0.75, mIoU"
            ),
        )

    def __init__(
        self,
        data,
        split=None,
        *,
        dataset: str = "refcoco",
        seed: int = 0,
        box_format: str = "norm",
        split_by: str | None = None,
        image_dir: str | None = None,
    ):
        if dataset not in DATASETS:
            raise DataError(data, f"unknown RefCOCO dataset {dataset!r}; one of {', '.join(DATASETS)}")
        default_by, splits = DATASETS[dataset]
        self.name, _, self.description = self.info(dataset)
        self.splits = splits
        self.default_split = "val"
        self.box_format = as_convention(box_format)
        if self.box_format is BoxConvention.RESIZED_PIXEL:
            raise DataError(
                data,
                "box_format resized_pixel needs each image's model input size; re-score with "
                "the convention converted by the eval run",
            )
        self.split_by = split_by or default_by
        super().__init__(
            data,
            split,
            seed=seed,
            box_format=self.box_format.value,
            split_by=self.split_by,
            image_dir=image_dir,
        )
        self.layout = "refer" if self._refs_path().is_file() else "parquet"
        if self.layout == "parquet" and not self._parquet_files():
            raise DataError(
                self.data, f"no refs({self.split_by}).p + instances.json, and no {self.split}-*.parquet files"
            )

    def _refs_path(self) -> Path:
        return self.data / f"refs({self.split_by}).p"

    def _parquet_files(self) -> list[Path]:
        files = sorted(self.data.glob(f"{self.split}-*.parquet")) + sorted(
            self.data.glob(f"data/{self.split}-*.parquet")
        )
        return files

    # --- loading ----------------------------------------------------------------------------------------
    def samples(self) -> Iterator[Sample]:
        yield from (self._refer_samples() if self.layout == "refer" else self._parquet_samples())

    def _refer_samples(self) -> Iterator[Sample]:
        from pycocotools.coco import COCO

        refs_path = self._refs_path()
        refs = load_refs(refs_path)
        instances = self.data / "instances.json"
        if not instances.is_file():
            raise DataError(instances, "instances.json not found (it must sit beside the refs pickle)")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress; keep stdout clean
                coco = COCO(str(instances))
        except Exception as exc:
            raise DataError(instances, f"not a COCO instances file: {type(exc).__name__}: {exc}") from None
        image_dir = Path(self.options["image_dir"] or self.data / "images")
        for i, ref in enumerate(refs):
            if not isinstance(ref, dict) or ref.get("split") != self.split:
                continue
            try:
                ann = coco.anns[ref["ann_id"]]
                img = coco.imgs[ref["image_id"]]
                sentences = ref["sentences"]
            except KeyError as exc:
                raise DataError(
                    refs_path, f"ref {ref.get('ref_id')} points to missing {exc}", row=i
                ) from None
            where = f"{instances} (annotation {ref['ann_id']})"
            size, size_error = checked(image_dimensions, img.get("width"), img.get("height"), path=where)
            gold, error = checked(gold_box, ann.get("bbox"), "xywh", path=where)
            error = size_error or error
            category = coco.cats.get(ann.get("category_id"), {}).get("name")
            for sent in sentences:
                yield Sample(
                    id=str(sent["sent_id"]),
                    question=str(sent.get("sent") or sent.get("raw", "")),
                    answer=gold,
                    category=category,
                    image_size=size,
                    gold_boxes=[gold] if gold else [],
                    meta={"ref_id": ref.get("ref_id"), "ann_id": ref["ann_id"]},
                    image=ImageSource(origin=str(refs_path), path=image_dir / img["file_name"], row=i),
                    error=error,
                )

    def _parquet_samples(self) -> Iterator[Sample]:
        import pyarrow.parquet as pq

        for path in self._parquet_files():
            pf = pq.ParquetFile(path)
            missing = [
                c for c in ("question_id", "image", "answer", "bbox") if c not in pf.schema_arrow.names
            ]
            if missing:
                raise DataError(path, f"parquet lacks column(s) {', '.join(missing)}")
            rows = (row for batch in pf.iter_batches(batch_size=64) for row in batch.to_pylist())
            for rowno, row in enumerate(rows):  # rows count from 0, as pyarrow and pandas index them
                raw = row["image"].get("bytes") if isinstance(row["image"], dict) else row["image"]

                size, size_error = checked(_header_size, raw, path=path, row=rowno)
                gold, error = checked(gold_box, row["bbox"], "xywh", path=path, row=rowno)
                error = size_error or error
                sentences = row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
                for k, sentence in enumerate(sentences):
                    yield Sample(
                        id=f"{row['question_id']}#{k}",
                        question=str(sentence),
                        answer=gold,
                        image_size=size,
                        gold_boxes=[gold] if gold else [],
                        meta={"question_id": row["question_id"]},
                        image=ImageSource(origin=str(path), data=raw, row=rowno),
                        error=error,
                    )

    # --- prompting and scoring --------------------------------------------------------------------------
    def prompt(self, sample: Sample) -> str:
        return self.prompt_template.format(sentence=sample.question)

    def score(self, sample: Sample, prediction: str | None, row: dict | None = None) -> dict:
        if prediction is None:
            return self.record(
                sample,
                None,
                dict.fromkeys(self.headline_metrics, 0.0),
                box=None,
                repairs=[],
                parse_error="missing",
            )
        # an eval run passes the model's own convention (and its input size, for resized_pixel) per row
        convention = (row or {}).get("box_format") or self.box_format
        resized = (row or {}).get("resized_size")
        parsed = parse_box(prediction, convention, sample.image_size, tuple(resized) if resized else None)
        value = iou(parsed.box, sample.answer) if parsed.box is not None else 0.0
        return self.record(
            sample,
            prediction,
            {"acc@0.5": float(value >= 0.5), "acc@0.75": float(value >= 0.75), "miou": value},
            box=parsed.box.as_list() if parsed.box else None,
            repairs=parsed.repairs,
            parse_error=parsed.reason,
            gold=sample.answer.as_list(),
        )

    def oracle_prediction(self, sample: Sample) -> str:
        return format_box(sample.answer, self.box_format, sample.image_size, decimals=6)

    def aggregate(self, records: Sequence[dict]) -> dict:
        out = self.mean_metrics(records, by_category=False)
        out["n"] = len(records)
        out["box_parse_failure_rate"] = round(
            100
            * sum(1 for r in records if r.get("parse_error") not in (None, "missing"))
            / max(len(records), 1),
            6,
        )
        return out


def _header_size(raw: bytes) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as im:  # reads the header only
            return im.size
    except Exception as exc:
        raise ValueError(f"unreadable image: {exc}") from None
