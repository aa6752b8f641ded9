"""A leaderboard's entries -> CSV (pandas), Markdown (with CIs, paired differences and links to the runs)
and a PNG chart (matplotlib, Agg backend); `write` writes the formats asked for."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from visrl_bench.core.errors import VisrlError
from visrl_bench.report import markdown
from visrl_bench.report.leaderboard import AVERAGE, CELL_FILE, FORMATS, RESULTS_FILE, Entry


def to_frame(entries: list[Entry], link_root: Path | None = None):
    import pandas as pd

    def link(e: Entry) -> str:
        paths = [p / RESULTS_FILE for p in e.runs]
        if link_root is not None:
            paths = [Path(os.path.relpath(p, link_root)) for p in paths]
        return ";".join(str(p) for p in paths)

    frame = pd.DataFrame(
        [
            {
                "row": e.row,
                "column": e.column,
                "task": e.task,
                "metric": e.metric,
                "value": _r(e.value),
                "ci_low": _r(e.ci[0]) if e.ci else None,
                "ci_high": _r(e.ci[1]) if e.ci else None,
                "n": e.n,
                "seeds": e.seeds,
                "seed_sd": _r(e.seed_sd),
                "diff_vs_reference": _r(e.diff),
                "diff_ci_low": _r(e.diff_ci[0]) if e.diff_ci else None,
                "diff_ci_high": _r(e.diff_ci[1]) if e.diff_ci else None,
                "diff_p_value": _r(e.diff_p, 4),
                "diff_n": e.diff_n,
                "results": link(e),
            }
            for e in entries
        ]
    )
    return frame.astype({"n": "Int64", "seeds": "Int64", "diff_n": "Int64"})


def _r(v: float | None, digits: int = 2) -> float | None:
    return None if v is None else round(float(v), digits) + 0.0  # + 0.0: no "-0.0"


def _cell_text(e: Entry | None, link_root: Path | None) -> str:
    if e is None:
        return "-"
    text = f"{e.value:.1f}"
    if e.ci:
        text += f" [{e.ci[0]:.1f}, {e.ci[1]:.1f}]"
    if e.column != AVERAGE and link_root is not None:
        target = Path(os.path.relpath(e.runs[0] / RESULTS_FILE, link_root))
        text = f"[{text}]({target.as_posix()})"
    return text


def _diff_text(e: Entry | None) -> str:
    if e is None or e.diff is None:
        return "-"
    p = "p < 0.001" if e.diff_p < 0.001 else f"p = {e.diff_p:.3f}"
    d, lo, hi = (round(v, 1) + 0.0 for v in (e.diff, *e.diff_ci))
    return f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}], {p}"


def to_markdown(
    entries: list[Entry],
    title: str = "Leaderboard",
    link_root: Path | None = None,
    reference: str | None = None,
    intro: str = "",
    descriptions: dict[str, str] | None = None,
) -> str:
    lines = [f"# {title}", ""]
    if intro:
        lines += [intro, ""]
    lines += [
        "Values in %, with 95% percentile-bootstrap CIs over questions. Pooled seeds: the mean of the seeds, "
        "CI over questions of the seed-averaged scores. Each value links to its results.json.",
        "",
    ]
    descriptions = descriptions or {}
    for task, metric in dict.fromkeys((e.task, e.metric) for e in entries):
        sub = [e for e in entries if (e.task, e.metric) == (task, metric)]
        rows = list(dict.fromkeys(e.row for e in sub))
        columns = list(dict.fromkeys(e.column for e in sub))
        at = {(e.row, e.column): e for e in sub}
        lines += metric_table(sub, link_root)
        if reference and any(e.diff is not None for e in sub):
            lines += [
                "",
                f"Difference to `{reference}` (row minus {reference}, paired over the same questions: "
                "mean, 95% bootstrap CI, two-sided sign-flip p-value):",
                "",
                *markdown.table(
                    ["configuration", *columns],
                    (
                        [row, *(_diff_text(at.get((row, c))) for c in columns)]
                        for row in rows
                        if row != reference
                    ),
                ),
            ]
        lines.append("")
    if descriptions:
        lines += ["Configurations:", ""]
        lines += [f"- `{row}`: {text}" for row, text in descriptions.items()]
        lines.append("")
    return "\n".join(lines)


def metric_table(entries: list[Entry], link_root: Path | None = None) -> list[str]:
    """Markdown lines of one (task, metric): a heading, n and seeds, then configuration x base LMM."""
    task, metric = entries[0].task, entries[0].metric
    rows = list(dict.fromkeys(e.row for e in entries))
    columns = list(dict.fromkeys(e.column for e in entries))
    at = {(e.row, e.column): e for e in entries}
    ns = sorted({e.n for e in entries if e.n is not None and e.column != AVERAGE})
    seeds = sorted({e.seeds for e in entries if e.column != AVERAGE})
    lines = [
        f"## {task}: {metric}",
        "",
        f"n = {', '.join(map(str, ns)) or '?'} questions; seeds per cell: {', '.join(map(str, seeds))}.",
        "",
        *markdown.table(
            ["configuration", *columns],
            ([row, *(_cell_text(at.get((row, c)), link_root) for c in columns)] for row in rows),
        ),
    ]
    return lines


def to_png(entries: list[Entry], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((e.task, e.metric) for e in entries))
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.6 * len(panels)), squeeze=False)
    for ax, (task, metric) in zip(axes[:, 0], panels, strict=True):
        sub = [e for e in entries if (e.task, e.metric) == (task, metric)]
        rows = list(dict.fromkeys(e.row for e in sub))
        columns = list(dict.fromkeys(e.column for e in sub))
        width = 0.8 / len(columns)
        at = {(e.row, e.column): e for e in sub}
        for k, column in enumerate(columns):
            xs, ys, lo, hi = [], [], [], []
            for i, row in enumerate(rows):
                e = at.get((row, column))
                if e is None:
                    continue
                xs.append(i + (k - (len(columns) - 1) / 2) * width)
                ys.append(e.value)
                lo.append(e.value - e.ci[0] if e.ci else 0.0)
                hi.append(e.ci[1] - e.value if e.ci else 0.0)
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=column)
        ax.set_xticks(range(len(rows)), rows, rotation=20, ha="right")
        ax.set_ylim(0, max(5.0, ax.get_ylim()[1]))  # an all-zero panel still shows a readable axis
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(f"{task}: {metric} (95% CI)")
        ax.grid(axis="y", alpha=0.3)
        if len(columns) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bundle_results(entries: list[Entry], into: Path, root: Path) -> None:
    """Copy each run's results.json (and cell.json) under `into`, at its path relative to `root`, and point
    the entries there: a committed table then links to provenance that is committed with it. The folder
    mirrors the table: runs of an earlier table that this one no longer has are removed."""
    if into.is_dir():
        shutil.rmtree(into)
    moved: dict[Path, Path] = {}
    for e in entries:
        for p in e.runs:
            if p not in moved:
                target = into / p.relative_to(root)
                target.mkdir(parents=True, exist_ok=True)
                for name in (RESULTS_FILE, CELL_FILE):
                    if (p / name).is_file():
                        shutil.copy2(p / name, target / name)
                moved[p] = target
        e.runs = [moved[p] for p in e.runs]


def write(
    entries: list[Entry],
    out: str | Path,
    formats: tuple[str, ...] = FORMATS,
    title: str = "Leaderboard",
    reference: str | None = None,
    intro: str = "",
    descriptions: dict[str, str] | None = None,
    extra_markdown: str = "",
) -> list[Path]:
    """OUT.csv / OUT.md / OUT.png (OUT without a suffix)."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise VisrlError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    if not entries:
        raise VisrlError("nothing to tabulate: no run has the requested metrics")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    root = out.parent.resolve()
    written = []
    if "csv" in formats:
        to_frame(entries, root).to_csv(out.with_suffix(".csv"), index=False)
        written.append(out.with_suffix(".csv"))
    if "md" in formats:
        text = to_markdown(entries, title, root, reference, intro, descriptions)
        out.with_suffix(".md").write_text(text + (("\n" + extra_markdown) if extra_markdown else ""))
        written.append(out.with_suffix(".md"))
    if "png" in formats:
        to_png(entries, out.with_suffix(".png"), title)
        written.append(out.with_suffix(".png"))
    return written
