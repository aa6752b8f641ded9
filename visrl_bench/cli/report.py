"""`leaderboard` and `export`: runs -> tables, a trained LoRA -> a merged checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from visrl_bench.cli.app import app, fail
from visrl_bench.core.errors import VisrlError


@app.command("leaderboard")
def leaderboard_command(
    runs: Annotated[list[Path], typer.Argument(help="Eval run dirs (or dirs holding them, searched).")],
    out: Annotated[Path, typer.Option(help="Output path without suffix: OUT.csv / OUT.md / OUT.png.")],
    format: Annotated[list[str] | None, typer.Option("--format", help="csv, md, png (repeatable).")] = None,
    metric: Annotated[
        list[str] | None, typer.Option(help="TASK:METRIC to show (repeatable); default: headline metrics.")
    ] = None,
    reference: Annotated[
        str | None, typer.Option(help="Row that the others are compared with (paired).")
    ] = None,
    title: Annotated[str, typer.Option(help="Title of the Markdown and the chart.")] = "Leaderboard",
    seed: Annotated[int, typer.Option(min=0, help="Bootstrap / permutation seed.")] = 0,
) -> None:
    """Eval runs as one table: value, 95% bootstrap CI and n per cell; paired differences to --reference."""
    from visrl_bench.report import leaderboard as lb
    from visrl_bench.report import render

    try:
        found = lb.find_runs(runs)
        metrics = None
        if metric:
            metrics = []
            for m in metric:
                task, sep, name = m.partition(":")
                if not sep:
                    raise VisrlError(f"--metric {m!r}: expected TASK:METRIC, e.g. vstar_bench:accuracy")
                metrics.append((task, name))
        entries = lb.build_entries(found, metrics, reference, seed)
        written = render.write(entries, out, tuple(format or lb.FORMATS), title=title, reference=reference)
    except VisrlError as exc:
        fail(str(exc))
    for path in written:
        typer.echo(f"wrote {path}")


@app.command("export")
def export_command(
    adapter: Annotated[Path, typer.Option(help="A saved LoRA adapter dir (adapter_config.json).")],
    base: Annotated[Path, typer.Option(help="The checkpoint the adapter was trained on.")],
    out: Annotated[Path, typer.Option(help="Where the merged checkpoint goes.")],
) -> None:
    """Merge a LoRA adapter into its base: a plain checkpoint that `eval` loads."""
    from visrl_bench.trainers.common import export

    try:
        path = export(adapter, base, out)
    except VisrlError as exc:
        fail(str(exc))
    typer.echo(f"wrote {path}")


@app.command("show")
def show_command(
    runs: Annotated[
        list[Path],
        typer.Argument(help="An eval run dir, or two over the same questions; or a trainer / ablation dir."),
    ],
    out: Annotated[Path, typer.Option(help="Report directory (index.html, pages, img/).")],
    filter: Annotated[
        str | None, typer.Option(help="correct | wrong (in the first run) | flipped (two runs differ).")
    ] = None,
    category: Annotated[str | None, typer.Option(help="Only the samples of this category.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most N samples.")] = None,
    contact_sheet: Annotated[
        Path | None, typer.Option(help="Also a PNG grid of the samples (a paper figure).")
    ] = None,
    page_size: Annotated[int, typer.Option(min=1, help="Samples per page.")] = 50,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """See where the model looked: a static HTML report of a run's samples (boxes drawn on the images,
    crops, every turn), two runs side by side, or a trainer's curves. Opens from disk, no server."""
    from visrl_bench.report.curves import write_curves
    from visrl_bench.report.show import write_report

    try:
        for run in runs:
            if not run.exists():
                raise VisrlError(f"{run}: no such directory")
            if not run.is_dir():
                raise VisrlError(f"{run}: a file; show takes an eval run dir (results.json) or a trainer dir")
        if len(runs) == 2 and not all((r / "results.json").is_file() for r in runs):
            lacking = next(r for r in runs if not (r / "results.json").is_file())
            raise VisrlError(f"{lacking}: no results.json; two runs side by side must both be eval runs")
        if len(runs) == 1 and not (runs[0] / "results.json").is_file():
            summary = write_curves(runs[0], out)
            typer.echo(f"wrote {_count(summary['figures'], 'figure')}: {summary['index']}")
            return
        summary = write_report(
            runs, out, filter, category, limit, contact_sheet, page_size=page_size, progress=progress
        )
    except VisrlError as exc:
        fail(str(exc))
    typer.echo(
        f"wrote {_count(summary['samples'], 'sample')} on {_count(summary['pages'], 'page')} "
        f"({summary['bytes'] / 1e6:.1f} MB, "
        f"{summary['seconds']:.1f} s): {summary['index']}"
    )
    if summary.get("bad_records"):
        typer.echo(f"{_count(summary['bad_records'], 'record')} could not be drawn (marked 'bad record')")
    if contact_sheet:
        typer.echo(f"wrote {contact_sheet}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
