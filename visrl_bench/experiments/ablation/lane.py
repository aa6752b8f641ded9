"""One lane: a base model and a seed, the work its cells share (SFT, generated samples), its cells."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from visrl_bench.core.io import write_text_atomic
from visrl_bench.experiments.ablation.spec import (
    CELL_FILE,
    ERROR_FILE,
    AblationConfig,
    Row,
)


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
        grpo_summary = None
        if row.trainer == "grpo":
            model, grpo_summary = self.grpo(row, model, cell / "work")
        elif row.trainer is not None:
            model, stats = self.rounds(row, model, cell / "work")
        results = self._timed("eval", self.evaluate, model, cell, row.mode)
        gold = None
        if cfg.gold_check and row.mode != "gt_box":
            gold = self._timed("gold_check", self.evaluate, model, cell / "gold_check", "gt_box")
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
            "rounds": cfg.rounds if row.trainer in ("dpo", "step_dpo") else 0,
            "generate_stats": [
                {
                    # where the round's pairs were read from (the samples, or a filtered view of them)
                    # (relative to the grid's out, so a grid moved or resumed elsewhere still finds it)
                    "samples": os.path.relpath(s["samples"], cfg.out) if s.get("samples") else None,
                    **{
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
                    },
                }
                for s in stats
            ],
            "timings_seconds": self.timings,
            "seconds": round(time.perf_counter() - started, 1),
            "metrics": results["results"].get(cfg.task, {}),
        }
        if gold is not None:
            info["gold_crop_accuracy"] = gold["results"].get(cfg.task, {}).get("accuracy")
        if grpo_summary is not None:  # the compute GRPO spent, beside the DPO rows' pair counts
            info["grpo_overrides"] = row.grpo
            info["grpo"] = {
                k: grpo_summary.get(k)
                for k in (
                    "steps",
                    "sampled_boxes",
                    "answer_rollouts",
                    "crops_per_trajectory",
                    "first_reward",
                    "final_reward",
                    "seconds",
                )
            }
        write_text_atomic(cell / CELL_FILE, json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
        return cell

    def grpo(self, row: Row, sft_model: Path, work: Path) -> tuple[Path, dict]:
        """GRPO from the lane's SFT model on the RL split (once; a rerun keeps a finished model)."""
        from visrl_bench.core.config import load_config
        from visrl_bench.trainers.grpo import GRPOConfig, train

        final = work / "grpo" / "final"
        if not _done(final):
            values = {
                **self.cfg.grpo,
                **row.grpo,
                "model": str(sft_model),
                "out": str(work / "grpo"),
                "task": self.cfg.task,
                "data": self.cfg.data,
                "split": self.cfg.rl_split,
                "task_options": dict(self.cfg.task_options),
                "answer_max_new_tokens": self.cfg.max_new_tokens,
                "seed": self.seed,
                "device": self.cfg.device,
                "progress": self.progress,
            }
            self._timed("grpo", train, load_config(GRPOConfig, **values))
        return final, json.loads((work / "grpo" / "train_summary.json").read_text())

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
            stats.append({**s, "samples": str(data_dir)})  # the folder the round's pairs are read from
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
