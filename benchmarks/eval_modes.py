"""Throughput of `eval` in direct vs visual-CoT mode on the tiny checkpoints, measured side by side.

    python benchmarks/eval_modes.py [--samples 48] [--repeats 3] [--batch-size 8] [--out FILE.json]

Builds the tiny LLaVA / Qwen2-VL / Qwen2.5-VL checkpoints and a V*Bench-format fixture in a temp dir, then
for each architecture runs direct and cot alternately (so machine noise hits both), reporting the median
samples/s of each and the cot/direct cost ratio. Generation is greedy with a fixed max_new_tokens; the tiny
random models rarely stop early, so both modes generate the same token budget per turn.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def make_vstar(root: Path, n: int) -> Path:
    from fixtures import write_image

    for i in range(n):
        category = "direct_attributes" if i % 3 else "relative_position"
        folder = root / category
        write_image(folder / f"sa_{i}.jpg", size=(320 + 8 * (i % 5), 240), color=(i * 37 % 255, 80, 160))
        options = ["red", "blue", "green", "white"] if category == "direct_attributes" else ["left", "right"]
        meta = {
            "question": f"What is the color of object {i}?",
            "options": options,
            "target_object": ["x"],
            "bbox": [[10 + i % 50, 20, 40, 30]],
        }
        (folder / f"sa_{i}.json").write_text(json.dumps(meta))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("eval_modes.json"))
    args = parser.parse_args()

    import torch

    from visrl_bench.evaluate import EvalConfig, TaskSpec, evaluate
    from visrl_bench.models import GenerationSettings, load_model
    from visrl_bench.models.tiny import ARCHS, build_tiny

    tmp = Path(tempfile.mkdtemp(prefix="visrl-bench-"))
    data = make_vstar(tmp / "vstar", args.samples)
    report = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
        },
        "samples": args.samples,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "archs": {},
    }
    for arch in ARCHS:
        adapter = load_model(build_tiny(arch, tmp / arch))
        rates: dict[str, list[float]] = {"direct": [], "cot": []}
        for r in range(args.repeats):
            for mode in ("direct", "cot"):
                cfg = EvalConfig(
                    model=str(tmp / arch),
                    tasks=[TaskSpec("vstar_bench", str(data))],
                    mode=mode,
                    batch_size=args.batch_size,
                    crop_min_side=64,
                    generation=GenerationSettings(max_new_tokens=args.max_new_tokens),
                )
                started = time.perf_counter()
                evaluate(cfg, tmp / f"run-{arch}-{mode}-{r}", adapter=adapter, progress=False)
                rates[mode].append(args.samples / (time.perf_counter() - started))
        direct, cot = statistics.median(rates["direct"]), statistics.median(rates["cot"])
        report["archs"][arch] = {
            "direct_samples_per_s": round(direct, 2),
            "cot_samples_per_s": round(cot, 2),
            "cot_cost_vs_direct": round(direct / cot, 3),
        }
        print(
            f"{arch:<11} direct {direct:7.2f} samples/s   cot {cot:7.2f} samples/s   "
            f"cot costs {direct / cot:.2f}x direct"
        )
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
