"""`train`, `generate` and `ablate`: a trainer recipe, self-generated preference pairs, the ablation grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from visrl_bench.cli.app import NUM_PROCESSES_HELP, app, fail, relaunch
from visrl_bench.core.errors import VisrlError
from visrl_bench.core.io import json_text
from visrl_bench.core.registry import TRAINERS


@app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train_command(
    ctx: typer.Context,
    trainer: Annotated[str, typer.Option(help=f"A registered trainer: {', '.join(TRAINERS.names())}.")],
    config: Annotated[Path | None, typer.Option(help="YAML of the trainer's options.")] = None,
    num_processes: Annotated[int, typer.Option(min=1, help=NUM_PROCESSES_HELP)] = 1,
) -> None:
    """Run a trainer recipe: options from --config YAML, then `key=value` arguments (which win).

    Example: visrl-bench train --trainer sft --config sft.yaml model=ckpt/base out=runs/sft lr=1e-4
    """
    from visrl_bench.core.config import load_config
    from visrl_bench.core.distributed import ranks
    from visrl_bench.core.logs import output_to

    try:
        recipe = TRAINERS.load(trainer)
        cfg = load_config(recipe.config_class, config, list(ctx.args))
        missing = [k for k in ("model", "out") if hasattr(cfg, k) and not getattr(cfg, k)]
        if missing:
            raise VisrlError(f"trainer {trainer!r} needs {' and '.join(missing)} (key=value or in --config)")
        relaunch(
            num_processes,
            getattr(cfg, "model", None),
            getattr(cfg, "arch", None),
            getattr(cfg, "device", "auto"),
        )
        out = Path(cfg.out)
        where = ranks()
        log = out / ("train.log" if where.main else f"train.rank{where.rank}.log")
        with output_to(log, prints=False):  # library warnings; per-step logs are in log.csv
            path = recipe.run(cfg)
    except VisrlError as exc:
        fail(str(exc))
    if where.main:
        typer.echo(f"wrote {path} (library warnings: {log})")


@app.command("generate", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def generate_command(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="YAML of GenerateConfig options.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in the same dir.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace what the dir holds.")] = False,
    num_processes: Annotated[int, typer.Option(min=1, help=NUM_PROCESSES_HELP)] = 1,
) -> None:
    """Self-evolution data: K trajectories per question, scored by the task's metric, filtered, paired.

    Example: visrl-bench generate model=runs/sft/final task=zoomworld data=zw split=rl out=runs/gen k=8
    """
    from visrl_bench.core.config import load_config
    from visrl_bench.core.distributed import ranks
    from visrl_bench.datagen.pairs import GenerateConfig, generate

    try:
        cfg = load_config(GenerateConfig, config, list(ctx.args))
        missing = [k for k in ("model", "data", "out") if not getattr(cfg, k)]
        if missing:
            raise VisrlError(f"generate needs {', '.join(missing)} (key=value or in --config)")
        relaunch(num_processes, cfg.model, cfg.arch, cfg.device)
        stats = generate(cfg, resume=resume, overwrite=overwrite)
    except VisrlError as exc:
        fail(str(exc))
    if not ranks().main:
        return
    shown = {k: v for k, v in stats.items() if k not in ("config", "model")}
    typer.echo(json_text(shown, indent=2))


@app.command("ablate", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def ablate_command(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option(help="Ablation YAML: bases, task, data, rows, stages.")
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="quick (1 seed, 1 round) or full (3 seeds, 2 rounds).")
    ] = None,
    jobs: Annotated[int, typer.Option(min=1, help="Lanes (base x seed) run in parallel processes.")] = 1,
    progress: Annotated[bool, typer.Option(help="Progress bar over cells.")] = True,
    scheduler: Annotated[
        str,
        typer.Option(
            help="pool: worker processes here; local / slurm: each lane a submitit job (its local or "
            "Slurm executor, at most --jobs at a time)."
        ),
    ] = "pool",
    slurm: Annotated[
        list[str] | None,
        typer.Option(help="A submitit executor parameter key=value, e.g. slurm_partition=gpu (repeat)."),
    ] = None,
) -> None:
    """Every configuration x every base LMM (x seeds): one resumable cell each, then the leaderboard.

    Example: visrl-bench ablate --config configs/ablation_zoomworld.yaml --preset quick --jobs 2
    """
    from visrl_bench.experiments.ablation import load_ablation_config, run_ablation

    try:
        cfg = load_ablation_config(config, preset, list(ctx.args))
        from visrl_bench.core.config import option_values

        options = option_values(slurm or [])
        summary = run_ablation(cfg, jobs=jobs, progress=progress, scheduler=scheduler, slurm=options)
    except VisrlError as exc:
        fail(str(exc))
    if summary["table"]:
        typer.echo(summary["table"])
    typer.echo(
        f"{summary['done']}/{summary['cells']} cells done, {summary['failed']} failed, {summary['seconds']} s"
        + (f"; wrote {', '.join(summary['leaderboard'])}" if summary.get("leaderboard") else "")
        + (f"; leaderboard not written: {skipped}" if (skipped := summary.get("leaderboard_skipped")) else "")
    )
    if summary["failed"]:
        failed = [
            str(cfg.cell_dir(r.name, b, s))
            for r, b, s in cfg.cells()
            if (cfg.cell_dir(r.name, b, s) / "error.json").is_file()
        ]
        fail(
            f"{summary['failed']} cell(s) failed (see error.json; rerun to retry them): " + ", ".join(failed)
        )
