"""`visrl`: the whole method — SFT warm-up -> R rounds of [generate -> filter -> step-DPO -> merge] -> eval.

Every stage writes its own dir under `out` and is skipped when already complete, so an interrupted run
resumes at the stage it was in (a stage in flight restarts; `generate` continues where it stopped):

    out/sft/final                 the warm-up model
    out/round_<r>/data            generated pairs + stats.json (diagnostics: chosen vs rejected gold IoU)
    out/round_<r>/train/final     the round's model (LoRA merged: the next round's policy and reference)
    out/eval/<model>/<mode>       cot (the method) and gt_box (the answer step alone) on the eval split
    out/summary.json / summary.md accuracy and focus IoU per round, paired gains with 95% CIs

The reference of each DPO round is the SFT model (`reference: sft`, VisRL's setting) or the previous round's
model (`reference: previous`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from visrl_bench.trainers.common import Recipe

from visrl_bench.core.config import load_config
from visrl_bench.core.errors import Bounded, Bounds
from visrl_bench.report import markdown

STAGE_DONE = "config.json"  # a saved checkpoint is complete once its config is written (after the weights)


@dataclass
class VisRLConfig(Bounded):
    model: str = ""  # the base checkpoint
    out: str = ""
    task: str = "zoomworld"
    data: str = ""
    task_options: dict[str, Any] = field(default_factory=dict)
    sft_split: str | None = "sft"
    rl_split: str | None = "rl"
    eval_split: str | None = "test"
    rounds: int = 2
    trainer: str = "step_dpo"  # or "dpo" (trajectory-level, the ablation)
    reference: str = "sft"  # "sft" | "previous"
    skip_sft: bool = False  # `model` is already warmed up
    sft: dict[str, Any] = field(default_factory=dict)  # SFTConfig overrides
    generate: dict[str, Any] = field(default_factory=dict)  # GenerateConfig overrides
    dpo: dict[str, Any] = field(default_factory=dict)  # StepDPOConfig / DPOTrainConfig overrides
    eval_modes: tuple[str, ...] = ("cot", "gt_box")
    eval_limit: int | None = None
    eval_batch_size: int = 32
    max_new_tokens: int = 32
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    BOUNDS: ClassVar[Bounds] = {
        "rounds": (0, None),
        "eval_limit": (1, None),
        "eval_batch_size": (1, None),
        "max_new_tokens": (1, None),
        "seed": (0, None),
    }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _done(path: Path) -> bool:
    return (path / STAGE_DONE).is_file()


def evaluate_model(cfg: VisRLConfig, model: Path, out: Path, mode: str) -> dict:
    from visrl_bench.eval.evaluate import EvalConfig, TaskSpec, evaluate
    from visrl_bench.models import GenerationSettings

    ecfg = EvalConfig(
        model=str(model),
        tasks=[TaskSpec(cfg.task, cfg.data, cfg.eval_split, dict(cfg.task_options))],
        mode=mode,
        generation=GenerationSettings(max_new_tokens=cfg.max_new_tokens, seed=cfg.seed),
        batch_size=cfg.eval_batch_size,
        seed=cfg.seed,
        limit=cfg.eval_limit,
        device=cfg.device,
    )
    if (out / "results.json").is_file():
        return json.loads((out / "results.json").read_text())
    return evaluate(ecfg, out, resume=True, progress=cfg.progress)


def _scores(run_dir: Path, key: str) -> list[float]:
    from visrl_bench.core.rundir import read_records
    from visrl_bench.report.leaderboard import sample_score

    records = sorted(read_records(run_dir / "samples.jsonl"), key=lambda r: r["position"])
    return [sample_score(r, key) or 0.0 for r in records]  # no box parsed: focus IoU 0


def final_model(cfg: VisRLConfig) -> Path:
    """Where the loop leaves its last model."""
    out = Path(cfg.out)
    if cfg.rounds < 1:
        return Path(cfg.model) if cfg.skip_sft else out / "sft" / "final"
    return out / f"round_{cfg.rounds}" / "train" / "final"


def run(cfg: VisRLConfig, data_provider: Callable[[Any], tuple[Path, dict]] | None = None) -> Path:
    """The loop. `data_provider(generate_config) -> (pairs dir, stats)` replaces the round's own `generate`
    (the ablation grid shares samples between cells through it); `eval_modes=()` skips the evaluation."""
    from visrl_bench.trainers.sft import SFTConfig
    from visrl_bench.trainers.sft import train as train_sft

    from visrl_bench.core.registry import TASKS, TRAINERS
    from visrl_bench.datagen.pairs import GenerateConfig, generate
    from visrl_bench.task import check_training_split

    # every stage's overrides are checked now, not when the stage starts hours later, and so are the
    # splits the stages will train on (each under its stage's train_on_eval_split)
    dpo_class = TRAINERS.load(cfg.trainer).config_class
    loaded = {
        stage: load_config(config_class, source="visrl", prefix=f"{stage}.", **getattr(cfg, stage))
        for stage, config_class in (("sft", SFTConfig), ("generate", GenerateConfig), ("dpo", dpo_class))
    }
    for name, split, stage, used in (
        ("sft_split", cfg.sft_split, "sft", not cfg.skip_sft),
        ("rl_split", cfg.rl_split, "generate", cfg.rounds > 0),
    ):
        if used:
            check_training_split(cfg.task, split, loaded[stage].train_on_eval_split, f"option {name}")
    started = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "visrl.json").write_text(json.dumps(cfg.as_dict(), indent=2, sort_keys=True, default=str) + "\n")
    task = TASKS.build(cfg.task, cfg.data, cfg.eval_split, seed=cfg.seed, **cfg.task_options)
    metric = getattr(task, "reward_metric", None) or task.headline_metrics[0]
    common = {"device": cfg.device, "seed": cfg.seed, "progress": cfg.progress}
    timings: dict[str, float] = {}

    def timed(name: str, fn, *args):
        t = time.perf_counter()
        result = fn(*args)
        timings[name] = round(time.perf_counter() - t, 1)
        return result

    # the warm-up
    if cfg.skip_sft:
        sft_model = Path(cfg.model)
    else:
        sft_model = out / "sft" / "final"
        if not _done(sft_model):
            sft_cfg = load_config(
                SFTConfig,
                **{
                    **common,
                    "task": cfg.task,
                    "data": cfg.data,
                    "split": cfg.sft_split,
                    "task_options": dict(cfg.task_options),
                    **cfg.sft,
                    "model": cfg.model,
                    "out": str(out / "sft"),
                },
            )
            timed("sft", train_sft, sft_cfg)
    models = [("sft", sft_model)]

    recipe = TRAINERS.load(cfg.trainer)
    policy = sft_model
    round_stats = []
    for r in range(1, cfg.rounds + 1):
        rdir = out / f"round_{r}"
        data_dir = rdir / "data"
        if data_provider is None and (data_dir / "stats.json").is_file() and _done(rdir / "train" / "final"):
            stats = json.loads((data_dir / "stats.json").read_text())
        else:
            gen_cfg = load_config(
                GenerateConfig,
                **{
                    **common,
                    "task": cfg.task,
                    "data": cfg.data,
                    "split": cfg.rl_split,
                    "task_options": dict(cfg.task_options),
                    "max_new_tokens": cfg.max_new_tokens,
                    **cfg.generate,
                    "model": str(policy),
                    "out": str(data_dir),
                    "seed": cfg.seed + 1000 * r,
                },
            )
            if data_provider is None:
                stats = timed(f"round_{r}/generate", generate, gen_cfg, None, True)
            else:
                data_dir, stats = timed(f"round_{r}/generate", data_provider, gen_cfg)
        round_stats.append(stats)
        final = rdir / "train" / "final"
        if not _done(final) and not any((stats.get("pairs") or {}).values()):
            # nothing to learn from (no question gave a pair): the policy goes on unchanged, on the record
            final.parent.mkdir(parents=True, exist_ok=True)
            final.unlink(missing_ok=True)
            final.symlink_to(Path(policy).resolve(), target_is_directory=True)
            (rdir / "train" / "no_pairs.json").write_text(
                json.dumps({"policy_unchanged": str(policy)}) + "\n"
            )
        if not _done(final):
            reference = str(sft_model) if cfg.reference == "sft" else "self"
            dpo_cfg = load_config(
                recipe.config_class,
                **{
                    **common,
                    **cfg.dpo,
                    "model": str(policy),
                    "pairs": str(data_dir),
                    "out": str(rdir / "train"),
                    "reference": reference,
                },
            )
            timed(f"round_{r}/train", recipe.run, dpo_cfg)
        policy = final
        models.append((f"round_{r}", final))

    if not cfg.eval_modes:
        return out
    # eval every model the loop made, in every mode
    evals: dict[str, dict[str, Path]] = {}
    for name, path in models:
        for mode in cfg.eval_modes:
            run_dir = out / "eval" / name / mode
            timed(f"eval/{name}/{mode}", evaluate_model, cfg, path, run_dir, mode)
            evals.setdefault(name, {})[mode] = run_dir
    summary = summarize(cfg, models, evals, round_stats, metric)
    summary["timings_seconds"] = timings
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    (out / "summary.md").write_text(summary_markdown(summary))
    return out


def summarize(cfg: VisRLConfig, models, evals, round_stats, metric: str) -> dict[str, Any]:
    from visrl_bench.metrics.stats import paired_difference_percent

    rows = []
    first = evals[models[0][0]].get("cot")
    for i, (name, path) in enumerate(models):
        row: dict[str, Any] = {"model": name, "path": str(path)}
        for mode, run_dir in evals[name].items():
            res = json.loads((run_dir / "results.json").read_text())["results"][cfg.task]
            row[f"{mode}/{metric}"] = res.get(metric)
            row[f"{mode}/{metric}_ci95"] = res.get(f"{metric}_ci95")
            if mode == "cot":
                row["cot/focus_iou"] = res.get("focus_iou")
                row["cot/focus_iou_ci95"] = res.get("focus_iou_ci95")
        if i > 0:
            stats = round_stats[i - 1]
            row["pairs"] = stats.get("pairs")
            row["questions_kept"] = stats.get("kept")
            row["gold_iou_chosen"] = stats.get("gold_iou", {}).get("chosen")
            row["gold_iou_rejected"] = stats.get("gold_iou", {}).get("rejected")
            row["focus_signal"] = stats.get("focus_signal")
            if first is not None and "cot" in evals[name]:
                for key in (metric, "focus_iou"):
                    gain, ci = paired_difference_percent(
                        _scores(evals[name]["cot"], key), _scores(first, key), seed=cfg.seed
                    )
                    row[f"gain_vs_sft/{key}"] = round(gain, 4)
                    row[f"gain_vs_sft/{key}_ci95"] = [round(v, 4) for v in ci]
        rows.append(row)
    return {"task": cfg.task, "metric": metric, "rows": rows, "config": cfg.as_dict()}


def _fmt(value, ci=None) -> str:
    if value is None:
        return "-"
    text = f"{value:.1f}"
    return f"{text} [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else text


def summary_markdown(summary: dict[str, Any]) -> str:
    m = summary["metric"]
    lines = [
        f"# VisRL rounds on {summary['task']}",
        "",
        f"cot = the model's own box -> crop -> answer; gt_box = the gold box's crop (the answer step alone). "
        f"{m} and focus IoU in %, 95% bootstrap CIs; gains are paired (same questions) against SFT.",
        "",
    ]
    rows = []
    for row in summary["rows"]:
        pairs = row.get("pairs") or {}
        cr = (
            f"{row['gold_iou_chosen']:.3f} / {row['gold_iou_rejected']:.3f}"
            if row.get("gold_iou_chosen") is not None and row.get("gold_iou_rejected") is not None
            else "-"
        )
        rows.append(
            [
                row["model"],
                _fmt(row.get(f"cot/{m}"), row.get(f"cot/{m}_ci95")),
                _fmt(row.get("cot/focus_iou"), row.get("cot/focus_iou_ci95")),
                _fmt(row.get(f"gt_box/{m}"), row.get(f"gt_box/{m}_ci95")),
                _fmt(row.get(f"gain_vs_sft/{m}"), row.get(f"gain_vs_sft/{m}_ci95")),
                _fmt(row.get("gain_vs_sft/focus_iou"), row.get("gain_vs_sft/focus_iou_ci95")),
                str(pairs.get("box", "-")),
                cr,
            ]
        )
    header = ["model", f"cot {m}", "cot focus IoU", f"gt_box {m}", f"gain {m} vs SFT", "gain IoU vs SFT"]
    lines += markdown.table([*header, "box pairs", "chosen / rejected gold IoU"], rows)
    return "\n".join(lines) + "\n"


RECIPE = Recipe(
    "visrl",
    VisRLConfig,
    run,
    "the full method: SFT -> rounds of [generate -> filter -> step-DPO -> merge] -> eval, per-round table",
)
