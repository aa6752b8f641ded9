"""Re-score stored predictions against a task, without a model.

Predictions are JSONL rows `{"id": <the task's native id>, "prediction": "<raw model text>"}` (extra keys
such as V*Bench's `option_order` are passed to the task). Samples are streamed and matched by id; a sample
without a prediction counts as wrong and stays in n; a prediction whose id is not in the data is reported.
"""

from __future__ import annotations

import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visrl_bench import __version__
from visrl_bench.core.errors import DataError
from visrl_bench.core.io import iter_jsonl, json_line, json_text

MAX_LISTED_IDS = 20


def load_predictions(path: str | Path) -> dict[str, dict]:
    """id -> row, with errors naming the file and line for malformed rows and duplicate ids."""
    rows: dict[str, dict] = {}
    first_line: dict[str, int] = {}
    for lineno, row in iter_jsonl(path, "predictions file"):
        if "id" not in row:
            raise DataError(path, "row has no 'id'", line=lineno)
        if "prediction" not in row:
            raise DataError(path, "row has no 'prediction'", line=lineno)
        pred = row["prediction"]
        if pred is not None and not isinstance(pred, str):
            raise DataError(
                path, f"'prediction' must be text or null, got {type(pred).__name__}", line=lineno
            )
        key = str(row["id"])
        if key in rows:
            raise DataError(path, f"duplicate id {key!r} (first on line {first_line[key]})", line=lineno)
        rows[key] = row
        first_line[key] = lineno
    return rows


@dataclass
class ScoreReport:
    task: str
    metrics: dict[str, Any]
    n: int
    missing: int
    unknown_ids: list[str]
    errors: int
    records: list[dict] = field(repr=False)
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The `score --json` object."""
        out = {
            "task": self.task,
            "n": self.n,
            "metrics": self.metrics,
            "missing": self.missing,
            "unknown_ids": len(self.unknown_ids),
            "errors": self.errors,
        }
        if self.unknown_ids:
            out["unknown_id_examples"] = self.unknown_ids[:MAX_LISTED_IDS]
        if self.notes:
            out["notes"] = self.notes
        return out

    def results_json(self) -> dict[str, Any]:
        """results.json in the design's schema (lmms-eval-like)."""
        metrics = dict(self.metrics)
        return {
            "results": {
                self.task: {
                    **metrics,
                    "n": self.n,
                    "missing": self.missing,
                    "unknown_ids": len(self.unknown_ids),
                    "errors": self.errors,
                }
            },
            "notes": self.notes,
            "config": self.config,
            "provenance": self.provenance,
            "timing": {"seconds": round(self.seconds, 3)},
        }


def git_hash() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions(
    names: tuple[str, ...] = ("numpy", "pandas", "pyarrow", "pycocotools", "pillow"),
) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def score_task(task: Any, predictions: str | Path) -> ScoreReport:
    started = time.perf_counter()
    preds = load_predictions(predictions)
    records: list[dict] = []
    missing = 0
    for sample in task.samples():
        key = sample.id if sample.id in preds else next((a for a in sample.aliases if a in preds), None)
        row = preds.pop(key) if key is not None else None
        if row is None:
            missing += 1
        if sample.error:  # bad gold data: counted as an error, never scored
            records.append({**task.score(sample, None, None), "error": sample.error})
            continue
        records.append(task.score(sample, row["prediction"] if row else None, row))
    if not records:
        raise DataError(
            task.data, f"{task.name}: no samples found for split {getattr(task, 'split', None)!r}"
        )
    metrics = task.aggregate(records)
    n = metrics.pop("n", len(records))
    errors = sum(1 for r in records if r.get("error"))
    provenance = {
        "visrl_bench_version": __version__,
        "git_hash": git_hash(),
        "task_versions": {task.name: task.version},
        "prompt_sha256": {task.name: task.prompt_sha256},
        "predictions": str(predictions),
        "seed": task.seed,
        "package_versions": package_versions(),
    }
    return ScoreReport(
        task=task.name,
        metrics=metrics,
        n=n,
        missing=missing,
        unknown_ids=sorted(preds),
        errors=errors,
        records=records,
        config=task.config(),
        provenance=provenance,
        notes=dict(task.metric_notes),
        seconds=time.perf_counter() - started,
    )


def write_report(report: ScoreReport, task: Any, out_dir: str | Path) -> list[Path]:
    """results.json + samples.jsonl (+ the task's own files), each written whole then renamed, so an
    interrupted write never leaves a truncated file behind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    samples = out / "samples.jsonl"
    tmp = samples.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in report.records:
            f.write(json_line(r))
    tmp.replace(samples)
    written.append(samples)
    results = out / "results.json"
    tmp = results.with_suffix(".json.tmp")
    tmp.write_text(json_text(report.results_json(), indent=2))
    tmp.replace(results)
    written.append(results)
    written += task.write_outputs(report.records, out)
    return written
