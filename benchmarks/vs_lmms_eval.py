"""Eval throughput, direct mode: `visrl-bench eval` vs lmms-eval's own HF wrapper (`llava_hf`), same ~30M
checkpoint, same data, both greedy, side by side in one process.

    python benchmarks/vs_lmms_eval.py [--samples 32] [--repeats 3] [--batch-size 8] [--out FILE.json]

Needs the `lmms-eval` extra. Both sides get a loaded model (loading is not timed) and run their whole
evaluation: data, prompts, generation, scoring. lmms-eval's `llava_hf` generates one sample at a time (it
asserts batch_size == 1); ours batches. Images are square, so LLaVA-1.5's pad-to-square (ours) is a no-op and
both feed identical pixels; the checkpoint's chat template renders lmms-eval's "<image>\\n{prompt}" string and
our [image, text] content to the same text. The script checks that the predictions are identical.
"""

from __future__ import annotations

import argparse
import json
import os
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

TARGET = 2.0  # ours / lmms-eval samples per second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("vs_lmms_eval.json"))
    args = parser.parse_args()
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})

    import visrl_bench  # noqa: F401  (first: a broken torchvision is hidden before lmms-eval imports it)

    try:
        import lmms_eval.evaluator as lmms_evaluator
        from lmms_eval.models.simple.llava_hf import LlavaHf
        from lmms_eval.tasks import TaskManager
    except ImportError as exc:
        sys.exit(f"needs the lmms-eval extra and decord: {exc}")

    from visrl_bench.eval.evaluate import EvalConfig, TaskSpec, evaluate
    from visrl_bench.lmms_eval.tasks import write_textvqa_task
    from visrl_bench.models import GenerationSettings, load_model

    tmp = Path(tempfile.mkdtemp(prefix="visrl-bench-"))
    ckpt = build_bench_checkpoint("llava", tmp / "llava")
    data = make_textvqa_square(tmp / "textvqa", args.samples)
    task_dir = write_textvqa_task(data, tmp / "task", max_new_tokens=args.max_new_tokens)

    ours_adapter = load_model(ckpt)
    task_manager = TaskManager("ERROR", include_path=str(task_dir))
    predictions: dict[str, list[str]] = {}
    counter = {"ours": 0, "theirs": 0}

    def ours() -> float:
        counter["ours"] += 1
        out = tmp / f"ours-{counter['ours']}"
        cfg = EvalConfig(
            model=str(ckpt),
            tasks=[TaskSpec("textvqa", str(data))],
            mode="direct",
            batch_size=args.batch_size,
            generation=GenerationSettings(max_new_tokens=args.max_new_tokens),
        )
        started = time.perf_counter()
        evaluate(cfg, out, adapter=ours_adapter, progress=False)
        seconds = time.perf_counter() - started
        predictions["ours"] = [json.loads(line)["prediction"] for line in (out / "samples.jsonl").open()]
        return args.samples / seconds

    def theirs() -> float:
        # a fresh wrapper each time (not timed): simple_evaluate frees the model's modules when it ends
        theirs_model = LlavaHf(
            pretrained=str(ckpt), device="cpu", device_map="cpu", dtype="float32", batch_size=1
        )
        started = time.perf_counter()
        results = lmms_evaluator.simple_evaluate(
            model=theirs_model,
            tasks=["visrl_textvqa"],
            task_manager=task_manager,
            batch_size=1,
            log_samples=True,
            verbosity="ERROR",
            bootstrap_iters=0,
        )
        seconds = time.perf_counter() - started
        rows = sorted(results["samples"]["visrl_textvqa"], key=lambda r: r["doc_id"])
        predictions["theirs"] = [
            r["filtered_resps"][0] if isinstance(r["filtered_resps"], list) else r["filtered_resps"]
            for r in rows
        ]
        return args.samples / seconds

    rates = alternate({"ours": ours, "theirs": theirs}, args.repeats)
    ours_rate, theirs_rate = median(rates["ours"]), median(rates["theirs"])
    # llava_hf returns the raw decoded text; ours strips surrounding whitespace
    identical = [p.strip() for p in predictions["theirs"]] == predictions["ours"]
    ratio = ours_rate / theirs_rate
    report = {
        "machine": machine(),
        "checkpoint": {"arch": "llava", "parameters": ours_adapter.describe()["parameters"]},
        "samples": args.samples,
        "repeats": args.repeats,
        "batch_size_ours": args.batch_size,
        "batch_size_lmms_eval": 1,
        "max_new_tokens": args.max_new_tokens,
        "ours_samples_per_s": [round(r, 3) for r in rates["ours"]],
        "lmms_eval_samples_per_s": [round(r, 3) for r in rates["theirs"]],
        "median_ours": round(ours_rate, 3),
        "median_lmms_eval": round(theirs_rate, 3),
        "speedup": round(ratio, 3),
        "target": TARGET,
        "met": ratio >= TARGET and identical,
        "identical_predictions": identical,
        "predictions_differing": sum(
            a.strip() != b for a, b in zip(predictions["theirs"], predictions["ours"], strict=True)
        ),
    }
    print(
        f"ours {ours_rate:.2f} samples/s   lmms-eval llava_hf {theirs_rate:.2f} samples/s   "
        f"speedup {ratio:.2f}x (target >= {TARGET}x)   identical predictions: {identical}"
    )
    write_report(args.out, report)


if __name__ == "__main__":
    main()
