"""`list`, `score` and `eval`: what is registered, stored predictions re-scored, a model evaluated."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from visrl_bench.cli.app import NUM_PROCESSES_HELP, app, fail, relaunch
from visrl_bench.core.config import option_values
from visrl_bench.core.errors import VisrlError
from visrl_bench.core.io import json_text, read_yaml_mapping


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
        fail(str(exc))

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
        str, typer.Option(help="direct | cot | zoom | gt_box | random_box | center_box | box_no_crop")
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
    max_turns: Annotated[
        int, typer.Option(min=1, help="zoom: the most crops a question may take (1 is cot).")
    ] = 3,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Task option key=value (or task.key=value for one task)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    num_processes: Annotated[int, typer.Option(min=1, help=NUM_PROCESSES_HELP)] = 1,
) -> None:
    """Evaluate a local LMM checkpoint on tasks, directly or with visual chain-of-thought."""
    from visrl_bench.core.distributed import ranks
    from visrl_bench.eval.evaluate import eval_config_from_dict, evaluate

    try:
        values = _file_values(config)
        for name, value in ctx.params.items():
            # by name: typer may ship its own copy of click, whose ParameterSource is another class
            source = ctx.get_parameter_source(name)
            explicit = getattr(source, "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")
            if name in ("config", "task", "data", "split", "option", "num_processes"):
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
        relaunch(num_processes, cfg.model, cfg.arch, cfg.device)
        out = (
            Path(output_dir) if output_dir else Path("runs") / f"{Path(cfg.model).resolve().name}-{cfg.mode}"
        )
        results = evaluate(cfg, out, resume=resume, overwrite=overwrite, progress=progress)
    except VisrlError as exc:
        fail(str(exc))
    if not ranks().main:  # the main process prints the run's results
        return
    _print_results(results)
    typer.echo(f"wrote {out / 'results.json'} and {out / 'samples.jsonl'}")


def _file_values(config: Path | None) -> dict:
    """The --config file's options with its `generation:` section's decoding keys lifted to the top level,
    where the command's flags live: a flag the user did not type then never overrides the file's value
    (defaults < file < explicit flags), at any depth. A key given both ways is refused; anything else
    under `generation:` stays there, for the config to refuse by its whole name."""
    from visrl_bench.eval.evaluate import GENERATION_KEYS

    values = read_yaml_mapping(config) if config else {}
    nested = values.pop("generation", None)
    if nested is None:
        return values
    if not isinstance(nested, dict):
        raise VisrlError(f"{config}: option generation takes a mapping, got {nested!r}")
    twice = sorted(k for k in nested if k in values and k in GENERATION_KEYS)
    if twice:
        raise VisrlError(f"{config}: {', '.join(twice)} given both at the top level and under generation:")
    values |= {k: nested.pop(k) for k in list(nested) if k in GENERATION_KEYS}
    if nested:
        values["generation"] = nested
    return values


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
