"""K sampled box trajectories per question (what `generate` draws): K=8 vs K=1, side by side in one run.

    python benchmarks/sampling_k.py [--questions 8] [--k 8] [--repeats 3] [--out FILE.json]

The ~30M LLaVA and Qwen2-VL checkpoints, the box-step prompt, temperature 1.0, the same max_new_tokens. The
cost of K samples is the time for all questions with K=8 over the time with K=1. The image and the question
are encoded once per question and the prefill is shared by the K samples (`HFAdapter.generate`), so the
K-fold part is the decoding only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    alternate,
    build_bench_checkpoint,
    machine,
    make_textvqa_square,
    median,
    write_report,
)

TARGET = 3.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("sampling_k.json"))
    args = parser.parse_args()

    from visrl_bench.core.registry import TASKS
    from visrl_bench.models import ChatRequest, GenerationSettings, load_model
    from visrl_bench.reasoning import box_step_messages

    tmp = Path(tempfile.mkdtemp(prefix="visrl-bench-"))
    data = make_textvqa_square(tmp / "textvqa", args.questions, side=320)
    samples = list(TASKS.build("textvqa", str(data)).samples())
    requests = [ChatRequest(box_step_messages(s.question), [s.load_image()]) for s in samples]
    report = {"machine": machine(), "questions": args.questions, "k": args.k, "target": TARGET, "archs": {}}
    for arch in ("llava", "qwen2_vl"):
        adapter = load_model(build_bench_checkpoint(arch, tmp / arch))

        def timed(k: int, adapter=adapter) -> float:
            settings = GenerationSettings(
                max_new_tokens=args.max_new_tokens, temperature=1.0, num_return_sequences=k, seed=0
            )
            started = time.perf_counter()
            outs = adapter.generate(requests, settings, args.batch_size)
            assert all(len(o) == k for o in outs)
            return time.perf_counter() - started

        times = alternate({"k1": lambda: timed(1), f"k{args.k}": lambda: timed(args.k)}, args.repeats)
        t1, tk = median(times["k1"]), median(times[f"k{args.k}"])
        report["archs"][arch] = {
            "seconds_k1": [round(t, 3) for t in times["k1"]],
            f"seconds_k{args.k}": [round(t, 3) for t in times[f"k{args.k}"]],
            "cost_ratio": round(tk / t1, 3),
            "met": tk / t1 <= TARGET,
        }
        print(f"{arch:<9} K=1 {t1:6.2f}s   K={args.k} {tk:6.2f}s   cost {tk / t1:.2f}x (target <= {TARGET}x)")
    write_report(args.out, report)


if __name__ == "__main__":
    main()
