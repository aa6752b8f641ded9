"""What the benchmark scripts share: the ~30M-parameter checkpoint, fixtures, machine facts, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # fixture writers in the benchmarks' real formats


def bench_spec():
    """~30M parameters (LLaVA 29.6M, Qwen2-VL 30.8M): the model, not Python, dominates a forward call."""
    from visrl_bench.models.tiny import TinySpec

    return TinySpec(
        text_hidden=512,
        text_layers=10,
        heads=8,
        vision_hidden=256,
        vision_layers=4,
        image_size=224,
        patch_size=16,
        qwen_patch=14,
        min_pixels=224 * 224,
        max_pixels=224 * 224,
    )


def build_bench_checkpoint(arch: str, out: Path, seed: int = 0) -> Path:
    from visrl_bench.models.tiny import build_tiny

    if (out / "config.json").is_file():
        return out
    return build_tiny(arch, out, seed=seed, spec=bench_spec())


def make_textvqa_square(root: Path, n: int, side: int = 224) -> Path:
    """TextVQA-format fixture with square images: LLaVA-1.5's pad-to-square is then a no-op, so a wrapper
    that does not pad (lmms-eval's llava_hf) sees the same pixels as ours."""
    from fixtures import make_textvqa, write_image

    words = ["stop", "exit", "cafe", "open", "sale", "taxi", "bus", "hotel"]
    rows = [
        (5000 + i, f"what does sign {i} say?", f"img{i:04d}", [words[i % len(words)]] * 10) for i in range(n)
    ]
    make_textvqa(root, rows=rows)
    for i in range(n):  # distinct square images, so answers can differ
        write_image(
            root / "train_images" / f"img{i:04d}.jpg", size=(side, side), color=(i * 37 % 255, 90, 160)
        )
    return root


def textvqa_eval_config(ckpt: Path, data: Path, mode: str, batch_size: int, max_new_tokens: int):
    """`eval` of the TextVQA fixture, greedy, as the eval benchmarks run it."""
    from visrl_bench.eval.evaluate import EvalConfig, TaskSpec
    from visrl_bench.models import GenerationSettings

    return EvalConfig(
        model=str(ckpt),
        tasks=[TaskSpec("textvqa", str(data))],
        mode=mode,
        batch_size=batch_size,
        generation=GenerationSettings(max_new_tokens=max_new_tokens),
    )


def machine() -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "processor": _cpu_name(),
        "date": time.strftime("%Y-%m-%d"),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def alternate(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each named measurement once per repeat, in turn, so machine noise hits all of them alike."""
    out: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            out[name].append(run())
    return out


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_report(path: Path, report: dict) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
