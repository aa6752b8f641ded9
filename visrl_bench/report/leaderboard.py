"""`visrl-bench leaderboard`: any set of eval runs as one table, every value with its 95% CI and n.

A run is a dir with results.json + samples.jsonl (what `eval` writes). Its place in the table:
- an ablation cell (a `cell.json` beside results.json, written by `ablate`): row = configuration,
  column = base LMM, repeated seeds pooled;
- any other run: row = the model's dir name and mode, one column.

Values: a single run's number is its results.json metric with its CI (the task's exact metric). Runs of
several seeds are averaged; their CI resamples questions of the seed-averaged per-question scores (it
measures the test set's noise, the seeds' spread is reported beside it as `seed_sd`).
Differences to a reference row are paired: the same questions in both cells, per-question differences,
their bootstrap CI and a two-sided sign-flip permutation p-value (exact up to 16 questions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from visrl_bench.core.errors import VisrlError
from visrl_bench.metrics.stats import mean_ci, paired_difference

FORMATS = ("csv", "md", "png")
RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.jsonl"
CELL_FILE = "cell.json"
AVERAGE = "average"


@dataclass
class Run:
    path: Path  # the run dir
    row: str
    column: str
    seed: int | None
    results: dict[str, Any]
    description: str = ""
    _records: list[dict] | None = field(default=None, repr=False)

    @property
    def records(self) -> list[dict]:
        if self._records is None:
            from visrl_bench.core.rundir import read_records

            path = self.path / SAMPLES_FILE
            self._records = read_records(path) if path.is_file() else []
        return self._records

    def scores(self, task: str, metric: str) -> dict[str, float] | None:
        """Per-question scores in [0, 1] keyed by sample id, or None when the metric is not per question."""
        out = {}
        for rec in self.records:
            if rec.get("task") != task:
                continue
            value = sample_score(rec, metric)
            if value is None:
                return None
            out[rec["id"]] = value
        return out or None


def sample_score(record: dict, metric: str) -> float | None:
    """One question's contribution to `metric` (a mean of these is the metric, in [0, 1])."""
    focus = record.get("focus") or {}
    if metric == "focus_iou":
        return focus.get("iou")
    if metric.startswith("focus_acc@"):
        return None if focus.get("iou") is None else float(focus["iou"] >= float(metric.split("@")[1]))
    value = (record.get("scores") or {}).get(metric)
    return None if value is None else float(value)


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Every results.json at or under `paths`, placed in the table."""
    found: dict[Path, Run] = {}
    for p in paths:
        p = Path(p)
        if p.is_file() and p.name == RESULTS_FILE:
            candidates = [p]
        elif p.is_dir():
            candidates = sorted(p.rglob(RESULTS_FILE))
        else:
            raise VisrlError(f"{p}: no such run dir or results.json")
        if not candidates:
            raise VisrlError(f"{p}: no results.json in or under it")
        for results_file in candidates:
            run_dir = results_file.parent.resolve()
            if run_dir not in found:
                found[run_dir] = load_run(run_dir)
    return list(found.values())


def load_run(run_dir: Path) -> Run:
    try:
        results = json.loads((run_dir / RESULTS_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise VisrlError(f"{run_dir / RESULTS_FILE}: not a readable results file ({exc})") from exc
    if not isinstance(results.get("results"), dict):
        raise VisrlError(f"{run_dir / RESULTS_FILE}: no `results` object (not an eval run)")
    cell_file = run_dir / CELL_FILE
    if cell_file.is_file():
        cell = json.loads(cell_file.read_text())
        return Run(run_dir, cell["row"], cell["base"], cell.get("seed"), results, cell.get("description", ""))
    config = results.get("config", {})
    model = Path(str(config.get("model", run_dir.name))).name
    return Run(run_dir, f"{model} ({config.get('mode', '?')})", "score", None, results)


def _metrics_of(runs: list[Run]) -> list[tuple[str, str]]:
    """(task, metric) pairs to show by default: every task's headline metrics, in first-seen order."""
    from visrl_bench.core.registry import TASKS

    out: list[tuple[str, str]] = []
    for run in runs:
        for task in run.results["results"]:
            try:
                names = TASKS.load(task).headline_metrics
            except Exception:  # an unregistered task: its first metric with a CI
                names = [k[:-5] for k in run.results["results"][task] if k.endswith("_ci95")][:1]
            for name in names:
                if (task, name) not in out:
                    out.append((task, name))
    return out


# --- the table ---------------------------------------------------------------------------------------------
@dataclass
class Entry:
    """One (row, column, task, metric) value of the table."""

    row: str
    column: str
    task: str
    metric: str
    value: float | None
    ci: tuple[float, float] | None
    n: int | None
    seeds: int
    seed_sd: float | None
    runs: list[Path]
    scores: dict[str, float] | None  # per question, averaged over seeds
    diff: float | None = None
    diff_ci: tuple[float, float] | None = None
    diff_p: float | None = None
    diff_n: int | None = None


def _pooled_scores(runs: list[Run], task: str, metric: str) -> dict[str, float] | None:
    per_run = [r.scores(task, metric) for r in runs]
    if any(s is None for s in per_run):
        return None
    ids = set(per_run[0])
    if any(set(s) != ids for s in per_run):
        return None  # seeds scored different questions: no per-question pooling
    return {i: float(np.mean([s[i] for s in per_run])) for i in sorted(ids)}


def build_entries(
    runs: list[Run],
    metrics: list[tuple[str, str]] | None = None,
    reference: str | None = None,
    seed: int = 0,
    rows: list[str] | None = None,
    columns: list[str] | None = None,
) -> list[Entry]:
    """The table's values (rows and columns in first-seen order unless given), with differences to the
    `reference` row when one is named."""
    metrics = metrics or _metrics_of(runs)
    rows = rows or list(dict.fromkeys(r.row for r in runs))
    columns = columns or list(dict.fromkeys(r.column for r in runs))
    entries: list[Entry] = []
    for task, metric in metrics:
        for row, column in product(rows, columns):
            group = [r for r in runs if r.row == row and r.column == column and task in r.results["results"]]
            if not group:
                continue
            values = [r.results["results"][task].get(metric) for r in group]
            scores = _pooled_scores(group, task, metric)
            if any(v is None for v in values):
                continue
            if len(group) == 1:
                res = group[0].results["results"][task]
                ci, n = res.get(f"{metric}_ci95"), res.get("n")
                if metric.startswith("focus_"):
                    n = res.get("focus_n", n)
                entry_ci = tuple(ci) if ci else None
            else:
                entry_ci = mean_ci(np.array(list(scores.values())), seed)[1:] if scores else None
                n = len(scores) if scores else None
            entries.append(
                Entry(
                    row,
                    column,
                    task,
                    metric,
                    float(np.mean(values)),
                    entry_ci,
                    n,
                    len(group),
                    float(np.std(values, ddof=1)) if len(group) > 1 else None,
                    [r.path for r in group],
                    scores,
                )
            )
        if len(columns) > 1:
            entries += _averages(entries, task, metric, rows, columns, seed)
    if reference is not None:
        add_differences(entries, reference, seed)
    return entries


def _averages(entries, task, metric, rows, columns, seed) -> list[Entry]:
    """The average over columns (base LMMs): per question, then over questions, so its CI is paired."""
    out = []
    for row in rows:
        cells = [
            e for e in entries if (e.row, e.task, e.metric) == (row, task, metric) and e.column != AVERAGE
        ]
        if len(cells) != len(columns):
            continue
        scores = None
        if all(c.scores for c in cells) and len({frozenset(c.scores) for c in cells}) == 1:
            ids = sorted(cells[0].scores)
            scores = {i: float(np.mean([c.scores[i] for c in cells])) for i in ids}
        value = float(np.mean([c.value for c in cells]))
        ci = mean_ci(np.array(list(scores.values())), seed)[1:] if scores else None
        out.append(
            Entry(
                row,
                AVERAGE,
                task,
                metric,
                value,
                ci,
                len(scores) if scores else None,
                min(c.seeds for c in cells),
                None,
                [p for c in cells for p in c.runs],
                scores,
            )
        )
    return out


def add_differences(entries: list[Entry], reference: str, seed: int = 0) -> None:
    """Each row's difference to `reference` in the same column, paired over the same questions."""
    refs = {(e.column, e.task, e.metric): e for e in entries if e.row == reference}
    if not refs:
        raise VisrlError(f"reference row {reference!r} is not in the table")
    for e in entries:
        ref = refs.get((e.column, e.task, e.metric))
        if e.row == reference or ref is None or not e.scores or not ref.scores:
            continue
        e.diff, e.diff_ci, e.diff_p, e.diff_n = paired_difference(e.scores, ref.scores, seed)
