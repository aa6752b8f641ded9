"""`show`'s runs read back: an eval run directory's results, records and tasks (its data found where the
run read it), runs named apart, the questions a report selects, and what each record says was looked at."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visrl_bench.core.boxes import Box
from visrl_bench.core.errors import DataError, VisrlError

FILTERS = ("correct", "wrong", "flipped")


@dataclass
class Run:
    """An eval run directory read back: its results, its records, and its tasks rebuilt from its config."""

    path: Path
    results: dict[str, Any]
    records: dict[tuple[str, str], dict] = field(default_factory=dict)
    tasks: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # how the report names the run (name_runs)
    _samples: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> id -> Sample, read once

    @property
    def name(self) -> str:
        return self.label or self.path.name

    @classmethod
    def load(cls, path: str | Path) -> Run:
        from visrl_bench.core.registry import TASKS
        from visrl_bench.core.rundir import read_records

        path = Path(path)
        results_file = path / "results.json"
        if not results_file.is_file():
            raise DataError(path, "no results.json: not a finished eval run")
        try:
            results = json.loads(results_file.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(results_file, f"malformed JSON: {exc.msg}", line=exc.lineno) from None
        run = cls(path, results)
        config = results.get("config", {})
        ran_in = (results.get("provenance") or {}).get("cwd")
        for spec in config.get("tasks", []):
            data = Path(spec["data"])
            if not data.is_absolute() and ran_in and (Path(ran_in) / data).exists():
                data = Path(ran_in) / data  # the path the run read, wherever `show` runs from
            run.tasks[spec["name"]] = TASKS.build(
                spec["name"],
                str(data),
                spec.get("split"),
                seed=config.get("seed", 0),
                **spec.get("options", {}),
            )
        for record in read_records(path / "samples.jsonl"):
            run.records[(record["task"], str(record["id"]))] = record
        return run

    def score(self, key: tuple[str, str]) -> float | None:
        """The record's headline score (None: an error record, or a question this run lacks)."""
        record = self.records.get(key)
        task = self.tasks.get(key[0])
        if record is None or task is None or record.get("error"):
            return None
        scores = record.get("scores") or {}
        headline = task.headline_metrics[0] if task.headline_metrics else next(iter(scores), None)
        value = scores.get(headline)
        return float(value) if isinstance(value, int | float) else None

    def headline(self) -> list[tuple[str, str, float, list[float] | None]]:
        """(task, metric, value, 95% CI) of each task's headline metrics and its focus IoU."""
        out = []
        for name, metrics in self.results.get("results", {}).items():
            task = self.tasks.get(name)
            names = [*(task.headline_metrics if task else ()), "focus_iou", "zoom_crops"]
            for metric in names:
                if isinstance(metrics.get(metric), int | float):
                    out.append((name, metric, metrics[metric], metrics.get(f"{metric}_ci95")))
        return out


def name_runs(runs: list[Run]) -> None:
    """Each run by its directory's name, or as many of its last path parts as tell the runs apart (two
    ablation cells are sft/qwen2_vl/seed0 and visrl/qwen2_vl/seed0, not seed0 twice)."""
    parts = [r.path.resolve().parts for r in runs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            break
    for run, label in zip(runs, labels, strict=True):
        run.label = label


def correct(score: float | None) -> bool | None:
    """A question counts as right when its headline score is at least 0.5 (VQA accuracy 0.6 or 1, a right
    choice, a box at IoU >= 0.5); None when it has no score."""
    return None if score is None else score >= 0.5


def select(
    runs: list[Run], filter: str | None, category: str | None, limit: int | None
) -> list[tuple[str, str]]:
    """The questions of the report, in the first run's order: in every run, of `category`, matching
    `filter` (correct / wrong in the first run; flipped: the two runs' outcomes differ)."""
    if filter is not None and filter not in FILTERS:
        raise VisrlError(f"--filter takes {', '.join(FILTERS)}, got {filter!r}")
    if filter == "flipped" and len(runs) != 2:
        raise VisrlError("--filter flipped compares two runs: give RUN and RUN2")
    first = runs[0]
    keys = [k for k in first.records if all(k in r.records for r in runs[1:])]
    if len(runs) == 2 and first.records and not keys:
        tasks = [sorted({t for t, _ in r.records}) for r in runs]
        raise VisrlError(
            f"{runs[0].path} and {runs[1].path} share no question (tasks {', '.join(tasks[0])} and "
            f"{', '.join(tasks[1])}): two runs are shown side by side over the same questions"
        )
    if category is not None:
        known = sorted(
            {str(first.records[k].get("category")) for k in keys if first.records[k].get("category")}
        )
        keys = [k for k in keys if first.records[k].get("category") == category]
        if not keys:
            raise VisrlError(
                f"--category {category!r}: no sample has it; categories: {', '.join(known) or 'none'}"
            )
    if filter in ("correct", "wrong"):
        keys = [k for k in keys if correct(first.score(k)) is (filter == "correct")]
    elif filter == "flipped":
        keys = [
            k
            for k in keys
            if None not in (correct(runs[0].score(k)), correct(runs[1].score(k)))
            and correct(runs[0].score(k)) != correct(runs[1].score(k))
        ]
    return keys[:limit] if limit is not None else keys


# --- what a record says was looked at --------------------------------------------------------------------
def focus_boxes(record: dict) -> list[dict]:
    """The model's box steps as the record holds them: every zoom turn, else the one focus step."""
    if record.get("zoom", {}).get("boxes"):
        return list(record["zoom"]["boxes"])
    return [record["focus"]] if record.get("focus") else []


def original_size(record: dict, sample) -> tuple[int, int] | None:
    size = record.get("image_size") or sample.image_size
    if not size:
        return None
    if not (isinstance(size, list | tuple) and len(size) == 2 and all(_pixel(v) and v >= 1 for v in size)):
        raise ValueError(f"image_size {size!r} is not two positive pixel counts")
    return (int(size[0]), int(size[1]))


def _pixel(value) -> bool:
    """A plausible pixel coordinate: a finite number of sane size (a hand-edited 1e308 is not drawn)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 1e6


def record_box(values) -> Box | None:
    if not values:
        return None
    if not (isinstance(values, list | tuple) and len(values) == 4 and all(_pixel(v) for v in values)):
        raise ValueError(f"box {values!r} is not four pixel coordinates")
    return Box(*values)


def keep_samples(run: Run, keys: list[tuple[str, str]]) -> None:
    """Read the tasks' samples behind `keys` (their images, gold boxes and answers) once, before the
    threads share them."""
    wanted: dict[str, set[str]] = {}
    for task_name, sample_id in keys:
        wanted.setdefault(task_name, set()).add(sample_id)
    for task_name, ids in wanted.items():
        task = run.tasks.get(task_name)
        found = {str(s.id): s for s in task.samples() if str(s.id) in ids} if task is not None else {}
        run._samples[task_name] = found


def sample_of(run: Run, key: tuple[str, str]):
    """The sample behind a record, None when its task or the sample is gone."""
    return run._samples.get(key[0], {}).get(key[1])
