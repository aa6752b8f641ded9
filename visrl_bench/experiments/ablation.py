"""`visrl-bench ablate`: the paper's table — every configuration x every base LMM (x seeds), one cell each.

A cell is an eval run dir (results.json + samples.jsonl + cell.json) under OUT/cells/<row>/<base>/seed<s>.
Cells that start from the same model share its work. Per (base, seed) "lane", under OUT/shared/<base>/seed<s>:
the SFT warm-up and the SFT on more data are trained once; generated samples are cached by what drew them
(policy, sampling settings, seed), generated with the difficulty filter off and filtered afterwards, so
`visrl`, `wo_step_level`, `wo_filter` and `swapped_labels` train on pairs from the same samples.

A rerun skips finished cells (a cell is finished once its cell.json is written, after its results.json) and
resumes stages inside an unfinished one; a cell that fails writes error.json and the grid goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from visrl_bench.core.errors import Bounded, Bounds, VisrlError
from visrl_bench.core.io import write_text_atomic
from visrl_bench.core.rundir import changed_keys, read_identity

CELL_FILE = "cell.json"
ERROR_FILE = "error.json"
CONFIG_FILE = "ablation.json"


@dataclass(frozen=True)
class Row:
    name: str
    description: str
    start: str = "sft"  # "base" | "sft" | "sft_more"
    mode: str = "cot"
    trainer: str | None = None  # None: no RL rounds; "step_dpo" | "dpo"
    generate: dict[str, Any] = field(default_factory=dict)
    dpo: dict[str, Any] = field(default_factory=dict)


ROWS: tuple[Row, ...] = (
    Row("base_direct", "the base model answering directly (one turn, no box)", start="base", mode="direct"),
    Row("sft", "SFT warm-up on the few box-annotated questions (`sft` split), visual CoT"),
    Row(
        "sft_more_data",
        "SFT warm-up on more annotated data: the `sft` split plus the RL questions WITH their gold boxes, "
        "same number of steps",
        start="sft_more",
    ),
    Row(
        "trajectory_dpo",
        "trajectory-level DPO on self-generated pairs, no diversity controller, no difficulty filter",
        trainer="dpo",
        generate={"diversity": False, "filter": False},
    ),
    Row(
        "visrl",
        "full VisRL: step-level DPO, diversity controller on, difficulty filter on",
        trainer="step_dpo",
    ),
    Row("wo_step_level", "w/o step-level: trajectory-level DPO on the full method's pairs", trainer="dpo"),
    Row("wo_diversity", "w/o diversity controller", trainer="step_dpo", generate={"diversity": False}),
    Row("wo_filter", "w/o difficulty filter", trainer="step_dpo", generate={"filter": False}),
    Row(
        "swapped_labels",
        "control: the full method with each pair's chosen/rejected swapped by a seeded coin "
        "(must NOT improve)",
        trainer="step_dpo",
        dpo={"swap_labels": True},
    ),
)
ROW_BY_NAME = {r.name: r for r in ROWS}
REFERENCE_ROW = "visrl"

# (claim, the row the full method is compared with, the direction the paper reports)
FINDINGS = (
    ("step-level DPO beats trajectory-level DPO", "wo_step_level", +1),
    ("the diversity controller helps", "wo_diversity", +1),
    ("the difficulty filter helps", "wo_filter", +1),
    ("RL beats SFT with more annotated data", "sft_more_data", +1),
    ("RL improves on its SFT warm-up", "sft", +1),
    ("the gain comes from the reward (full method beats the swapped-label control)", "swapped_labels", +1),
)

PRESETS: dict[str, dict[str, Any]] = {
    # both tiny architectures, every row, one seed, one round: the <= 10 min CPU smoke of the whole table
    "quick": {
        "seeds": [0],
        "rounds": 1,
        "sft": {"lora": False, "lr": 1e-3, "max_steps": 80, "batch_size": 32, "logging_steps": 20},
        "generate": {"k": 6, "limit": 160, "batch_size": 96},
        "dpo": {"lora": False, "lr": 3e-4, "beta": 0.1, "nll_weight": 0.1, "batch_size": 16, "epochs": 1},
    },
    # more rounds, more data, 3 seeds
    "full": {
        "seeds": [0, 1, 2],
        "rounds": 2,
        "sft": {"lora": False, "lr": 1e-3, "max_steps": 150, "batch_size": 32, "logging_steps": 25},
        "generate": {"k": 8, "limit": 200, "batch_size": 96},
        "dpo": {"lora": False, "lr": 3e-4, "beta": 0.1, "nll_weight": 0.1, "batch_size": 16, "epochs": 1},
    },
}


@dataclass
class AblationConfig(Bounded):
    task: str = "zoomworld"
    data: str = ""
    zoomworld_seed: int | None = None  # generate ZoomWorld into `data` first when it is not there
    task_options: dict[str, Any] = field(default_factory=dict)
    bases: dict[str, str] = field(default_factory=dict)  # name -> local checkpoint dir
    rows: list[str] = field(default_factory=lambda: [r.name for r in ROWS])
    seeds: list[int] = field(default_factory=lambda: [0])
    out: str = "runs/ablation"
    sft_split: str = "sft"
    more_data_splits: list[str] = field(default_factory=lambda: ["rl"])  # annotated extra for sft_more_data
    rl_split: str = "rl"
    eval_split: str = "test"
    rounds: int = 1
    reference: str = "sft"  # each DPO round's reference model: "sft" | "previous"
    sft: dict[str, Any] = field(default_factory=dict)
    generate: dict[str, Any] = field(default_factory=dict)
    dpo: dict[str, Any] = field(default_factory=dict)
    eval_limit: int | None = None
    eval_batch_size: int = 64
    max_new_tokens: int = 32
    leaderboard: str | None = None  # OUT (no suffix): OUT.csv/.md/.png once the grid is complete
    title: str = "Ablation"
    device: str = "auto"

    BOUNDS: ClassVar[Bounds] = {
        "zoomworld_seed": (0, None),
        "rounds": (1, None),
        "eval_limit": (1, None),
        "eval_batch_size": (1, None),
        "max_new_tokens": (1, None),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise VisrlError(f"option seeds must be whole numbers >= 0, got {self.seeds!r}")

    def cells(self) -> list[tuple[Row, str, int]]:
        """The grid in run order: lanes (base, seed) outermost so a lane's shared work is reused at once."""
        return [(ROW_BY_NAME[r], b, s) for b in self.bases for s in self.seeds for r in self.rows]

    def cell_dir(self, row: str, base: str, seed: int) -> Path:
        return Path(self.out) / "cells" / row / base / f"seed{seed}"

    def identity(self) -> dict[str, Any]:
        """What a finished cell's meaning depends on: the grid's extent (rows, bases, seeds) may grow."""
        d = asdict(self)
        for k in ("rows", "bases", "seeds", "leaderboard", "title", "device", "out"):
            d.pop(k)
        d["bases_resolved"] = {b: str(Path(p).resolve()) for b, p in self.bases.items()}
        return d


def load_ablation_config(
    path: str | Path | None, preset: str | None = None, overrides: list[str] | None = None
) -> AblationConfig:
    """Defaults < preset < YAML file < key=value overrides (`sft.lr=1e-4` reaches into a stage). Every key,
    the stages' included, is checked here: a typo must fail before the first cell, not an hour in."""
    from visrl_bench.core.config import load_config
    from visrl_bench.datagen.pairs import GenerateConfig
    from visrl_bench.trainers.sft import SFTConfig
    from visrl_bench.trainers.step_dpo import StepDPOConfig

    if preset is not None and preset not in PRESETS:
        raise VisrlError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    where = str(path or "ablation config")
    cfg = load_config(AblationConfig, path, overrides, base=PRESETS.get(preset or ""), source=where)
    bad = [r for r in cfg.rows if r not in ROW_BY_NAME]
    if bad:
        raise VisrlError(f"unknown row(s) {', '.join(bad)}; rows: {', '.join(ROW_BY_NAME)}")
    if not cfg.bases:
        raise VisrlError(f"{where}: `bases` names no base model")
    if not cfg.data:
        raise VisrlError(f"{where}: `data` is empty")
    # the stages read their own values ("1e-4" -> float) when they run; here they are only checked
    for stage, config_class in (("sft", SFTConfig), ("generate", GenerateConfig), ("dpo", StepDPOConfig)):
        load_config(config_class, source=f"{where}: `{stage}`", **getattr(cfg, stage))
    return cfg


# --- one lane: a base model and a seed, its shared work, its cells ----------------------------------------
def _hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def portable(path: str | Path | None) -> str | None:
    """A path as cell.json records it: relative to the directory `ablate` ran in when it lies inside it, so
    committed cells do not name one machine's directories."""
    if path is None:
        return None
    p = Path(path).resolve()
    return str(p.relative_to(Path.cwd().resolve())) if p.is_relative_to(Path.cwd().resolve()) else str(p)


def _done(model_dir: Path) -> bool:
    return (model_dir / "config.json").is_file()


class Lane:
    def __init__(self, cfg: AblationConfig, base: str, seed: int, progress: bool = False):
        self.cfg, self.base, self.seed, self.progress = cfg, base, seed, progress
        self.root = Path(cfg.out) / "shared" / base / f"seed{seed}"
        self.timings: dict[str, float] = {}

    def _timed(self, name: str, fn, *args):
        t = time.perf_counter()
        result = fn(*args)
        self.timings[name] = round(time.perf_counter() - t, 1)
        return result

    def sft(self, more_data: bool = False) -> Path:
        from visrl_bench.core.config import load_config
        from visrl_bench.trainers.sft import SFTConfig, train

        name = "sft_more_data" if more_data else "sft"
        final = self.root / name / "final"
        if not _done(final):
            values = {
                **self.cfg.sft,
                "model": self.cfg.bases[self.base],
                "out": str(self.root / name),
                "task": self.cfg.task,
                "data": self.cfg.data,
                "split": self.cfg.sft_split,
                "task_options": dict(self.cfg.task_options),
                "seed": self.seed,
                "device": self.cfg.device,
                "progress": self.progress,
            }
            if more_data:
                values["extra_splits"] = tuple(self.cfg.more_data_splits)
            self._timed(name, train, load_config(SFTConfig, **values))
        return final

    def data(self, gen_cfg) -> tuple[Path, dict]:
        """The pairs `generate(gen_cfg)` would write, from samples drawn once per sampling identity."""
        from dataclasses import replace

        from visrl_bench.datagen.pairs import FILTER_FIELDS, STATS_FILE, apply_filter, generate

        sampling = {k: v for k, v in asdict(gen_cfg).items() if k not in (*FILTER_FIELDS, "out", "progress")}
        sampling["model"] = str(Path(gen_cfg.model).resolve())
        root = self.root / "samples" / _hash(sampling)
        everything = root / "filter_off"
        if not (everything / STATS_FILE).is_file():
            root.mkdir(parents=True, exist_ok=True)
            (root / "sampling.json").write_text(json.dumps(sampling, indent=2, sort_keys=True, default=str))
            generate(replace(gen_cfg, filter=False, out=str(everything)), None, True)
        if not gen_cfg.filter:
            return everything, json.loads((everything / STATS_FILE).read_text())
        view = root / f"filter_{_hash({k: getattr(gen_cfg, k) for k in FILTER_FIELDS})}"
        if (view / STATS_FILE).is_file():
            return view, json.loads((view / STATS_FILE).read_text())
        return view, apply_filter(everything, view, gen_cfg)

    def run_cell(self, row: Row) -> Path:
        cfg = self.cfg
        cell = cfg.cell_dir(row.name, self.base, self.seed)
        if (cell / CELL_FILE).is_file():
            return cell
        cell.mkdir(parents=True, exist_ok=True)
        (cell / ERROR_FILE).unlink(missing_ok=True)
        self.timings = {}
        started = time.perf_counter()
        if row.start == "base":
            model = Path(cfg.bases[self.base])
        else:
            model = self.sft(more_data=row.start == "sft_more")
        stats: list[dict] = []
        if row.trainer is not None:
            model, stats = self.rounds(row, model, cell / "work")
        results = self._timed("eval", self.evaluate, model, cell, row.mode)
        info = {
            "row": row.name,
            "description": row.description,
            "base": self.base,
            "base_model": portable(cfg.bases[self.base]),
            "seed": self.seed,
            "model": portable(model),
            "mode": row.mode,
            "trainer": row.trainer,
            "generate_overrides": row.generate,
            "dpo_overrides": row.dpo,
            "rounds": cfg.rounds if row.trainer else 0,
            "generate_stats": [
                {
                    k: portable(s.get(k)) if k == "derived_from" else s.get(k)
                    for k in (
                        "questions_seen",
                        "kept",
                        "mixed",
                        "all_right",
                        "all_wrong",
                        "pairs",
                        "gold_iou",
                        "focus_signal",
                        "derived_from",
                    )
                }
                for s in stats
            ],
            "timings_seconds": self.timings,
            "seconds": round(time.perf_counter() - started, 1),
            "metrics": results["results"].get(cfg.task, {}),
        }
        write_text_atomic(cell / CELL_FILE, json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
        return cell

    def rounds(self, row: Row, sft_model: Path, work: Path) -> tuple[Path, list[dict]]:
        from visrl_bench.trainers.visrl import VisRLConfig, final_model, run

        cfg = self.cfg
        vcfg = VisRLConfig(
            model=str(sft_model),
            out=str(work),
            task=cfg.task,
            data=cfg.data,
            task_options=dict(cfg.task_options),
            sft_split=cfg.sft_split,
            rl_split=cfg.rl_split,
            eval_split=cfg.eval_split,
            rounds=cfg.rounds,
            trainer=row.trainer,
            reference=cfg.reference,
            skip_sft=True,
            generate={**cfg.generate, **row.generate},
            dpo={**cfg.dpo, **row.dpo},
            eval_modes=(),
            max_new_tokens=cfg.max_new_tokens,
            seed=self.seed,
            device=cfg.device,
            progress=self.progress,
        )
        stats: list[dict] = []

        def provider(gen_cfg):
            data_dir, s = self.data(gen_cfg)
            stats.append(s)
            return data_dir, s

        t = time.perf_counter()
        run(vcfg, data_provider=provider)
        self.timings["rounds"] = round(time.perf_counter() - t, 1)
        return final_model(vcfg), stats

    def evaluate(self, model: Path, out: Path, mode: str) -> dict:
        from visrl_bench.eval.evaluate import EvalConfig, TaskSpec, evaluate
        from visrl_bench.models import GenerationSettings

        cfg = self.cfg
        ecfg = EvalConfig(
            model=str(model),
            tasks=[TaskSpec(cfg.task, cfg.data, cfg.eval_split, dict(cfg.task_options))],
            mode=mode,
            generation=GenerationSettings(max_new_tokens=cfg.max_new_tokens),  # greedy
            batch_size=cfg.eval_batch_size,
            seed=0,  # the same option order and bootstrap draws in every cell: differences are paired
            limit=cfg.eval_limit,
            device=cfg.device,
        )
        return evaluate(ecfg, out, resume=True, progress=False)


# --- the grid ----------------------------------------------------------------------------------------------
def lane_log(cfg: AblationConfig, base: str, seed: int) -> Path:
    return Path(cfg.out) / "logs" / f"{base}-seed{seed}.log"


def run_lane(
    cfg: AblationConfig,
    base: str,
    seed: int,
    rows: list[str],
    threads: int | None = None,
    worker: bool = False,
) -> dict:
    """Every cell of one (base, seed) lane, in order; a failing cell writes error.json and the lane goes on.
    What its stages print (trainer logs, library warnings) goes to OUT/logs/<base>-seed<s>.log. A top-level
    function so that a worker process can run it; a worker also sends its file descriptors there."""
    from visrl_bench.core.logs import output_to

    if threads:
        import torch

        torch.set_num_threads(threads)
    with output_to(lane_log(cfg, base, seed), fds=worker):
        return _run_cells(cfg, base, seed, rows)


def _run_cells(cfg: AblationConfig, base: str, seed: int, rows: list[str]) -> dict:
    lane = Lane(cfg, base, seed)
    status = {}
    for name in rows:
        cell = cfg.cell_dir(name, base, seed)
        try:
            lane.run_cell(ROW_BY_NAME[name])
            status[name] = "done"
        except Exception as exc:  # one broken cell must not cost the rest of the grid
            cell.mkdir(parents=True, exist_ok=True)
            error = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            write_text_atomic(cell / ERROR_FILE, json.dumps(error, indent=2) + "\n")
            status[name] = f"error: {type(exc).__name__}: {exc}"
    return status


def ensure_data(cfg: AblationConfig) -> None:
    if cfg.zoomworld_seed is None or cfg.task != "zoomworld":
        return
    from visrl_bench.datagen.zoomworld import generate

    marker = Path(cfg.data) / "zoomworld.json"
    if marker.is_file():
        seed = json.loads(marker.read_text()).get("seed")
        if seed is not None and seed != cfg.zoomworld_seed:
            raise VisrlError(
                f"{marker}: ZoomWorld generated with seed {seed}, the config asks {cfg.zoomworld_seed}"
            )
        return
    generate(Path(cfg.data), cfg.zoomworld_seed)


def _stamp(cell: Path) -> tuple[int | None, int | None]:
    """When the cell's outcome files were last written (None: absent)."""
    return tuple(p.stat().st_mtime_ns if p.is_file() else None for p in (cell / CELL_FILE, cell / ERROR_FILE))


def _cell_state(cfg: AblationConfig, row: Row, base: str, seed: int) -> str | None:
    """The line the terminal shows for a finished or failed cell; None while it is neither."""
    from visrl_bench.core.registry import TASKS

    cell = cfg.cell_dir(row.name, base, seed)
    name = f"{row.name} / {base} / seed{seed}"
    if (cell / CELL_FILE).is_file():
        info = json.loads((cell / CELL_FILE).read_text())
        metrics = info.get("metrics", {})  # the cell's results.json metrics, copied when it finished
        headline = TASKS.load(cfg.task).headline_metrics[0]
        text = f"{name}: {headline} {metrics.get(headline, float('nan')):.1f}"
        if ci := metrics.get(f"{headline}_ci95"):
            text += f" [{ci[0]:.1f}, {ci[1]:.1f}]"
        if "focus_iou" in metrics:
            text += f", focus IoU {metrics['focus_iou']:.1f}"
        if any(s.get("focus_signal") is False for s in info.get("generate_stats", [])):
            text += "; its pairs carry no focus signal (chosen boxes no closer to gold)"
        return text + (f" ({info['seconds']:.0f} s)" if info.get("seconds") is not None else "")
    if (cell / ERROR_FILE).is_file():
        return f"{name}: FAILED: {json.loads((cell / ERROR_FILE).read_text())['error']}"
    return None


def _finished(cfg: AblationConfig) -> tuple[int, int]:
    done = failed = 0
    for row, base, seed in cfg.cells():
        d = cfg.cell_dir(row.name, base, seed)
        done += (d / CELL_FILE).is_file()
        failed += (d / ERROR_FILE).is_file() and not (d / CELL_FILE).is_file()
    return done, failed


def run_ablation(cfg: AblationConfig, jobs: int = 1, progress: bool = True) -> dict[str, Any]:
    """Run (or continue) the grid; returns {cells, done, failed, seconds, leaderboard}."""
    from tqdm.auto import tqdm

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    identity = cfg.identity()
    config_file = out / CONFIG_FILE
    if config_file.is_file():
        changed = changed_keys(read_identity(config_file), identity)
        if changed:
            raise VisrlError(
                f"{out} holds a grid run with different settings ({', '.join(changed)}): its finished cells "
                "would not be comparable; choose another out"
            )
    config_file.write_text(
        json.dumps({"identity": identity, "config": asdict(cfg)}, indent=2, sort_keys=True, default=str)
        + "\n"
    )
    ensure_data(cfg)
    started = time.perf_counter()
    lanes = list(dict.fromkeys((b, s) for _, b, s in cfg.cells()))
    done0, _ = _finished(cfg)
    bar = tqdm(
        total=len(cfg.cells()),
        initial=done0,
        desc="ablate",
        unit="cell",
        disable=not progress,
        dynamic_ncols=True,
    )
    seen = {(r.name, b, s): _stamp(cfg.cell_dir(r.name, b, s)) for r, b, s in cfg.cells()}

    def report() -> None:
        """A line per cell that finished or failed since the last call (a retried one too), above the bar."""
        for row, base, seed in cfg.cells():
            key = (row.name, base, seed)
            stamp = _stamp(cfg.cell_dir(*key))
            if stamp != seen[key] and (line := _cell_state(cfg, row, base, seed)) is not None:
                seen[key] = stamp
                bar.write(line)
        bar.update(_finished(cfg)[0] - bar.n)

    bar.write(f"stage logs (trainers, library warnings): {Path(cfg.out) / 'logs'}")
    if jobs <= 1:
        for base, seed in lanes:
            for name in cfg.rows:
                run_lane(cfg, base, seed, [name])
                report()
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, wait

        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [
                pool.submit(run_lane, cfg, b, s, list(cfg.rows), threads, worker=True) for b, s in lanes
            ]
            pending = set(futures)
            while pending:
                _, pending = wait(pending, timeout=2.0)
                report()
            for f in futures:
                f.result()  # a worker that died outright (not a cell error) surfaces here
    bar.close()
    done, failed = _finished(cfg)
    summary: dict[str, Any] = {
        "cells": len(cfg.cells()),
        "done": done,
        "failed": failed,
        "seconds": round(time.perf_counter() - started, 1),
        "jobs": jobs,
    }
    table = None
    if cfg.leaderboard and done == len(cfg.cells()):
        paths, table = write_leaderboard(cfg)
        summary["leaderboard"] = [str(p) for p in paths]
    (out / "grid.json").write_text(json.dumps(summary, indent=2) + "\n")
    return {**summary, "table": table}


# --- the committed table -----------------------------------------------------------------------------------
def write_leaderboard(cfg: AblationConfig) -> tuple[list[Path], str]:
    """OUT.csv / .md / .png of the grid; also the headline tables as plain Markdown for the terminal."""
    from visrl_bench.core.registry import TASKS
    from visrl_bench.report import leaderboard as lb

    runs = [lb.load_run(cfg.cell_dir(r.name, b, s).resolve()) for r, b, s in cfg.cells()]
    metric = TASKS.load(cfg.task).headline_metrics[0]
    reference = REFERENCE_ROW if REFERENCE_ROW in cfg.rows else None
    entries = lb.build_entries(
        runs, [(cfg.task, metric), (cfg.task, "focus_iou")], reference, rows=cfg.rows, columns=list(cfg.bases)
    )
    out = Path(cfg.leaderboard)
    lb.bundle_results(entries, out.parent / f"{out.name}_runs", (Path(cfg.out) / "cells").resolve())
    intro = (
        f"Every configuration x every base LMM on `{cfg.task}` (`{cfg.eval_split}` split), produced by "
        f"`visrl-bench ablate` ({len(cfg.seeds)} seed(s): {', '.join(map(str, cfg.seeds))}; "
        f"{cfg.rounds} RL round(s); per-stage settings in `{out.name}_runs/*/*/*/cell.json`"
        + f"; compute time of the cells, summed: {_cells_seconds(cfg):.0f} s"
        + ")."
    )
    descriptions = {r: ROW_BY_NAME[r].description for r in cfg.rows}
    by_metric = [[e for e in entries if e.metric == m] for m in (metric, "focus_iou")]
    table = "\n".join(line for sub in by_metric if sub for line in [*lb.metric_table(sub), ""])
    return lb.write(
        entries,
        out,
        title=cfg.title,
        reference=reference,
        intro=intro,
        descriptions=descriptions,
        extra_markdown=findings_markdown(cfg, entries, runs, metric),
    ), table


def _cells_seconds(cfg: AblationConfig) -> float:
    """Stable across reruns (a rerun that skips every cell must not rewrite the table's timing)."""
    total = 0.0
    for r, b, s in cfg.cells():
        path = cfg.cell_dir(r.name, b, s) / CELL_FILE
        total += json.loads(path.read_text()).get("seconds", 0.0) if path.is_file() else 0.0
    return total


def verdict(lo: float, hi: float) -> str:
    if lo > 0:
        return "reproduces"
    if hi < 0:
        return "the opposite holds"
    return "not detected (CI includes 0)"


def findings_markdown(cfg: AblationConfig, entries, runs, metric: str) -> str:
    """The paper's claims, each judged by the paired CI of (full method - ablation) on the average column
    (or the single base), written out from the numbers; nothing here is tuned to agree."""
    from visrl_bench.metrics.stats import paired_difference
    from visrl_bench.report import leaderboard as lb

    if REFERENCE_ROW not in cfg.rows:
        return ""
    column = lb.AVERAGE if len(cfg.bases) > 1 else next(iter(cfg.bases))
    at = {(e.row, e.column, e.metric): e for e in entries}
    lines = ["## Which of the paper's findings reproduce here", ""]
    lines.append(
        f"Judged on {metric} ({'the average over base LMMs' if column == lb.AVERAGE else column}), "
        "by the paired "
        f'95% CI of `{REFERENCE_ROW}` minus the other row: "reproduces" only when the CI excludes 0.'
    )
    lines.append("")
    for claim, other, _direction in FINDINGS:
        if other not in cfg.rows:
            continue
        parts = []
        for col in [column] + ([b for b in cfg.bases] if column == lb.AVERAGE else []):
            e = at.get((other, col, metric))
            if e is None or e.diff is None:
                continue
            gain, lo, hi = 0.0 - e.diff, 0.0 - e.diff_ci[1], 0.0 - e.diff_ci[0]  # 0.0 - x: no "-0.0"
            parts.append((col, gain, lo, hi, e.diff_p))
        if not parts:
            continue
        col, gain, lo, hi, p = parts[0]
        per_base = "; ".join(f"{c}: {g:+.1f} [{a:+.1f}, {b:+.1f}]" for c, g, a, b, _ in parts[1:])
        lines.append(
            f"- **{claim}** — {verdict(lo, hi)}: {REFERENCE_ROW} − {other} = {gain:+.1f} points "
            f"[{lo:+.1f}, {hi:+.1f}], p = {p:.3g}" + (f" ({per_base})" if per_base else "") + "."
        )
    if "swapped_labels" in cfg.rows and "sft" in cfg.rows:
        for col in [column]:
            a, b = at.get(("swapped_labels", col, metric)), at.get(("sft", col, metric))
            if a and b and a.scores and b.scores:
                d, (lo, hi), p, _ = paired_difference(a.scores, b.scores)
                ok = (
                    "as it must, it does not beat SFT"
                    if lo <= 0
                    else "it BEATS SFT: part of the RL gain does not come from the reward's direction"
                )
                lines.append(
                    f"- **control** — swapped_labels − sft = {d:+.1f} [{lo:+.1f}, {hi:+.1f}], "
                    f"p = {p:.3g}: {ok}."
                )
    diag = []
    for r in runs:
        cell = json.loads((r.path / CELL_FILE).read_text()) if (r.path / CELL_FILE).is_file() else {}
        if cell.get("row") != REFERENCE_ROW:
            continue
        for k, s in enumerate(cell.get("generate_stats", []), 1):
            g = s.get("gold_iou") or {}
            if g.get("chosen") is not None:
                diag.append(
                    f"{cell['base']} seed {cell['seed']} round {k}: chosen {g['chosen']:.3f} vs rejected "
                    f"{g['rejected']:.3f} ({'signal' if s.get('focus_signal') else 'NO focus signal'})"
                )
    if diag:
        lines += [
            "",
            "Why, from the generator's diagnostics (mean IoU of the box-step pairs' chosen and rejected "
            "boxes with the gold box, never used for selection): "
            + "; ".join(diag)
            + ". When chosen boxes are no "
            "closer to the target than rejected ones, the reward says nothing about where to look, and no "
            "variant of the method can learn focus from it.",
        ]
    return "\n".join(lines) + "\n"
