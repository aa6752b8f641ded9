"""Cost of visual CoT vs direct `eval` on the same data, side by side in one run.

    python benchmarks/eval_modes.py [--samples 32] [--repeats 3] [--batch-size 8] [--out FILE.json]

The ~30M LLaVA and Qwen2-VL checkpoints and a TextVQA-format fixture (square 320 px images). For each
architecture three runs alternate: `direct`; `cot` as `eval` runs it (turn 2 continues from turn 1's KV
cache); and `cot` with turn 2 prefilled from scratch (the adapter without `generate_turns`), which is what
the cache saves. Greedy with a fixed max_new_tokens for both turns; the random models rarely stop early, so
every turn generates the same token budget. Cost = direct samples/s / cot samples/s.
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
    textvqa_eval_config,
    write_report,
)

TARGET = 2.2


class RefilledTurns:
    """The adapter minus its own generate_turns: turn 2 is prefilled from scratch, as before the cache."""

    def __init__(self, adapter):
        self._adapter = adapter

    def __getattr__(self, name: str):
        if name == "generate_turns":
            raise AttributeError(name)
        return getattr(self._adapter, name)


def measure(arch: str, args: argparse.Namespace, data: Path, tmp: Path) -> dict:
    from visrl_bench.eval.evaluate import evaluate
    from visrl_bench.models import load_model

    ckpt = build_bench_checkpoint(arch, tmp / arch)
    adapter = load_model(ckpt)
    runs = [0]

    def rate(mode: str, model) -> float:
        runs[0] += 1
        cfg = textvqa_eval_config(ckpt, data, mode, args.batch_size, args.max_new_tokens)
        started = time.perf_counter()
        evaluate(cfg, tmp / f"run-{arch}-{runs[0]}", adapter=model, progress=False)
        return args.samples / (time.perf_counter() - started)

    rates = alternate(
        {
            "direct": lambda: rate("direct", adapter),
            "cot": lambda: rate("cot", adapter),
            "cot_refilled": lambda: rate("cot", RefilledTurns(adapter)),
        },
        args.repeats,
    )
    direct, cot, refilled = (median(rates[m]) for m in ("direct", "cot", "cot_refilled"))
    print(
        f"{arch:<9} direct {direct:6.2f}/s   cot {cot:6.2f}/s ({direct / cot:.2f}x, target <= {TARGET}x)"
        f"   cot with turn 2 refilled {refilled:6.2f}/s ({direct / refilled:.2f}x)"
    )
    return {
        "parameters": adapter.describe()["parameters"],
        "samples_per_s": {m: [round(r, 3) for r in v] for m, v in rates.items()},
        "cot_cost_vs_direct": round(direct / cot, 3),
        "cot_refilled_cost_vs_direct": round(direct / refilled, 3),
        "turn_two_batches": dict(adapter.turn_two_batches),
        "met": direct / cot <= TARGET,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--archs", nargs="+", default=["llava", "qwen2_vl"])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("eval_modes.json"))
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="visrl-bench-"))
    data = make_textvqa_square(tmp / "textvqa", args.samples, side=320)
    report = {
        "machine": machine(),
        "samples": args.samples,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "target": TARGET,
        "archs": {},
    }
    for arch in args.archs:
        report["archs"][arch] = measure(arch, args, data, tmp)
    write_report(args.out, report)


if __name__ == "__main__":
    main()
