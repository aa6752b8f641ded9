"""Cost per question of multi-turn zoom (k crops) vs visual CoT (one crop), side by side in one run.

    python benchmarks/zoom_turns.py [--questions 16] [--crops 1 2 3] [--repeats 3] [--out FILE.json]

The ~30M LLaVA and Qwen2-VL checkpoints, square 320 px images, batch 8, greedy, 16 new tokens a turn. A
random model rarely writes a parsable box, so `eval --mode zoom` would stop after one crop; here the
dialogue is scripted instead: every reply after a crop is taken as one more box until k crops were shown,
then the answer turn (k + 1 model turns, the prompts `eval` builds, through `models.generate_turns`). Each
k runs twice, alternating: turns continued from the previous turn's KV cache (what `eval` does) and every
turn prefilled from scratch (the adapter without `generate_turns`). k = 1 is `cot`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import alternate, build_bench_checkpoint, machine, median, write_report


class Refilled:
    """The adapter minus its own generate_turns: every turn prefilled from scratch."""

    def __init__(self, adapter):
        self.generate = adapter.generate


def scripted_zoom(images, crops: int):
    """(first requests, follow_up): k crops of growing size around the centre, then the answer turn."""
    from visrl_bench.models import ChatRequest
    from visrl_bench.reasoning import box_step_messages, zoom_messages

    replies = {i: [] for i in range(len(images))}
    shown = {i: [] for i in range(len(images))}
    question = "What is written in the middle of the image?"

    def follow_up(i: int, turn: int, reply: str):
        replies[i].append(reply)
        side = 96 + 32 * turn
        x = (images[i].size[0] - side) // 2
        shown[i].append(images[i].crop((x, x, x + side, x + side)))
        messages = zoom_messages(question, replies[i], "Answer briefly.", final=turn == crops)
        return ChatRequest(messages, [images[i], *shown[i]])

    return [ChatRequest(box_step_messages(question), [im]) for im in images], follow_up


def measure(arch: str, args: argparse.Namespace, tmp: Path) -> dict:
    from PIL import Image

    from visrl_bench.models import GenerationSettings, generate_turns, load_model

    adapter = load_model(build_bench_checkpoint(arch, tmp / arch))
    images = [Image.new("RGB", (320, 320), (i * 37 % 255, 90, 160)) for i in range(args.questions)]
    settings = [GenerationSettings(max_new_tokens=args.max_new_tokens)]

    def rate(crops: int, model) -> float:
        first, follow_up = scripted_zoom(images, crops)
        started = time.perf_counter()
        turns = generate_turns(model, first, follow_up, settings, args.batch_size, max_turns=crops + 1)
        assert all(len(t) == crops + 1 for t in turns)
        return args.questions / (time.perf_counter() - started)

    runs = {}
    for k in args.crops:
        runs[f"{k}_cached"] = lambda k=k: rate(k, adapter)
        runs[f"{k}_refilled"] = lambda k=k: rate(k, Refilled(adapter))
    rates = alternate(runs, args.repeats)
    cot = median(rates[f"{args.crops[0]}_cached"])
    out = {"samples_per_s": {m: [round(r, 3) for r in v] for m, v in rates.items()}, "cost_vs_cot": {}}
    for k in args.crops:
        cached, refilled = median(rates[f"{k}_cached"]), median(rates[f"{k}_refilled"])
        out["cost_vs_cot"][k] = {"cached": round(cot / cached, 3), "refilled": round(cot / refilled, 3)}
        print(
            f"{arch:<9} {k} crop(s): {cached:6.2f} q/s from the cache ({cot / cached:.2f}x cot), "
            f"{refilled:6.2f} q/s refilled ({cot / refilled:.2f}x cot)"
        )
    out["turn_batches"] = dict(adapter.turn_two_batches)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--crops", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--archs", nargs="+", default=["llava", "qwen2_vl"])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("zoom_turns.json"))
    args = parser.parse_args()
    if args.crops[0] != 1:
        parser.error("--crops must start with 1 (cot, the reference)")
    tmp = Path(tempfile.mkdtemp(prefix="visrl-bench-"))
    report = {
        "machine": machine(),
        "questions": args.questions,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "archs": {arch: measure(arch, args, tmp) for arch in args.archs},
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
