"""The `visrl-bench` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from visrl_bench.core.config import option_values
from visrl_bench.core.errors import VisrlError
from visrl_bench.core.io import json_text, read_yaml_mapping

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Evaluate and train LMMs for intention-driven visual perception (VisRL).",
)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@app.command("list")
def list_command() -> None:
    """Every registered task (and model, mode, trainer) with its version and description."""
    from visrl_bench.core.registry import ALL

    for kind, registry in ALL.items():
        names = registry.names()
        if not names:
            continue
        typer.echo(f"{kind}:")
        for name in names:
            entry = registry.entry(name)
            if entry.description:
                typer.echo(f"  {name:<14} {'':<7} {entry.description}")
                continue
            obj = entry.load()
            info = getattr(obj, "info", None)
            if callable(info):
                _, version, description = info(**entry.kwargs)
            else:
                version = getattr(obj, "version", "-")
                description = getattr(obj, "description", None) or (obj.__doc__ or "").strip().split("\n")[0]
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
    seed: Annotated[int, typer.Option(min=0, help="Seed for option shuffling and bootstrap CIs.")] = 0,
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
    from visrl_bench.core.registry import TASKS
    from visrl_bench.eval.scoring import score_task, write_report

    try:
        options = option_values(option)
        if box_format is not None:
            options["box_format"] = box_format
        task_obj = TASKS.build(task, data, split, seed=seed, **options)
        report = score_task(task_obj, predictions)
        written = write_report(report, task_obj, output) if output else []
    except VisrlError as exc:
        _fail(str(exc))

    if as_json:
        typer.echo(json_text(report.summary()))
    else:
        _print_report(report)
    for path in written:
        typer.echo(f"wrote {path}", err=as_json)


def _task_specs(tasks: list[str], data: list[Path], splits: list[str] | None, options: dict[str, Any]):
    """Pair the i-th --task with the i-th --data (and --split); `-o task.key=value` targets one task."""
    from visrl_bench.eval.evaluate import TaskSpec

    if len(tasks) != len(data):
        raise VisrlError(f"give one --data per --task ({len(tasks)} tasks, {len(data)} data paths)")
    splits = list(splits or [])
    if len(splits) not in (0, 1, len(tasks)):
        raise VisrlError("give no --split, one for every task, or one per --task")
    specs = []
    for i, (name, path) in enumerate(zip(tasks, data, strict=True)):
        split = splits[i] if len(splits) == len(tasks) else (splits[0] if splits else None)
        own = {k: v for k, v in options.items() if "." not in k}
        own.update({k.split(".", 1)[1]: v for k, v in options.items() if k.startswith(f"{name}.")})
        specs.append(TaskSpec(name=name, data=str(path), split=split, options=own))
    return specs


@app.command("eval")
def eval_command(
    ctx: typer.Context,
    model: Annotated[
        Path | None, typer.Option(help="Local checkpoint directory (config.json + safetensors).")
    ] = None,
    task: Annotated[list[str] | None, typer.Option(help="Task name; repeat for several tasks.")] = None,
    data: Annotated[
        list[Path] | None, typer.Option(help="Data path for each --task, in the same order.")
    ] = None,
    split: Annotated[
        list[str] | None, typer.Option(help="Split (once for all tasks, or once per task).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="YAML with any of these options (tasks as a list of {name, data, split, options}); "
            "flags given on the command line win."
        ),
    ] = None,
    mode: Annotated[
        str, typer.Option(help="direct | cot | gt_box | random_box | center_box | box_no_crop")
    ] = "direct",
    output: Annotated[Path | None, typer.Option(help="Run directory (default runs/<model>-<mode>).")] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --output, skipping finished samples.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a run already in --output.")] = False,
    limit: Annotated[int | None, typer.Option(help="Only the first N samples of each task.")] = None,
    batch_size: Annotated[
        int, typer.Option(help="Generation batch size (left padding, sorted by length).")
    ] = 1,
    max_new_tokens: Annotated[int, typer.Option()] = 64,
    temperature: Annotated[float, typer.Option(help="0 = greedy (default).")] = 0.0,
    top_p: Annotated[float, typer.Option()] = 1.0,
    top_k: Annotated[int, typer.Option(help="0 = transformers' default (50).")] = 0,
    num_return_sequences: Annotated[int, typer.Option(help="K samples per prompt (scored: the first).")] = 1,
    arch: Annotated[str | None, typer.Option(help="Override the architecture read from config.json.")] = None,
    box_format: Annotated[str | None, typer.Option(help="Override the model's box convention.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    dtype: Annotated[
        str, typer.Option(help="auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16")
    ] = "auto",
    trust_remote_code: Annotated[
        bool, typer.Option(help="Allow code shipped with the checkpoint to run.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed for shuffles, random boxes, sampling and CIs.")] = 0,
    crop_min_side: Annotated[
        int | None, typer.Option(help="Minimum crop side in pixels (default: the task's; Visual-CoT: 224).")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Task option key=value (or task.key=value for one task)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Evaluate a local LMM checkpoint on tasks, directly or with visual chain-of-thought."""
    from visrl_bench.eval.evaluate import eval_config_from_dict, evaluate

    try:
        values = read_yaml_mapping(config) if config else {}
        for name, value in ctx.params.items():
            # by name: typer may ship its own copy of click, whose ParameterSource is another class
            source = ctx.get_parameter_source(name)
            explicit = getattr(source, "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")
            if name in ("config", "task", "data", "split", "option"):
                continue
            if explicit or name not in values:
                values[name] = str(value) if isinstance(value, Path) else value
        if task or data or "tasks" not in values:
            values["tasks"] = _task_specs(task or [], data or [], split, option_values(option))
        elif option:
            raise VisrlError("with tasks from --config, put task options in the YAML (tasks[].options)")
        output_dir, resume, overwrite, progress = (
            values.pop(k) for k in ("output", "resume", "overwrite", "progress")
        )
        if not values.get("model"):
            raise VisrlError("give --model (or `model:` in --config)")
        if not values["tasks"]:
            raise VisrlError("give at least one --task with its --data (or `tasks:` in --config)")
        cfg = eval_config_from_dict(values, source=str(config) if config else "the command line")
        out = (
            Path(output_dir) if output_dir else Path("runs") / f"{Path(cfg.model).resolve().name}-{cfg.mode}"
        )
        results = evaluate(cfg, out, resume=resume, overwrite=overwrite, progress=progress)
    except VisrlError as exc:
        _fail(str(exc))
    _print_results(results)
    typer.echo(f"wrote {out / 'results.json'} and {out / 'samples.jsonl'}")


def _print_results(results: dict) -> None:
    for name, metrics in results["results"].items():
        timing = results["timing"].get(name, {})
        rate = timing.get("samples_per_second")
        typer.echo(
            f"{name}: n={metrics['n']}  errors={metrics['errors']}"
            # focus IoU is over the samples whose focus step ran, not over n
            + (f"  focus_n={metrics['focus_n']}" if "focus_n" in metrics else "")
            + (f"  {rate:.2f} samples/s" if rate else "")
        )
        for key, value in metrics.items():
            if key.endswith("_ci95") or "/" in key or key in ("n", "errors") or not isinstance(value, float):
                continue
            ci = metrics.get(f"{key}_ci95")
            typer.echo(f"  {key:<28} {value:8.2f}" + (f"  [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""))
        for example in metrics.get("error_examples", []):
            typer.echo(f"  error: {example[:300]}")


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


zoomworld_app = typer.Typer(
    no_args_is_help=True, help="ZoomWorld: the synthetic benchmark and its tiny base LMMs."
)
app.add_typer(zoomworld_app, name="zoomworld")


@zoomworld_app.command("generate")
def zoomworld_generate(
    out: Annotated[Path, typer.Option(help="Folder to write the splits into.")],
    seed: Annotated[int, typer.Option(min=0, help="Same seed, byte-identical files.")] = 0,
    config: Annotated[Path | None, typer.Option(help="YAML overriding ZoomWorldConfig fields.")] = None,
) -> None:
    """Write ZoomWorld's pretrain / sft / rl / test splits (images + JSONL)."""
    from visrl_bench.core.config import load_config
    from visrl_bench.datagen.zoomworld import ZoomWorldConfig, generate

    try:
        cfg = load_config(ZoomWorldConfig, config)
    except VisrlError as exc:
        _fail(str(exc))
    counts = generate(out, seed, cfg)
    typer.echo(f"wrote {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@zoomworld_app.command("pretrain")
def zoomworld_pretrain(
    arch: Annotated[str, typer.Option(help="llava | qwen2_vl")],
    data: Annotated[Path, typer.Option(help="A ZoomWorld folder (from `zoomworld generate`).")],
    out: Annotated[Path, typer.Option(help="Checkpoint directory to write.")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="PretrainConfig key=value overrides, e.g. steps=300.")
    ] = None,
    init: Annotated[
        Path | None, typer.Option(help="Continue from this checkpoint instead of a random init.")
    ] = None,
    grounding: Annotated[
        bool, typer.Option(help="The grounding stage's settings (with --init: the committed bases' stage 2).")
    ] = False,
    seed: Annotated[int, typer.Option()] = 0,
    progress: Annotated[bool, typer.Option()] = True,
) -> None:
    """Train a tiny base LMM on the pretrain split (perception), or with --grounding on the ground split too
    (loss log in OUT/loss.csv, grounding IoU on held-out scenes in OUT/provenance.json)."""
    from visrl_bench.core.config import load_config
    from visrl_bench.models.tiny import ARCHS
    from visrl_bench.trainers.pretrain import GROUNDING_STAGE, PretrainConfig, train

    if arch not in ARCHS:
        _fail(f"unknown arch {arch!r}; one of {', '.join(ARCHS)}")
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
        )
        path = train(cfg, progress=progress)
    except (VisrlError, ValueError) as exc:
        _fail(str(exc))
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
    steps: Annotated[int, typer.Option(min=1, help="Pretraining steps (with --from-scratch).")] = 900,
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
        _fail(str(exc))
    typer.echo(out.read_text())
    failed = [
        f"{arch}: {name}"
        for arch, checks in result["checks"].items()
        for name, ok in checks.items()
        if not ok
    ]
    if failed:
        typer.echo("checks that did not hold: " + "; ".join(failed), err=True)


@app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train_command(
    ctx: typer.Context,
    trainer: Annotated[str, typer.Option(help="A registered trainer: sft, dpo, step_dpo, visrl.")],
    config: Annotated[Path | None, typer.Option(help="YAML of the trainer's options.")] = None,
) -> None:
    """Run a trainer recipe: options from --config YAML, then `key=value` arguments (which win).

    Example: visrl-bench train --trainer sft --config sft.yaml model=ckpt/base out=runs/sft lr=1e-4
    """
    from visrl_bench.core.config import load_config
    from visrl_bench.core.logs import output_to
    from visrl_bench.core.registry import TRAINERS

    try:
        recipe = TRAINERS.load(trainer)
        cfg = load_config(recipe.config_class, config, list(ctx.args))
        missing = [k for k in ("model", "out") if hasattr(cfg, k) and not getattr(cfg, k)]
        if missing:
            raise VisrlError(f"trainer {trainer!r} needs {' and '.join(missing)} (key=value or in --config)")
        out = Path(cfg.out)
        with output_to(out / "train.log", prints=False):  # library warnings; per-step logs are in log.csv
            path = recipe.run(cfg)
    except VisrlError as exc:
        _fail(str(exc))
    typer.echo(f"wrote {path} (library warnings: {out / 'train.log'})")


@app.command("generate", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def generate_command(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="YAML of GenerateConfig options.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in the same dir.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace what the dir holds.")] = False,
) -> None:
    """Self-evolution data: K trajectories per question, scored by the task's metric, filtered, paired.

    Example: visrl-bench generate model=runs/sft/final task=zoomworld data=zw split=rl out=runs/gen k=8
    """
    from visrl_bench.core.config import load_config
    from visrl_bench.datagen.pairs import GenerateConfig, generate

    try:
        cfg = load_config(GenerateConfig, config, list(ctx.args))
        missing = [k for k in ("model", "data", "out") if not getattr(cfg, k)]
        if missing:
            raise VisrlError(f"generate needs {', '.join(missing)} (key=value or in --config)")
        stats = generate(cfg, resume=resume, overwrite=overwrite)
    except VisrlError as exc:
        _fail(str(exc))
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
) -> None:
    """Every configuration x every base LMM (x seeds): one resumable cell each, then the leaderboard.

    Example: visrl-bench ablate --config configs/ablation_zoomworld.yaml --preset quick --jobs 2
    """
    from visrl_bench.experiments.ablation import load_ablation_config, run_ablation

    try:
        cfg = load_ablation_config(config, preset, list(ctx.args))
        summary = run_ablation(cfg, jobs=jobs, progress=progress)
    except VisrlError as exc:
        _fail(str(exc))
    if summary["table"]:
        typer.echo(summary["table"])
    typer.echo(
        f"{summary['done']}/{summary['cells']} cells done, {summary['failed']} failed, {summary['seconds']} s"
        + (f"; wrote {', '.join(summary['leaderboard'])}" if summary.get("leaderboard") else "")
    )
    if summary["failed"]:
        failed = [
            str(cfg.cell_dir(r.name, b, s))
            for r, b, s in cfg.cells()
            if (cfg.cell_dir(r.name, b, s) / "error.json").is_file()
        ]
        _fail(
            f"{summary['failed']} cell(s) failed (see error.json; rerun to retry them): " + ", ".join(failed)
        )


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
        written = lb.write(entries, out, tuple(format or lb.FORMATS), title=title, reference=reference)
    except VisrlError as exc:
        _fail(str(exc))
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
        _fail(str(exc))
    typer.echo(f"wrote {path}")


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
        _fail(
            f'lmms-eval is not installed ({exc}); pip install -c requirements/lock-cpu.txt -e ".[lmms-eval]"'
        )
    from visrl_bench.lmms_eval.cli import run

    try:
        status = run(list(ctx.args))
    except VisrlError as exc:
        _fail(str(exc))
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
        _fail(f"lmms-eval-task converts textvqa only, not {benchmark!r}")
    from visrl_bench.lmms_eval.tasks import write_textvqa_task

    try:
        path = write_textvqa_task(
            data, out, split=split, task_name=task_name, max_new_tokens=max_new_tokens, limit=limit
        )
    except VisrlError as exc:
        _fail(str(exc))
    typer.echo(f"wrote {path} (lmms-eval --include_path {path} --tasks {task_name})")


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `visrl-bench list | head`
        sys.exit(0)


if __name__ == "__main__":
    main()
