"""`lmms-eval` and `lmms-eval-task`: lmms-eval's own CLI with our model plug-in, a task exported for it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from visrl_bench.cli.app import app, fail
from visrl_bench.core.errors import VisrlError


@app.command(
    "lmms-eval",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def lmms_eval_command(ctx: typer.Context) -> None:
    """Run lmms-eval's own CLI with these arguments (needs the `lmms-eval` extra).

    The same as the `lmms-eval` command, except that a torchvision that cannot be imported (PyPI's CUDA
    build next to CPU torch) is treated as absent instead of crashing transformers' image processors.
    `--model visrl_cot --model_args pretrained=DIR,mode=cot` runs our adapters and reasoning modes.
    Unlike `lmms-eval` itself, it exits 1 when an evaluation raised (a missing checkpoint, a task's code):
    lmms-eval logs the error and exits 0.
    """
    try:
        import lmms_eval.cli.dispatch  # noqa: F401
    except ImportError as exc:
        fail(
            f'lmms-eval is not installed ({exc}); pip install -c requirements/lock-cpu.txt -e ".[lmms-eval]"'
        )
    from visrl_bench.lmms_eval.cli import run

    try:
        status = run(list(ctx.args))
    except VisrlError as exc:
        fail(str(exc))
    sys.exit(status)


@app.command("lmms-eval-task")
def lmms_eval_task_command(
    benchmark: Annotated[str, typer.Argument(help="The benchmark to convert (textvqa).")],
    data: Annotated[Path, typer.Option(help="The benchmark folder, as `eval --data` takes it.")],
    out: Annotated[Path, typer.Option(help="Task folder to write (pass it to --include_path).")],
    split: Annotated[str, typer.Option(help="The benchmark's split.")] = "val",
    task_name: Annotated[str, typer.Option(help="The lmms-eval task name.")] = "visrl_textvqa",
    max_new_tokens: Annotated[int, typer.Option(min=1, help="generation_kwargs.max_new_tokens")] = 64,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N questions.")] = None,
) -> None:
    """Write an lmms-eval task over a local benchmark copy (a `datasets` folder + task YAML), offline."""
    if benchmark != "textvqa":
        fail(f"lmms-eval-task converts textvqa only, not {benchmark!r}")
    from visrl_bench.lmms_eval.tasks import write_textvqa_task

    try:
        path = write_textvqa_task(
            data, out, split=split, task_name=task_name, max_new_tokens=max_new_tokens, limit=limit
        )
    except VisrlError as exc:
        fail(str(exc))
    typer.echo(f"wrote {path} (lmms-eval --include_path {path} --tasks {task_name})")
