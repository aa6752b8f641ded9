"""Time per training step, step-DPO vs trajectory-DPO, on the same pairs, side by side in one process.

    python benchmarks/dpo_step.py [--pairs 16] [--batch-size 4] [--repeats 3] [--out FILE.json]

The ~30M LLaVA checkpoint, full fine-tuning of the language model (no LoRA), pairs written in `generate`'s
format on a small ZoomWorld. A step of step-DPO is a box-step sub-batch (short: image + question -> box) and
an answer-step sub-batch (image + crop -> answer); trajectory-DPO's step is one batch of whole trajectories.
Time per step = (run with 10 steps - run with 2 steps) / 8, so loading the model and computing the
reference log-probs (the same in both) cancel out.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import alternate, build_bench_checkpoint, machine, median, write_report

TARGET = 1.5
SHORT, LONG = 2, 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("dpo_step.json"))
    args = parser.parse_args()

    from fixtures import make_pairs, make_zoomworld

    from visrl_bench.core.config import load_config
    from visrl_bench.core.registry import TRAINERS

    tmp = Path(tempfile.mkdtemp(prefix="visrl-bench-"))
    ckpt = build_bench_checkpoint("llava", tmp / "llava")
    pairs = make_pairs(tmp / "pairs", make_zoomworld(tmp / "zoomworld"), "square_norm", n=args.pairs)
    counter = [0]

    def run(trainer: str, steps: int) -> float:
        counter[0] += 1
        recipe = TRAINERS.load(trainer)
        cfg = load_config(
            recipe.config_class,
            None,
            ["lora=false", "lr=1e-5", f"max_steps={steps}", "logging_steps=1", "save_steps=100000"],
            model=str(ckpt),
            pairs=str(pairs),
            out=str(tmp / f"{trainer}-{counter[0]}"),
            batch_size=args.batch_size,
            progress=False,
        )
        started = time.perf_counter()
        recipe.run(cfg)
        return time.perf_counter() - started

    def per_step(trainer: str) -> float:
        return (run(trainer, LONG) - run(trainer, SHORT)) / (LONG - SHORT)

    times = alternate(
        {"dpo": lambda: per_step("dpo"), "step_dpo": lambda: per_step("step_dpo")}, args.repeats
    )
    dpo, step = median(times["dpo"]), median(times["step_dpo"])
    report = {
        "machine": machine(),
        "pairs": args.pairs,
        "batch_size": args.batch_size,
        "seconds_per_step_dpo": [round(t, 4) for t in times["dpo"]],
        "seconds_per_step_step_dpo": [round(t, 4) for t in times["step_dpo"]],
        "ratio": round(step / dpo, 3),
        "target": TARGET,
        "met": step / dpo <= TARGET,
    }
    print(
        f"trajectory-DPO {dpo:.3f}s/step   step-DPO {step:.3f}s/step   "
        f"ratio {step / dpo:.2f}x (target <= {TARGET}x)"
    )
    write_report(args.out, report)


if __name__ == "__main__":
    main()
