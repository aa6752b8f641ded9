"""Harness overhead: wall time of `eval` vs the time spent inside the model's forward calls, in one run.

    python benchmarks/harness_overhead.py [--samples 32] [--repeats 3] [--batch-size 8] [--out FILE.json]

The ~30M LLaVA checkpoint, direct and cot modes, a TextVQA-format fixture. Hooks on the top-level model time
every forward call (vision tower, prefill and each decoding step); everything else - reading data, decoding
images, building prompts, the processor, the generation loop's own work, scoring, writing samples.jsonl - is
overhead: wall / forward - 1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    build_bench_checkpoint,
    machine,
    make_textvqa_square,
    median,
    textvqa_eval_config,
    write_report,
)

TARGET = 0.25


class ForwardTimer:
    def __init__(self, model):
        self.seconds = 0.0
        self._started: list[float] = []
        model.register_forward_pre_hook(lambda *_: self._started.append(time.perf_counter()))
        model.register_forward_hook(lambda *_: self._stop())

    def _stop(self) -> None:
        self.seconds += time.perf_counter() - self._started.pop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("harness_overhead.json"))
    args = parser.parse_args()

    from visrl_bench.eval.evaluate import evaluate
    from visrl_bench.models import load_model

    tmp = Path(tempfile.mkdtemp(prefix="visrl-bench-"))
    ckpt = build_bench_checkpoint("llava", tmp / "llava")
    data = make_textvqa_square(tmp / "textvqa", args.samples, side=320)
    adapter = load_model(ckpt)
    timer = ForwardTimer(adapter.model)
    report = {"machine": machine(), "samples": args.samples, "batch_size": args.batch_size, "target": TARGET}
    for mode in ("direct", "cot"):
        overheads, walls, forwards = [], [], []
        for r in range(args.repeats):
            cfg = textvqa_eval_config(ckpt, data, mode, args.batch_size, args.max_new_tokens)
            timer.seconds = 0.0
            started = time.perf_counter()
            evaluate(cfg, tmp / f"run-{mode}-{r}", adapter=adapter, progress=False)
            wall = time.perf_counter() - started
            walls.append(wall)
            forwards.append(timer.seconds)
            overheads.append(wall / timer.seconds - 1)
        overhead = median(overheads)
        report[mode] = {
            "wall_seconds": [round(w, 3) for w in walls],
            "forward_seconds": [round(f, 3) for f in forwards],
            "overhead": round(overhead, 4),
            "met": overhead <= TARGET,
        }
        print(
            f"{mode:<6} wall {median(walls):6.2f}s   inside forward {median(forwards):6.2f}s   "
            f"overhead {100 * overhead:.1f}% (target <= {100 * TARGET:.0f}%)"
        )
    write_report(args.out, report)


if __name__ == "__main__":
    main()
