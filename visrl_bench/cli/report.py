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
