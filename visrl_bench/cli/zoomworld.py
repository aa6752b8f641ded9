"""`zoomworld generate | pretrain | baselines`: the synthetic benchmark and its tiny base LMMs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from visrl_bench.cli.app import fail, zoomworld_app
from visrl_bench.core.errors import VisrlError


@zoomworld_app.command("generate")
def zoomworld_generate(
    out: Annotated[Path, typer.Option(help="Folder to write the splits into.")],
    seed: Annotated[int, typer.Option(min=0, help="Same seed, byte-identical files.")] = 0,
    config: Annotated[Path | None, typer.Option(help="YAML overriding ZoomWorldConfig fields.")] = None,
) -> None:
    """Write ZoomWorld's pretrain / sft / rl / test splits (images + JSONL)."""
    from visrl_bench.core.config import load_config
    from visrl_bench.datagen.zoomworld import ZoomWorldConfig
    from visrl_bench.datagen.zoomworld_splits import generate

    try:
        cfg = load_config(ZoomWorldConfig, config)
    except VisrlError as exc:
        fail(str(exc))
    counts = generate(out, seed, cfg)
    typer.echo(f"wrote {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@zoomworld_app.command("pretrain")
def zoomworld_pretrain(
    arch: Annotated[str, typer.Option(help="llava | qwen2_vl | qwen3_vl")],
    data: Annotated[Path, typer.Option(help="A ZoomWorld folder (from `zoomworld generate`).")],
    out: Annotated[Path, typer.Option(help="Checkpoint directory to write.")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="PretrainConfig key=value overrides, e.g. steps=300.")
    ] = None,
    init: Annotated[
        Path | None, typer.Option(help="Continue from this checkpoint instead of a random init.")
    ] = None,
    grounding: Annotated[
        bool,
        typer.Option(help="The grounding stage's settings (the committed bases' stage 1, from scratch)."),
    ] = False,
    seed: Annotated[
        int | None, typer.Option(help="The run's seed (unset: PretrainConfig's, or a seed=N override).")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue from the newest checkpoint in OUT/checkpoints (written every save_every steps) "
            "to the weights an unbroken run ends with; a finished run is left as it is."
        ),
    ] = False,
    progress: Annotated[bool, typer.Option()] = True,
) -> None:
    """Train a tiny base LMM on the pretrain split (perception), or with --grounding on the ground split too
    (the Trainer's log in OUT/log.csv, grounding IoU on held-out scenes in OUT/provenance.json)."""
    from visrl_bench.core.config import load_config
    from visrl_bench.models.tiny import ARCHS
    from visrl_bench.trainers.base_recipes import GROUNDING_STAGE
    from visrl_bench.trainers.pretrain import PretrainConfig, train

    if arch not in ARCHS:
        fail(f"unknown arch {arch!r}; one of {', '.join(ARCHS)}")
    try:
        cfg = load_config(
            PretrainConfig,
            None,
            overrides,
            base=GROUNDING_STAGE if grounding else None,  # key=value overrides win over the stage's settings
            arch=arch,
            data=str(data),
            out=str(out),
            seed=seed,
            init=str(init) if init else None,
            resume=resume or None,
        )
        path = train(cfg, progress=progress)
    except (VisrlError, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"wrote {path}")


@zoomworld_app.command("baselines")
def zoomworld_baselines(
    from_scratch: Annotated[
        bool, typer.Option(help="Also regenerate the data and retrain both base models.")
    ] = False,
    models: Annotated[Path, typer.Option(help="Where the base checkpoints are (or go).")] = Path(
        "checkpoints/zoomworld"
    ),
    out: Annotated[Path, typer.Option(help="The Markdown table (a .json beside it).")] = Path(
        "leaderboards/zoomworld_baselines.md"
    ),
    work: Annotated[Path, typer.Option(help="Scratch folder for data and eval runs.")] = Path(
        "runs/zoomworld"
    ),
    seed: Annotated[int, typer.Option(min=0)] = 0,
    steps: Annotated[
        int | None,
        typer.Option(min=1, help="Steps of each base's last pretraining stage (with --from-scratch)."),
    ] = None,
    progress: Annotated[bool, typer.Option()] = True,
) -> None:
    """Measure direct / gt_box / random_box / center_box on ZoomWorld's test split for both base LMMs."""
    from visrl_bench.experiments.zoomworld import run_baselines

    command = "visrl-bench zoomworld baselines" + (" --from-scratch" if from_scratch else "")
    try:
        result = run_baselines(
            out, models, work, from_scratch, seed=seed, steps=steps, progress=progress, command=command
        )
    except VisrlError as exc:
        fail(str(exc))
    typer.echo(out.read_text())
    failed = [
        f"{arch}: {name}"
        for arch, checks in result["checks"].items()
        for name, ok in checks.items()
        if not ok
    ]
    if failed:
        typer.echo("checks that did not hold: " + "; ".join(failed), err=True)


@zoomworld_app.command("screen")
def zoomworld_screen(
    name: Annotated[str, typer.Option(help="The cell's name (its run folder; run again to resume it).")],
    arch: Annotated[str, typer.Option(help="llava | qwen2_vl | qwen3_vl")],
    stage: Annotated[str, typer.Option(help="ground (1-object localisation) | read (gold-crop reading)")],
    world: Annotated[
        Path | None, typer.Option(help="YAML of ZoomWorldConfig fields: the candidate geometry.")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="PretrainConfig key=value settings, e.g. steps=600 spec.patch_size=4."),
    ] = None,
    work: Annotated[Path, typer.Option(help="Worlds and runs.")] = Path("runs/zoomworld/screening"),
    results: Annotated[Path, typer.Option(help="JSONL the cell's row is appended to.")] = Path(
        "runs/zoomworld/screening/results.jsonl"
    ),
    progress: Annotated[bool, typer.Option()] = True,
) -> None:
    """One cell of the geometry screening protocol (docs/zoomworld.md): pretrain from scratch on one skill,
    probe it, append a row (command, steps, seconds, metrics). Resumable: checkpoints every 100 steps."""
    import json
    import shlex

    from visrl_bench.core.config import load_config, parse_overrides
    from visrl_bench.datagen.zoomworld import ZoomWorldConfig
    from visrl_bench.experiments.zoomworld import screen
    from visrl_bench.models.tiny import ARCHS

    if arch not in ARCHS:
        fail(f"unknown arch {arch!r}; one of {', '.join(ARCHS)}")
    # the cell's own options, as a user would retype them (sys.argv is someone else's under a test runner)
    words = ["zoomworld", "screen", "--name", name, "--arch", arch, "--stage", stage]
    words += ["--world", str(world)] if world else []
    command = "visrl-bench " + " ".join(shlex.quote(w) for w in [*words, *(overrides or [])])
    try:
        cfg = load_config(ZoomWorldConfig, world)
        row = screen(
            name,
            arch,
            stage,
            cfg,
            work,
            parse_overrides(overrides),
            results,
            command,
            progress=progress,
        )
    except (VisrlError, ValueError) as exc:
        fail(str(exc))
    typer.echo(json.dumps(row["probe"], indent=1))
