"""GRPO vs iterative step-DPO at the same sampling budget: seconds per question, side by side in one run.

    python benchmarks/grpo_step.py [--questions 4] [--k 4] [--repeats 2] [--out FILE.json]

The ~30M LLaVA checkpoint, full fine-tuning of the language model, a small ZoomWorld's `rl` split. Both
families sample K boxes per question and answer each from its crop:
- a GRPO step on Q questions: K boxes sampled (the group), K crops answered by the policy (the reward),
  the GRPO loss and an optimizer step (`--trainer grpo`, batch = Q x K completions);
- the same GRPO step with `shared_prefix=true`: each question's image and prompt encoded once and its K
  boxes sampled from copies of that cache (TRL's rollout_func) instead of TRL's K prompt copies;
- an iteration of step-DPO on Q questions: `generate` (K boxes, K answers per question) and then one
  step-DPO optimizer step on Q pairs (a random model's answers are all wrong, so `generate` keeps no pair;
  the step runs on Q pairs written in `generate`'s format instead, the same shapes).
A GRPO step's time = (run with LONG steps - run with SHORT steps) / (LONG - SHORT), so loading cancels out;
step-DPO's: generate's time + the step's (measured the same way).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import alternate, build_bench_checkpoint, machine, median, write_report

SHORT, LONG = 1, 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=4)  # 8 x 8 took over 20 minutes on 2 CPU cores
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("grpo_step.json"))
    args = parser.parse_args()

    from fixtures import make_pairs, make_zoomworld

    from visrl_bench.core.config import load_config
    from visrl_bench.core.registry import TRAINERS
    from visrl_bench.datagen.pairs import GenerateConfig, generate

    tmp = Path(tempfile.mkdtemp(prefix="visrl-bench-"))
    ckpt = build_bench_checkpoint("llava", tmp / "llava")
    world = make_zoomworld(tmp / "zoomworld")
    pairs = make_pairs(tmp / "pairs", world, "square_norm", n=args.questions)
    counter = [0]
    q, k, tokens = args.questions, args.k, args.max_new_tokens

    def timed(fn) -> float:
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started

    def train(trainer: str, steps: int, *extra: str) -> float:
        counter[0] += 1
        recipe = TRAINERS.load(trainer)
        common = ["lora=false", "lr=1e-5", f"max_steps={steps}", "logging_steps=1", "progress=false"]
        cfg = load_config(
            recipe.config_class,
            None,
            [*common, *extra],
            model=str(ckpt),
            out=str(tmp / f"{trainer}-{counter[0]}"),
        )
        return timed(lambda: recipe.run(cfg))

    grpo_opts = (f"data={world}", "split=rl", f"limit={q}", f"batch_size={q * k}", f"num_generations={k}")
    grpo_opts += (f"max_completion_length={tokens}", f"answer_max_new_tokens={tokens}")
    dpo_opts = (f"pairs={pairs}", f"batch_size={q}")

    def grpo_step() -> float:
        return (train("grpo", LONG, *grpo_opts) - train("grpo", SHORT, *grpo_opts)) / (LONG - SHORT)

    def grpo_shared_step() -> float:
        shared = (*grpo_opts, "shared_prefix=true")
        return (train("grpo", LONG, *shared) - train("grpo", SHORT, *shared)) / (LONG - SHORT)

    def dpo_iteration() -> float:
        counter[0] += 1
        gen = GenerateConfig(
            model=str(ckpt), data=str(world), split="rl", limit=q, k=k, max_new_tokens=tokens,
            batch_size=q * k, answer_samples=1, out=str(tmp / f"gen-{counter[0]}"), progress=False,
        )  # fmt: skip
        sampling = timed(lambda: generate(gen))
        step = (train("step_dpo", LONG, *dpo_opts) - train("step_dpo", SHORT, *dpo_opts)) / (LONG - SHORT)
        return sampling + step

    times = alternate(
        {
            "grpo_step": grpo_step,
            "grpo_shared_prefix_step": grpo_shared_step,
            "step_dpo_iteration": dpo_iteration,
        },
        args.repeats,
    )
    grpo, dpo = median(times["grpo_step"]), median(times["step_dpo_iteration"])
    shared = median(times["grpo_shared_prefix_step"])
    report = {
        "machine": machine(),
        "questions": q,
        "k": k,
        "max_new_tokens": tokens,
        "seconds": {name: [round(t, 3) for t in v] for name, v in times.items()},
        "seconds_per_question": {"grpo": round(grpo / q, 3), "step_dpo": round(dpo / q, 3)},
        "grpo_vs_step_dpo": round(grpo / dpo, 3),
        "grpo_shared_prefix_vs_grpo": round(shared / grpo, 3),
    }
    print(
        f"{q} questions x K={k}: GRPO step {grpo:.2f} s ({grpo / q:.2f} s/question), step-DPO iteration "
        f"(generate + one step) {dpo:.2f} s ({dpo / q:.2f} s/question): GRPO / step-DPO = {grpo / dpo:.2f}x; "
        f"GRPO with shared-prefix rollouts {shared:.2f} s: {shared / grpo:.2f}x TRL's own rollouts"
    )
    write_report(args.out, report)


if __name__ == "__main__":
    main()
