"""Data parallel `eval` and `generate`: 2 processes x 1 thread vs 1 process x 2 threads, side by side.

    python benchmarks/data_parallel.py [--arch qwen2_vl] [--questions 128] [--k 8] [--out FILE.json]

The ~30M checkpoint, a TextVQA fixture, greedy visual-CoT eval (batch 8, so 128 questions are 4 windows of
32: 2 per rank) and `generate` with K sampled boxes (windows of 32 questions). Each configuration runs the
real command line in a fresh process: `... --num-processes 2` (accelerate's launcher, one thread per
process) against the same command without it (one process, torch's 2 threads). Reported per command:
the wall time of the whole command (start-up, model loading and the merge included) and of its loop (the
run's own timing: results.json `timing`, stats.json `seconds_this_run`), their ratios, and whether the
two runs wrote identical records. Target: >= 1.6x on eval's loop.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import build_bench_checkpoint, machine, make_textvqa_square, write_report

TARGET = 1.6
CLI = [sys.executable, "-m", "visrl_bench.cli"]


def timed(args: list[str], processes: int, threads: int | None = None) -> float:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)  # one process: torch's own default (a thread per core)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    extra = ["--num-processes", str(processes)] if processes > 1 else []
    started = time.perf_counter()
    result = subprocess.run([*CLI, *args, *extra], capture_output=True, text=True, env=env)
    if result.returncode:
        raise SystemExit(f"{' '.join(args[:2])} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="qwen2_vl", choices=["llava", "qwen2_vl"])
    parser.add_argument("--questions", type=int, default=128)
    parser.add_argument("--generate-questions", type=int, default=64)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("data_parallel.json"))
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="visrl-bench-dp-"))
    ckpt = build_bench_checkpoint(args.arch, tmp / args.arch)
    data = make_textvqa_square(tmp / "textvqa", args.questions, side=320)
    report = {"machine": machine(), "arch": args.arch, "target": TARGET, "commands": {}}

    common = ["--model", str(ckpt), "--task", "textvqa", "--data", str(data), "--mode", "cot"]
    common += ["--batch-size", str(args.batch_size), "--max-new-tokens", str(args.max_new_tokens)]
    common += ["--no-progress", "--overwrite"]
    runs = {}
    for n in (1, 2):
        out = tmp / f"eval{n}"
        wall = timed(["eval", *common, "--output", str(out)], n)
        results = json.loads((out / "results.json").read_text())
        runs[n] = {"wall_s": round(wall, 2), "loop_s": results["timing"]["textvqa"]["seconds"], "out": out}
    report["commands"]["eval"] = summarize(runs, "samples.jsonl", args.questions)
    # where the time goes: the same eval in one process of one thread. Two threads' gain over it is what
    # torch's intra-op parallelism already takes of the two cores; data parallel can only add the rest
    out = tmp / "eval1x1"
    wall = timed(["eval", *common, "--output", str(out)], 1, threads=1)
    loop = json.loads((out / "results.json").read_text())["timing"]["textvqa"]["seconds"]
    eval_runs = report["commands"]["eval"]
    eval_runs["one_thread"] = {"wall_s": round(wall, 2), "loop_s": loop}
    eval_runs["two_threads_vs_one_loop"] = round(loop / eval_runs["one"]["loop_s"], 3)
    eval_runs["two_processes_vs_one_thread_loop"] = round(loop / eval_runs["two"]["loop_s"], 3)

    gen = [
        f"model={ckpt}",
        "task=textvqa",
        f"data={data}",
        "split=null",
        "train_on_eval_split=true",
        f"k={args.k}",
    ]
    gen += [f"limit={args.generate_questions}"]
    gen += [f"max_new_tokens={args.max_new_tokens}", f"batch_size={args.batch_size * 4}", "progress=false"]
    runs = {}
    for n in (1, 2):
        out = tmp / f"generate{n}"
        wall = timed(["generate", *gen, f"out={out}", "--overwrite"], n)
        stats = json.loads((out / "stats.json").read_text())
        runs[n] = {"wall_s": round(wall, 2), "loop_s": stats["seconds_this_run"], "out": out}
    report["commands"][f"generate_k{args.k}"] = summarize(runs, "questions.jsonl", args.generate_questions)

    for name, r in report["commands"].items():
        print(
            f"{name:<12} 1 proc x 2 threads: {r['one']['wall_s']:6.1f}s wall, {r['one']['loop_s']:6.1f}s loop"
            f"   2 procs x 1 thread: {r['two']['wall_s']:6.1f}s wall, {r['two']['loop_s']:6.1f}s loop"
            f"   speed-up {r['speedup_wall']:.2f}x wall, {r['speedup_loop']:.2f}x loop"
            f"   identical records: {r['identical']}"
        )
    e = report["commands"]["eval"]
    print(
        f"eval, 1 proc x 1 thread: {e['one_thread']['loop_s']:.1f}s loop: 2 threads are "
        f"{e['two_threads_vs_one_loop']:.2f}x of it, 2 processes {e['two_processes_vs_one_thread_loop']:.2f}x"
    )
    report["met"] = report["commands"]["eval"]["speedup_loop"] >= TARGET
    write_report(args.out, report)


def summarize(runs: dict, records: str, questions: int) -> dict:
    one, two = runs[1], runs[2]
    same = filecmp.cmp(one["out"] / records, two["out"] / records, shallow=False)
    return {
        "questions": questions,
        "one": {k: v for k, v in one.items() if k != "out"},
        "two": {k: v for k, v in two.items() if k != "out"},
        "speedup_wall": round(one["wall_s"] / two["wall_s"], 3),
        "speedup_loop": round(one["loop_s"] / two["loop_s"], 3),
        "identical": same,
    }


if __name__ == "__main__":
    main()
