"""ZoomWorld jobs: generate the data, pretrain the tiny base LMMs, and measure their baselines.

The baselines are the checks that must hold before any focus learning is worth running:
direct answering near chance (the tile is unreadable without focus), answering from the gold-box crop near
perfect, and random or centre crops far below it.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from visrl_bench.core.errors import VisrlError
from visrl_bench.datagen.zoomworld import PATTERNS, ZoomWorldConfig
from visrl_bench.datagen.zoomworld_splits import generate
from visrl_bench.report import markdown

ARCHS = ("llava", "qwen3_vl")
MODES = ("direct", "gt_box", "random_box", "center_box")
CHANCE = 100 / len(PATTERNS)
DEFAULT_MODELS = Path("checkpoints") / "zoomworld"


# a base must place "the <colour> <shape>" alone in a scene before focus learning from its own boxes is worth
# running; picking the named object of several is what the VisRL loop is measured on, so it is reported only
MIN_GROUNDING_IOU = 0.6


def check_baselines(
    table: dict[str, dict[str, dict]], grounding: dict[str, dict] | None = None
) -> dict[str, dict[str, bool]]:
    """arch -> check -> passed, for the properties the world and its bases must have."""
    checks = {}
    for arch, modes in table.items():
        acc = {m: modes[m]["accuracy"] for m in modes}
        checks[arch] = {
            "direct within 10 points of chance": abs(acc["direct"] - CHANCE) <= 10,
            "gt_box >= 90%": acc["gt_box"] >= 90,
            "random_box >= 30 points below gt_box": acc["gt_box"] - acc["random_box"] >= 30,
            "center_box >= 30 points below gt_box": acc["gt_box"] - acc["center_box"] >= 30,
        }
        if grounding is not None:
            iou = (grounding.get(arch) or {}).get("one_object_iou", 0.0)
            checks[arch][f"1-object grounding IoU >= {MIN_GROUNDING_IOU}"] = iou >= MIN_GROUNDING_IOU
    return checks


def baselines_markdown(table: dict[str, dict[str, dict]], meta: dict[str, Any]) -> str:
    def cell(m: dict) -> str:
        lo, hi = m["accuracy_ci95"]
        return f"{m['accuracy']:.1f} [{lo:.1f}, {hi:.1f}]"

    archs = list(table)
    lines = [
        "# ZoomWorld baselines of the tiny base LMMs",
        "",
        f"Accuracy (%) on the ZoomWorld `test` split (n = {meta['n']} questions, seed {meta['seed']}), "
        "with 95% bootstrap CIs. Chance is 25% (four tile patterns). Produced by `" + meta["command"] + "`.",
        "",
    ]
    rows = [[mode, *(cell(table[a][mode]) for a in archs)] for mode in MODES]
    rows.append(["chance", *(f"{CHANCE:.1f}" for _ in archs)])
    grounding = meta.get("grounding") or {}
    measures = (
        ("1-object IoU (ground_test)", "one_object_iou", 1, 3),
        ("1-object distinct boxes", "one_object_distinct_boxes", 1, 0),
        ("2-object selection (chance 0.5)", "two_object_selection", 1, 2),
        ("mean IoU (held-out 3-5 objects)", "mean_iou", 1, 3),
        ("IoU > 0.5 (%)", "iou_above_0.5", 100, 1),
        ("boxes that do not parse", "parse_failures", 1, 0),
        ("box step, 1-object IoU", "box_step_one_object_iou", 1, 3),
        ("box step, 2-object selection", "box_step_two_object_selection", 1, 2),
        ("box step, 3-5-object IoU", "box_step_many_objects_iou", 1, 3),
    )
    for label, key, scale, digits in measures if grounding else ():
        values = [
            f"{scale * grounding[a][key]:.{digits}f}" if key in grounding.get(a, {}) else "-" for a in archs
        ]
        rows.append([f"grounding: {label}", *values])
    lines += markdown.table(["mode", *archs], rows)
    checks = check_baselines(table, grounding if grounding else None)
    check_rows = [
        [name, *("yes" if checks[a][name] else "**no**" for a in archs)]
        for name in next(iter(checks.values()))
    ]
    lines += ["", *markdown.table(["check", *archs], check_rows)]
    if grounding:
        lines += [
            "",
            "Grounding: greedy boxes of the base models on held-out `ground` scenes of 3-5 objects never "
            'trained on, with the referring prompt "...this sentence describes: the <colour> <shape>." (n = '
            + ", ".join(f"{grounding[a]['n']}" for a in archs if a in grounding)
            + "). The box-step rows ask the `ground_test` scenes with the benchmark's own box step (its "
            "question about the object, then the box instruction), which the bases' last stage learned on "
            "ground-split images; which of several objects the question names is left to SFT and RL.",
        ]
    lines += [
        "",
        "Modes: `direct` answers from the whole image; `gt_box` from the image plus the crop of the gold box "
        "(the target object); `random_box` a seeded random box; `center_box` the middle half of the image. "
        f"Crops are at least {meta['crop_min_side']} px a side (ZoomWorld's rule). Models: "
        + ", ".join(f"`{a}` {meta['parameters'][a]:,} parameters" for a in archs)
        + ".",
        "",
        "Timings: " + "; ".join(f"{k} {v}" for k, v in meta["timings"].items()) + ".",
        "",
    ]
    return "\n".join(lines)


def train_base(
    arch: str,
    data: Path,
    models: Path,
    work: Path,
    seed: int = 0,
    batch_size: int = 32,
    steps: int | None = None,
    progress: bool = True,
) -> dict[str, str]:
    """Train `arch`'s base from scratch by its recipe (`BASE_RECIPES`): each stage continues from the one
    before, under work/<stage>/<arch>; the last writes models/<arch>. Resumable: run it again and each stage
    continues from its newest checkpoint (a finished stage is skipped). `steps` replaces the last stage's.
    Returns the wall time of each stage."""
    from visrl_bench.trainers.base_recipes import BASE_RECIPES
    from visrl_bench.trainers.pretrain import PretrainConfig, finished, train

    timings: dict[str, str] = {}
    init = ""
    retrain = False  # a stage that trained now makes every later stage start over: it continued old weights
    stages = BASE_RECIPES[arch]
    for i, (name, settings) in enumerate(stages):
        last = i == len(stages) - 1
        out = models / arch if last else work / name / arch
        stage = {**settings, **({"steps": steps} if last and steps else {})}
        cfg = PretrainConfig(
            arch=arch,
            data=str(data),
            out=str(out),
            init=init,
            batch_size=batch_size,
            seed=seed,
            resume=True,
            **stage,
        )
        if retrain and out.exists():
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
            (out / "provenance.json").unlink(missing_ok=True)
        done = finished(cfg)
        retrain = retrain or not done
        t = time.perf_counter()
        train(cfg, progress=progress)
        took = f"{time.perf_counter() - t:.0f} s"
        if done:  # trained in an earlier sitting: its own time, from its provenance
            seconds = json.loads((out / "provenance.json").read_text())["seconds"]
            took = f"{seconds:.0f} s (an earlier sitting)"
        timings[f"pretrain {arch} ({name})"] = took
        init = str(out)
    return timings


def run_baselines(
    out: Path,
    models: Path,
    work: Path,
    from_scratch: bool,
    seed: int = 0,
    steps: int | None = None,
    batch_size: int = 32,
    config: ZoomWorldConfig | None = None,
    progress: bool = True,
    command: str = "visrl-bench zoomworld baselines",
) -> dict[str, Any]:
    from visrl_bench.core.io import iter_jsonl
    from visrl_bench.eval.evaluate import EvalConfig, TaskSpec, evaluate
    from visrl_bench.models import GenerationSettings
    from visrl_bench.trainers.grounding import grounding_iou, grounding_probe, held_out_ground

    timings: dict[str, str] = {}
    started = time.perf_counter()
    data = work / "data"
    meta_file = data / "zoomworld.json"  # written last: a world cut short is generated again
    same = meta_file.is_file() and json.loads(meta_file.read_text())["config"] == json.loads(
        json.dumps(asdict(config or ZoomWorldConfig()))
    )
    if not (from_scratch and same):  # a from-scratch run stopped part-way keeps the world it trains on
        if data.exists():
            shutil.rmtree(data)
        generate(data, seed, config)
    timings["data generation"] = f"{time.perf_counter() - started:.0f} s"
    if from_scratch:
        for arch in ARCHS:
            timings.update(train_base(arch, data, models, work, seed, batch_size, steps, progress))
    table: dict[str, dict[str, dict]] = {}
    parameters = {}
    t = time.perf_counter()
    for arch in ARCHS:
        table[arch] = {}
        for mode in MODES:
            cfg = EvalConfig(
                model=str(models / arch),
                tasks=[TaskSpec("zoomworld", str(data))],
                mode=mode,
                batch_size=32,
                seed=seed,
                generation=GenerationSettings(max_new_tokens=4),
            )
            results = evaluate(cfg, work / "runs" / f"{arch}-{mode}", overwrite=True, progress=progress)
            table[arch][mode] = results["results"]["zoomworld"]
            parameters[arch] = results["provenance"]["model"]["parameters"]
    timings["eval (2 archs x 4 modes)"] = f"{time.perf_counter() - t:.0f} s"
    t = time.perf_counter()
    held_out = held_out_ground([r for _, r in iter_jsonl(data / "ground.jsonl", "ZoomWorld ground split")])
    grounding = {arch: grounding_iou(models / arch, data, held_out) for arch in ARCHS}
    probes = {arch: grounding_probe(models / arch, data) for arch in ARCHS}
    box_step = {arch: grounding_probe(models / arch, data, box_step=True) for arch in ARCHS}
    for arch in ARCHS:
        grounding[arch]["one_object_iou"] = probes[arch]["1"]["mean_iou"]
        grounding[arch]["one_object_distinct_boxes"] = probes[arch]["1"]["distinct_boxes"]
        grounding[arch]["two_object_selection"] = probes[arch]["2"]["selection"]
        grounding[arch]["box_step_one_object_iou"] = box_step[arch]["1"]["mean_iou"]
        grounding[arch]["box_step_two_object_selection"] = box_step[arch]["2"]["selection"]
        grounding[arch]["box_step_many_objects_iou"] = box_step[arch]["3-5"]["mean_iou"]
    timings["grounding (2 archs)"] = f"{time.perf_counter() - t:.0f} s"
    timings["total"] = f"{time.perf_counter() - started:.0f} s"
    meta = {
        "n": table[ARCHS[0]]["direct"]["n"],
        "seed": seed,
        "command": command,
        "timings": timings,
        "parameters": parameters,
        "grounding": grounding,
        "crop_min_side": (config or ZoomWorldConfig()).crop_min_side,
    }
    checks = check_baselines(table, grounding)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(baselines_markdown(table, meta))
    out.with_suffix(".json").write_text(
        json.dumps({"table": table, "checks": checks, **meta}, indent=2, sort_keys=True) + "\n"
    )
    return {"table": table, "checks": checks, **meta}


# The fixed screening protocol for a candidate world geometry (docs/zoomworld.md): a tiny base trained FROM
# SCRATCH on one skill, then probed. `ground`: referring expressions on 1-object scenes only (can the model
# localise at all?), probed on the held-out ground_test scenes (1-object IoU, 2-object selection, 3-5-object
# IoU). `read`: perception only (can a tile be read from the gold crop?), probed by gt_box and direct
# accuracy on the test split.
SCREEN_STAGES: dict[str, dict[str, Any]] = {
    "ground": {
        "ground_fraction": 1.0,
        "ground_curriculum": (1.0, 1.0),
        "sincos_init": True,
        "ground_holdout": 0,
        "log_every": 50,
    },
    "read": {"log_every": 50, "ground_holdout": 0},
}


def screen(
    name: str,
    arch: str,
    stage: str,
    world: ZoomWorldConfig,
    work: Path,
    overrides: dict[str, Any],
    results: Path,
    command: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Run one screening cell (resuming it if a sitting was stopped) and append its row to `results`."""
    import hashlib

    from visrl_bench.core.config import validate
    from visrl_bench.trainers.grounding import grounding_probe
    from visrl_bench.trainers.pretrain import PretrainConfig, train

    if stage not in SCREEN_STAGES:
        raise VisrlError(f"unknown screening stage {stage!r}; one of {', '.join(SCREEN_STAGES)}")
    world_key = hashlib.sha256(json.dumps(asdict(world), sort_keys=True).encode()).hexdigest()[:10]
    data = work / f"world-{world_key}"
    if not (data / "zoomworld.json").is_file():  # written last: a world cut short is generated again
        generate(data, 0, world)
    out = work / "runs" / name
    base = {**SCREEN_STAGES[stage], "save_every": 100, "resume": True}
    cfg = validate(
        PretrainConfig,
        {**base, **overrides, "arch": arch, "data": str(data), "out": str(out)},
        f"screening cell {name}",
    )
    train(cfg, progress=progress)  # resumes a stopped sitting; a cell already trained is probed again
    info = json.loads((out / "provenance.json").read_text())
    row: dict[str, Any] = {
        "name": name,
        "arch": arch,
        "stage": stage,
        "command": command,
        "world": {k: v for k, v in asdict(world).items() if v != getattr(ZoomWorldConfig(), k)},
        "settings": {k: asdict(cfg)[k] for k in overrides},
        "steps": info["steps"],
        "seconds": info["seconds"],
        "first_loss": round(info["first_loss"], 4),
        "final_loss": round(info["final_loss"], 4),
    }
    if stage == "ground":
        row["probe"] = grounding_probe(out, data)
    else:
        from visrl_bench.eval.evaluate import EvalConfig, TaskSpec, evaluate
        from visrl_bench.models import GenerationSettings

        row["probe"] = {}
        for mode in ("gt_box", "direct"):
            cfg_eval = EvalConfig(
                model=str(out),
                tasks=[TaskSpec("zoomworld", str(data))],
                mode=mode,
                batch_size=32,
                generation=GenerationSettings(max_new_tokens=4),
            )
            res = evaluate(cfg_eval, work / "evals" / f"{name}-{mode}", overwrite=True, progress=progress)
            m = res["results"]["zoomworld"]
            row["probe"][mode] = {"accuracy": m["accuracy"], "ci95": m["accuracy_ci95"], "n": m["n"]}
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
    return row
