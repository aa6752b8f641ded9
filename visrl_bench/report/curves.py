"""Training curves from the logs the trainers already write: every `log.csv` under a trainer's (or the
VisRL loop's, or the ablation grid's) output dir drawn as one PNG (loss; GRPO's rewards; DPO's reward
margins and accuracies, box and answer steps apart for step-DPO), and the VisRL loop's `summary.json` as
per-round accuracy, focus IoU and gold-crop accuracy. An index.html lists them.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

from visrl_bench.core.errors import DataError

# (panel title, which log columns it draws)
PANELS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("loss", lambda c: c == "loss" or c.endswith("/loss")),
    (
        "reward (GRPO)",
        lambda c: c in ("reward", "reward_std") or (c.startswith("rewards/") and c.endswith("/mean")),
    ),
    ("reward margins (DPO)", lambda c: c.endswith("rewards/margins")),
    ("reward accuracies (DPO)", lambda c: c.endswith("rewards/accuracies")),
)
MAX_LOGS = 200


def find_logs(root: Path) -> list[Path]:
    logs = [root / "log.csv"] if (root / "log.csv").is_file() else sorted(root.rglob("log.csv"))
    return logs[:MAX_LOGS]


def plot_log(path: Path, png: Path, title: str) -> list[str]:
    """One figure per log; returns the panels drawn (none when the log has no step rows)."""
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(path, f"unreadable training log: {exc}") from None
    if "step" not in frame.columns:
        raise DataError(path, "training log without a step column")
    panels = [(t, [c for c in frame.columns if pick(c) and frame[c].notna().any()]) for t, pick in PANELS]
    panels = [(t, cols) for t, cols in panels if cols]
    if not panels:
        return []
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (panel, cols) in zip(axes[0], panels, strict=True):
        for col in cols:
            rows = frame[["step", col]].dropna()
            ax.plot(rows["step"], rows[col], marker="." if len(rows) < 30 else None, label=col)
        ax.set_title(panel)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return [t for t, _ in panels]


def plot_rounds(summary: dict[str, Any], png: Path) -> list[str]:
    """The VisRL loop's per-round table: cot accuracy, focus IoU and gold-crop (gt_box) accuracy, with CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, metric = summary.get("rows", []), summary.get("metric", "accuracy")
    series = [
        (f"cot/{metric}", "accuracy (cot)"),
        ("cot/focus_iou", "focus IoU (cot)"),
        (f"gt_box/{metric}", "gold-crop accuracy (gt_box)"),
    ]
    drawn = []
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for key, label in series:
        points = [(i, r[key], r.get(f"{key}_ci95")) for i, r in enumerate(rows) if r.get(key) is not None]
        if not points:
            continue
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        err = [[y - (c[0] if c else y) for _, y, c in points], [(c[1] if c else y) - y for _, y, c in points]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
        drawn.append(label)
    ax.set_xticks(range(len(rows)), [r.get("model", str(i)) for i, r in enumerate(rows)])
    ax.set_ylabel("%")
    ax.set_title(f"VisRL rounds on {summary.get('task', '?')} (95% CIs)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return drawn


def write_curves(root: str | Path, out: str | Path) -> dict[str, Any]:
    """Every training log and round summary under ROOT as PNGs in OUT, with OUT/index.html."""
    import json

    root, out = Path(root), Path(out)
    figures: list[tuple[str, str, list[str]]] = []
    for n, log in enumerate(find_logs(root)):
        name = str(log.parent.relative_to(root)) if log.parent != root else root.name
        png = out / "curves" / f"{n:03d}.png"
        panels = plot_log(log, png, name)
        if panels:
            figures.append((name, f"curves/{png.name}", panels))
    summaries = (
        [root / "summary.json"] if (root / "summary.json").is_file() else sorted(root.rglob("summary.json"))
    )
    for n, path in enumerate(summaries[:MAX_LOGS]):
        try:
            summary = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(path, f"malformed JSON: {exc.msg}", line=exc.lineno) from None
        if not isinstance(summary, dict) or "rows" not in summary:
            continue  # not a VisRL loop's summary
        png = out / "curves" / f"rounds-{n:03d}.png"
        drawn = plot_rounds(summary, png)
        if drawn:
            name = str(path.parent.relative_to(root)) if path.parent != root else root.name
            figures.append((f"{name}: rounds", f"curves/{png.name}", drawn))
    if not figures:
        logs = list(find_logs(root))
        if logs:
            raise DataError(
                root,
                f"{len(logs)} training log(s) (log.csv) found, none with a column to draw (loss, reward, "
                "rewards/margins, ...) yet",
            )
        raise DataError(
            root,
            "not an eval run (no results.json) and no training logs (log.csv) or VisRL round summaries "
            "(summary.json) to draw",
        )
    items = "".join(
        f"<h2>{html.escape(name)}</h2><p>{html.escape(', '.join(panels))}</p><img src='{src}' alt='curves'>"
        for name, src, panels in figures
    )
    title = f"training curves: {html.escape(str(root))}"
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body style='font-family:sans-serif'><h1>{title}</h1>{items}</body></html>\n"
    )
    (out / "index.html").write_text(page, encoding="utf-8")
    return {"figures": len(figures), "index": str(out / "index.html")}
