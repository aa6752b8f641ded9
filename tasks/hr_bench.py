"""HR-Bench 4K / 8K (Wang et al., 2024): MCQ on 4K / 8K images, fine-grained single-instance (FSP) and
cross-instance (FCP) perception, each question asked in several cycles with rotated options.

Layouts: the TSV (`index, question, answer, category, A, B, C, D, cycle_category, image` with the image as
base64; the 4K file is 1.9 GB) and the parquet with the same columns. Rows are STREAMED: the file is never
held in memory whole, and images are decoded only when a model asks for them.

Two accuracies, not to be confused:
- `accuracy`: accuracy within each cycle, averaged over cycles (what lmms-eval and VLMEvalKit report);
- `circular_accuracy`: a question counts only if it is right in every cycle (stricter).
A question's cycles are the rows that share category, question text and option set (the k-th such row of
each cycle belongs to the k-th question); images are never read to group them.
"""

from __future__ import annotations

import csv
import hashlib
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from visrl_bench.core.errors import DataError
from visrl_bench.metrics.choice import LETTERS, format_options
from visrl_bench.metrics.stats import add_metric, bootstrap_ci, mean_ci_percent
from visrl_bench.task import BaseTask, ImageSource, Sample

REQUIRED = ("index", "question", "answer", "category", "A", "B", "cycle_category", "image")
OPTION_COLUMNS = ("A", "B", "C", "D", "E", "F")
_MAX_REF_LEN = 64  # VLMEvalKit TSVs may store an image once and put the owner's index in other rows

METRIC_NOTES = {
    "accuracy": "per-cycle accuracy averaged over cycles (lmms-eval / VLMEvalKit convention)",
    "circular_accuracy": "strict: a question is right only if right in every cycle",
}


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def cycle_accuracy(matrix: np.ndarray) -> float:
    """Mean over cycles (columns) of the accuracy within each cycle; NaN marks a question absent from a
    cycle."""
    with np.errstate(invalid="ignore"):
        counts = np.sum(~np.isnan(matrix), axis=0)
        sums = np.nansum(matrix, axis=0)
    present = counts > 0
    return float(np.mean(sums[present] / counts[present])) if present.any() else float("nan")


class HRBench(BaseTask):
    version = "1.1"  # 1.1: cycles grouped without the image bytes
    prompt_template = "{question}\n{options}\nAnswer the option letter directly."
    headline_metrics = ("accuracy", "circular_accuracy")
    metric_notes = METRIC_NOTES

    @classmethod
    def info(cls, variant: str = "4k", **_: Any) -> tuple[str, str, str]:
        return (
            f"hr_bench_{variant}",
            cls.version,
            f"HR-Bench {variant.upper()}: FSP/FCP MCQ on {variant.upper()} "
            "images; per-cycle and strict circular accuracy",
        )

    def __init__(self, data, split=None, *, variant: str = "4k", seed: int = 0):
        self.variant = variant
        self.name, _, self.description = self.info(variant)
        super().__init__(data, split, seed=seed)
        self.file = self._locate(self.data)

    def _locate(self, data: Path) -> Path:
        if data.is_file():
            if data.suffix not in (".tsv", ".parquet"):
                raise DataError(data, "expected an HR-Bench .tsv or .parquet file")
            return data
        stem = f"hr_bench_{self.variant}"
        for candidate in (data / f"{stem}.tsv", data / f"{stem}.parquet"):
            if candidate.is_file():
                return candidate
        found = sorted(p for p in data.rglob(f"*{self.variant}*") if p.suffix in (".tsv", ".parquet"))
        if not found:
            raise DataError(data, f"no {stem}.tsv or {stem}.parquet in this folder")
        return found[0]

    # --- streaming rows ---------------------------------------------------------------------------------
    def _rows(self) -> Iterator[tuple[int, dict]]:
        """(line or row number, row) pairs, streamed."""
        if self.file.suffix == ".parquet":
            yield from self._parquet_rows()
        else:
            yield from self._tsv_rows()

    def _tsv_rows(self) -> Iterator[tuple[int, dict]]:
        csv.field_size_limit(sys.maxsize)  # one base64 8K image is tens of MB in a single field
        with self.file.open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f, delimiter="\t")
            try:
                header = next(reader)
            except StopIteration:
                raise DataError(self.file, "empty file") from None
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise DataError(self.file, f"header lacks column(s) {', '.join(missing)}", line=1)
            for fields in reader:
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue
                if len(fields) != len(header):
                    raise DataError(
                        self.file,
                        f"row has {len(fields)} fields, the header has {len(header)}",
                        line=reader.line_num,
                    )
                yield reader.line_num, dict(zip(header, fields, strict=True))

    def _parquet_rows(self) -> Iterator[tuple[int, dict]]:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self.file)
        except Exception as exc:
            raise DataError(self.file, f"not a readable parquet file: {exc}") from None
        missing = [c for c in REQUIRED if c not in pf.schema_arrow.names]
        if missing:
            raise DataError(self.file, f"parquet lacks column(s) {', '.join(missing)}")
        rows = (row for batch in pf.iter_batches(batch_size=16) for row in batch.to_pylist())
        yield from enumerate(rows)  # rows count from 0, as pyarrow and pandas index them

    @staticmethod
    def _image_payload(value: Any) -> str | bytes | None:
        if isinstance(value, dict):  # datasets' Image feature: {"bytes": ..., "path": ...}
            return value.get("bytes")
        return value

    def _reference_loader(self, ref: str) -> Any:
        def load() -> Any:
            for _, row in self._rows():
                if str(row["index"]).strip() == ref:
                    return self._image_payload(row["image"])
            raise DataError(self.file, f"image refers to index {ref}, which is not in the file")

        return load

    def samples(self) -> Iterator[Sample]:
        line_label = "row" if self.file.suffix == ".parquet" else "line"
        occurrences: dict[tuple[str, str], int] = defaultdict(int)
        seen: dict[str, int] = {}
        for lineno, row in self._rows():
            loc = {"line": lineno} if line_label == "line" else {"row": lineno}
            for col in REQUIRED:
                if _is_blank(row.get(col)):
                    raise DataError(self.file, f"empty value in column {col!r}", **loc)
            index = str(row["index"]).strip()
            if index.endswith(".0"):  # pandas-written float indices
                index = index[:-2]
            if index in seen:
                raise DataError(
                    self.file, f"duplicate index {index} (first at {line_label} {seen[index]})", **loc
                )
            seen[index] = lineno
            options = []
            for col in OPTION_COLUMNS:
                if col in row and not _is_blank(row[col]):
                    if len(options) != OPTION_COLUMNS.index(col):
                        raise DataError(self.file, f"option {col} follows an empty option", **loc)
                    options.append(str(row[col]).strip())
            answer = str(row["answer"]).strip().upper()
            if answer not in LETTERS[: len(options)]:
                raise DataError(
                    self.file,
                    f"answer {row['answer']!r} is not one of options {LETTERS[: len(options)]}",
                    **loc,
                )
            payload = self._image_payload(row["image"])
            if isinstance(payload, str) and len(payload) <= _MAX_REF_LEN and payload.strip().isdigit():
                image = ImageSource(
                    origin=str(self.file), loader=self._reference_loader(payload.strip()), **loc
                )
            else:
                image = ImageSource(origin=str(self.file), data=payload, **loc)
            question = str(row["question"]).strip()
            category = str(row["category"]).strip()
            cycle = str(row["cycle_category"]).strip()
            # A question is what the benchmark asks: category, text and option set. The image's bytes are
            # not part of it (a corrupt copy of one cycle's image must not split the question off into a
            # group of its own); questions that share all three are told apart by order within a cycle.
            asked = "\x1f".join([category, question, *sorted(options)])
            occurrence = occurrences[(asked, cycle)]
            occurrences[(asked, cycle)] += 1
            group = hashlib.blake2b(f"{asked}\x1f{occurrence}".encode(), digest_size=12).hexdigest()
            yield Sample(
                id=index,
                question=question,
                answer=answer,
                category=category,
                meta={"options": options, "cycle": cycle, "group": group},
                image=image,
            )

    def count(self) -> int | None:
        if self.file.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(self.file).metadata.num_rows
        return None  # counting TSV rows means reading the whole (GB-sized) file

    # --- prompting and scoring --------------------------------------------------------------------------
    def prompt(self, sample: Sample) -> str:
        return self.prompt_template.format(
            question=sample.question, options=format_options(sample.meta["options"])
        )

    def score(self, sample: Sample, prediction: str | None, row: dict | None = None) -> dict:
        return self.choice_record(
            sample,
            prediction,
            sample.meta["options"],
            sample.answer,
            cycle=sample.meta["cycle"],
            group=sample.meta["group"],
        )

    def oracle_prediction(self, sample: Sample) -> str:
        return sample.answer

    def _summary(self, records: Sequence[dict], prefix: str, out: dict) -> None:
        cycles = sorted({r["cycle"] for r in records})
        groups = sorted({r["group"] for r in records})
        gi = {g: i for i, g in enumerate(groups)}
        ci_ = {c: i for i, c in enumerate(cycles)}
        matrix = np.full((len(groups), len(cycles)), np.nan)
        for r in records:
            matrix[gi[r["group"]], ci_[r["cycle"]]] = r["scores"]["accuracy"]
        # resample questions (rows of the matrix), not file rows: a question's cycles are not independent
        acc = cycle_accuracy(matrix)
        lo, hi = bootstrap_ci(matrix, cycle_accuracy, seed=self.seed)
        add_metric(out, f"{prefix}accuracy", 100 * acc, (100 * lo, 100 * hi))
        strict = [float(np.all(row[~np.isnan(row)] == 1.0)) for row in matrix]
        value, ci = mean_ci_percent(strict, seed=self.seed)
        add_metric(out, f"{prefix}circular_accuracy", value, ci)
        out[f"{prefix}n"] = len(groups)
        out[f"{prefix}n_rows"] = len(records)

    def aggregate(self, records: Sequence[dict]) -> dict:
        out: dict[str, Any] = {}
        if not records:
            return {"n": 0}
        self._summary(records, "", out)
        by_cat: dict[str, list[dict]] = defaultdict(list)
        by_cycle: dict[str, list[float]] = defaultdict(list)
        for r in records:
            by_cat[r["category"]].append(r)
            by_cycle[r["cycle"]].append(r["scores"]["accuracy"])
        for cat in sorted(by_cat):
            self._summary(by_cat[cat], f"{cat}/", out)
        for cycle in sorted(by_cycle):
            out[f"cycle:{cycle}/accuracy"] = round(100 * float(np.mean(by_cycle[cycle])), 6)
        return out
