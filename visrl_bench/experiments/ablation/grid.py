"""Running the grid: lanes in order or in worker processes, finished cells skipped, failed ones recorded."""

from __future__ import annotations

import json
import os
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from visrl_bench.core.errors import VisrlError
from visrl_bench.core.io import write_text_atomic
from visrl_bench.core.rundir import changed_keys, read_identity
from visrl_bench.datagen.pairs import STATS_FILE
from visrl_bench.experiments.ablation.findings import write_leaderboard
from visrl_bench.experiments.ablation.lane import Lane
from visrl_bench.experiments.ablation.spec import (
    CELL_FILE,
    CONFIG_FILE,
    ERROR_FILE,
    ROW_BY_NAME,
    AblationConfig,
    Row,
)


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


def _exit_with_parent(parent: int, every: float = 2.0) -> None:
    """A pool worker outlives a grid process that was killed (not interrupted) and would go on writing into
    the cells a restarted grid is writing: it exits once its parent is gone."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


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


def _submit_lanes(cfg: AblationConfig, lanes: list, jobs: int, cluster: str, slurm: dict, report) -> None:
    """Each lane as a submitit job; the grid's bar and cell lines are kept up to date while they run."""
    import submitit

    folder = Path(cfg.out) / "submitit"
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
    threads = max(1, (os.cpu_count() or 1) // jobs) if cluster == "local" else None
    if cluster == "slurm":
        executor.update_parameters(**{"timeout_min": 24 * 60, "slurm_array_parallelism": jobs, **slurm})
        with executor.batch():
            submitted = [
                executor.submit(run_lane, cfg, b, s, cfg.lane_rows(b), threads, worker=True) for b, s in lanes
            ]
    else:
        executor.update_parameters(timeout_min=24 * 60)
        submitted, waiting = [], list(lanes)
    while True:
        if cluster == "local":  # the local executor starts what it is given at once: `jobs` at a time
            while waiting and sum(not j.done() for j in submitted) < jobs:
                b, s = waiting.pop(0)
                submitted.append(executor.submit(run_lane, cfg, b, s, cfg.lane_rows(b), threads, worker=True))
        if all(j.done() for j in submitted) and not (cluster == "local" and waiting):
            break
        time.sleep(1.0)
        report()
    report()
    for job in submitted:
        job.result()  # a job that died outright (not a cell error, which error.json records) surfaces here


def ensure_data(cfg: AblationConfig) -> None:
    if cfg.zoomworld_seed is None or cfg.task != "zoomworld":
        return
    from visrl_bench.datagen.zoomworld_splits import generate

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


SCHEDULERS = ("pool", "local", "slurm")


# identity keys that hold one value per base: a grid may gain or drop a base (its extent), and a base's own
# change (retrained in place, moved) concerns that base's cells only
PER_BASE_KEYS = ("bases_resolved", "weights")


def _has_work(out: Path, base: str) -> bool:
    """Whether `out` holds anything made from `base`: a finished cell, an SFT model or a round's samples
    (an empty cell folder or a failed cell's error.json was made from nothing)."""
    return (
        any(out.glob(f"cells/*/{base}/seed*/{CELL_FILE}"))
        or any(out.glob(f"shared/{base}/seed*/*/final/config.json"))
        or any(out.glob(f"shared/{base}/seed*/samples/*/*/{STATS_FILE}"))
    )


def _resumable_identity(cfg: AblationConfig, before: dict, now: dict) -> dict:
    """The identity to record when `out` already holds a grid: refused when a setting every cell depends on
    changed, or when a base that has work in `out` (an SFT model, samples, a finished cell) now names other
    weights or another folder; bases added, dropped, or changed before any of their work was done are
    fine."""
    out = Path(cfg.out)
    shared = {k: v for k, v in before.items() if k not in PER_BASE_KEYS}
    changed = changed_keys(shared, {k: v for k, v in now.items() if k not in PER_BASE_KEYS})
    if changed:
        raise VisrlError(
            f"{out} holds a grid run with different settings ({', '.join(changed)}): its finished cells "
            "would not be comparable; choose another out"
        )
    merged = dict(now)
    for key, what in zip(PER_BASE_KEYS, ("checkpoint folder", "weights"), strict=True):
        old = before.get(key)
        if old is None:  # written before the key existed (weights): not checked, as LATER_KEYS says
            continue
        stale = sorted(
            b
            for b in old.keys() & now[key].keys()
            # "" : the base's folder did not exist then, so nothing can have been made from it
            if old[b] != now[key][b] and old[b] and _has_work(out, b)
        )
        if stale:
            raise VisrlError(
                f"{out} holds work of base(s) {', '.join(stale)} made from another {what} (retrained or "
                f"moved since): remove {out}/shared/<base> and {out}/cells/*/<base> to redo them, or choose "
                "another out"
            )
        merged[key] = {**old, **now[key]}  # a base dropped this time keeps its record for a later run
    return merged


def check_slurm_options(options: dict[str, Any]) -> dict[str, Any]:
    """`--slurm key=value` options, each read against the type submitit gives it: its shared parameters
    (`timeout_min`, `gpus_per_node`, ...) and its Slurm executor's (`slurm_partition`, ...); an unknown key
    or a wrong type is refused in one line before any lane is submitted (submitit would raise at submission,
    after the grid has started)."""
    import difflib
    import typing

    from submitit.auto.auto import AutoExecutor
    from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string

    from visrl_bench.core.config import read_value

    types = {k: float if v is float else v for k, v in AutoExecutor._typed_parameters().items()}
    hints = typing.get_type_hints(_make_sbatch_string)
    types |= {f"slurm_{k}": hints.get(k, Any) for k in SlurmExecutor._valid_parameters()}
    out = {}
    for key, value in options.items():
        if key not in types:
            close = difflib.get_close_matches(key, types, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise VisrlError(f"--slurm {key}: not a submitit parameter for Slurm{hint}")
        try:
            out[key] = read_value(types[key], value)
        except ValueError:
            raise VisrlError(f"--slurm {key}: expected {types[key]}, got {value!r}") from None
    return out


def run_ablation(
    cfg: AblationConfig,
    jobs: int = 1,
    progress: bool = True,
    scheduler: str = "pool",
    slurm: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run (or continue) the grid; returns {cells, done, failed, seconds, leaderboard}.

    A job is a lane (a base and a seed: its cells share the SFT model and the generated samples).
    `scheduler`: `pool` runs `jobs` lanes at a time in worker processes of this machine; `local` and
    `slurm` hand each lane to submitit (its local executor, or its Slurm executor: a job array of at most
    `jobs` lanes at a time; `slurm` holds AutoExecutor parameters, e.g. {"slurm_partition": "gpu",
    "gpus_per_node": 1, "timeout_min": 240}). Resume is the same in all three:
    a finished cell is never rerun, a failed one is recorded and the grid goes on."""
    if scheduler not in SCHEDULERS:
        raise VisrlError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    if slurm and scheduler != "slurm":
        raise VisrlError(f"--slurm options are for --scheduler slurm, not {scheduler}")
    slurm = check_slurm_options(slurm or {})
    from tqdm.auto import tqdm

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    identity = cfg.identity()
    config_file = out / CONFIG_FILE
    if config_file.is_file():
        identity = _resumable_identity(cfg, read_identity(config_file), identity)
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
    if scheduler != "pool":
        _submit_lanes(cfg, lanes, jobs, scheduler, slurm or {}, report)
    elif jobs <= 1:
        for base, seed in lanes:
            for name in cfg.lane_rows(base):
                run_lane(cfg, base, seed, [name])
                report()
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, wait

        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(
            jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_exit_with_parent,
            initargs=(os.getpid(),),
        ) as pool:
            futures = [
                pool.submit(run_lane, cfg, b, s, cfg.lane_rows(b), threads, worker=True) for b, s in lanes
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
    # a run over some of the grid's bases must not replace the table of all of them with a narrower one
    dropped = sorted(b for b in read_identity(config_file).get("weights", {}) if b not in cfg.bases)
    dropped = [b for b in dropped if _has_work(out, b)]
    if dropped:
        summary["leaderboard_skipped"] = f"this run leaves out base(s) {', '.join(dropped)}, which have cells"
    if cfg.leaderboard and done == len(cfg.cells()) and not dropped:
        paths, table = write_leaderboard(cfg)
        summary["leaderboard"] = [str(p) for p in paths]
    (out / "grid.json").write_text(json.dumps(summary, indent=2) + "\n")
    return {**summary, "table": table}
