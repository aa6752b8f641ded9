"""The `visrl-bench` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from visrl_bench.errors import VisrlError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Evaluate and train LMMs for intention-driven visual perception (VisRL).",
)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """`key=value` strings -> dict; values are read as YAML scalars (true, 3, 0.5, text)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise VisrlError(f"expected key=value, got {pair!r}")
        try:
            out[key.strip()] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


@app.command("list")
def list_command() -> None:
    """Every registered task (and model, mode, trainer) with its version and description."""
    from visrl_bench.registry import ALL

    for kind, registry in ALL.items():
        names = registry.names()
        if not names:
            continue
        typer.echo(f"{kind}:")
        for name in names:
            entry = registry.entry(name)
            obj = entry.load()
            info = getattr(obj, "info", None)
            if callable(info):
                _, version, description = info(**entry.kwargs)
            else:
                version, description = (
                    getattr(obj, "version", "-"),
                    (obj.__doc__ or "").strip().splitlines()[0],
                )
            typer.echo(f"  {name:<14} v{version:<6} {description}")


@app.command("score")
def score_command(
    task: Annotated[str, typer.Option(help="Task name (see `visrl-bench list`).")],
    data: Annotated[Path, typer.Option(help="The benchmark's local file or folder, in its real layout.")],
    predictions: Annotated[Path, typer.Option(help='JSONL rows {"id": ..., "prediction": "..."}.')],
    split: Annotated[str | None, typer.Option(help="Split, where the task has several.")] = None,
    box_format: Annotated[
        str | None, typer.Option(help="Convention of predicted boxes: norm | pixel | norm1000 | square_norm.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for option shuffling and bootstrap CIs.")] = 0,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option", "-o", help="Task option key=value, e.g. shuffle=false, circular=true, ocr=true."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    output: Annotated[Path | None, typer.Option(help="Write results.json and samples.jsonl here.")] = None,
) -> None:
    """Re-score stored predictions without a model."""
    from visrl_bench.registry import TASKS
    from visrl_bench.scoring import score_task, write_report

    try:
        options = parse_overrides(option)
        if box_format is not None:
            options["box_format"] = box_format
        task_obj = TASKS.build(task, data, split, seed=seed, **options)
        report = score_task(task_obj, predictions)
        written = write_report(report, task_obj, output) if output else []
    except VisrlError as exc:
        _fail(str(exc))

    if as_json:
        typer.echo(json.dumps(report.summary()))
    else:
        _print_report(report)
    for path in written:
        typer.echo(f"wrote {path}", err=as_json)


def _print_report(report) -> None:
    typer.echo(
        f"{report.task}: n={report.n}  missing={report.missing}  unknown ids={len(report.unknown_ids)}"
        f"  per-sample errors={report.errors}"
    )
    for name, value in report.metrics.items():
        if name.endswith("_ci95") or not isinstance(value, (int, float)):
            continue
        if isinstance(value, int):  # counts
            typer.echo(f"  {name:<32} {value:8d}")
            continue
        ci = report.metrics.get(f"{name}_ci95")
        ci_text = f"  [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
        typer.echo(f"  {name:<32} {value:8.2f}{ci_text}")
    if report.unknown_ids:
        typer.echo(
            f"  predictions for ids not in the data: {', '.join(report.unknown_ids[:10])}"
            + (" ..." if len(report.unknown_ids) > 10 else "")
        )
    for name, note in report.notes.items():
        typer.echo(f"  note: {name} = {note}")


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `visrl-bench list | head`
        sys.exit(0)


if __name__ == "__main__":
    main()
