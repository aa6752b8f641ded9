"""Records -> per-task results: the task's own metrics, then what the run adds (focus IoU and focus
parse failures over their own n, error counts and examples), with a metric-name collision refused."""

from __future__ import annotations

from typing import Any

import numpy as np

from visrl_bench.core.errors import VisrlError
from visrl_bench.metrics.stats import add_metric, bootstrap_ci, mean_ci_percent

RUN_COUNTS = {"errors", "missing_predictions", "error_examples"}  # what the run adds beside a task's metrics
FOCUS_NOTES = {
    "focus_iou": "IoU of the focus box with the gold box, over the focus_n samples whose focus step ran "
    "(errored samples are not in it; they are counted in errors)",
    "focus_parse_failure_rate": "% of the model's focus boxes that did not parse (the crop was then the "
    "full image)",
}
ZOOM_NOTES = {
    "zoom_crops": "crops per question (zoom); the first box is the focus box of focus_iou",
    "focus_iou_best": "IoU with the gold box of the best of a question's boxes (zoom)",
    "focus_iou_last": "IoU with the gold box of a question's last box (zoom)",
    "zoom_invalid_call_rate": "% of the replies after a crop that asked for one more crop (box-like numbers) "
    "whose box did not parse (the full image was shown again)",
}


def focus_metrics(records: list[dict], seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with_focus = [r for r in records if "focus" in r]
    if not with_focus:
        return out
    model_boxes = [r for r in with_focus if r["focus"]["source"] == "model"]
    if model_boxes:
        fails = sum(1 for r in model_boxes if r["focus"]["box"] is None)
        out["focus_parse_failure_rate"] = round(100 * fails / len(model_boxes), 6)
    ious = [r["focus"]["iou"] for r in with_focus if "iou" in r["focus"]]
    if ious:
        value, ci = mean_ci_percent(ious, seed=seed)
        add_metric(out, "focus_iou", value, ci)
        value, ci = mean_ci_percent([float(v >= 0.5) for v in ious], seed=seed)
        add_metric(out, "focus_acc@0.5", value, ci)
        out["focus_n"] = len(ious)
    out.update(zoom_metrics(with_focus, seed))
    return out


def zoom_metrics(records: list[dict], seed: int) -> dict[str, Any]:
    """Multi-turn zoom: crops per question, the best and the last box's IoU, invalid box calls."""
    out: dict[str, Any] = {}
    zoomed = [r["zoom"] for r in records if "zoom" in r]
    if not zoomed:
        return out
    crops = np.array([z["crops"] for z in zoomed], dtype=float)
    add_metric(out, "zoom_crops", float(crops.mean()), bootstrap_ci(crops, seed=seed))
    graded = [z["boxes"] for z in zoomed if all("iou" in b for b in z["boxes"])]
    if graded:
        for name, pick in (("focus_iou_best", max), ("focus_iou_last", lambda v: v[-1])):
            value, ci = mean_ci_percent([pick([b["iou"] for b in boxes]) for boxes in graded], seed=seed)
            add_metric(out, name, value, ci)
    replies = sum(z["crops"] for z in zoomed)
    out["zoom_invalid_call_rate"] = round(100 * sum(len(z["invalid_calls"]) for z in zoomed) / replies, 6)
    return out


def aggregate_run(tasks: list, records: list[dict], seed: int, limit: int | None = None) -> dict[str, dict]:
    """Per-task metrics over the records, in benchmark order (and within --limit, when a run that went further
    is re-read with a smaller one)."""
    results = {}
    for task in tasks:
        recs = sorted(
            (r for r in records if r["task"] == task.name and (limit is None or r["position"] < limit)),
            key=lambda r: r["position"],
        )
        if not recs:
            continue
        metrics = task.aggregate(recs)
        n = metrics.pop("n", len(recs))
        run_metrics = focus_metrics(recs, seed)
        clash = sorted(set(metrics) & (set(run_metrics) | RUN_COUNTS))
        if clash:  # one key, two meanings: the run's value would silently replace the task's
            raise VisrlError(
                f"task {task.name} reports metric(s) {', '.join(clash)}, which the focus step reports too; "
                "rename the task's metric"
            )
        metrics.update(run_metrics)
        errors = [r["error"] for r in recs if r.get("error")]
        results[task.name] = {
            **metrics,
            "n": n,
            "errors": len(errors),
            "missing_predictions": sum(1 for r in recs if r.get("prediction") is None),
        }
        if errors:  # what went wrong, where a reader of results.json or the terminal sees it
            results[task.name]["error_examples"] = list(dict.fromkeys(errors))[:3]
    return results
