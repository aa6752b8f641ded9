"""`visrl-bench show` on a large run: a 2,000-sample report of HR-Bench-8K-sized images, its time and size.

    python benchmarks/show_report.py [--samples 2000] [--side 7680x4320] [--out FILE.json]

A V*Bench-format folder of 7680 x 4320 JPEGs (one image, linked under every sample's name: the images'
content does not matter, their size does), a run of it written by `eval` with a stand-in model that
writes one box per question (no network, no weights: the report's cost is what is measured), then the
report of that run (and, apart, the report of 16 of its samples with their contact sheet). Targets for the
2,000-sample report: under 60 s and under 50 MB.
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
from _common import machine, write_report

TARGET_SECONDS, TARGET_MB = 60.0, 50.0


class OneBoxModel:
    """A stand-in model: the same box (in norm1000) for every question, then the answer "A"."""

    arch, path = "scripted", "scripted"

    def __init__(self):
        from visrl_bench.core.boxes import BoxConvention

        self.box_convention = BoxConvention.NORM1000

    def input_size(self, image):
        return None

    def describe(self):
        return {"arch": self.arch, "box_convention": self.box_convention.value}

    def generate(self, requests, settings, batch_size=1):
        return [["[400, 300, 520, 420]" if len(r.images) == 1 else "A"] for r in requests]


def write_data(root: Path, n: int, size: tuple[int, int]) -> Path:
    from PIL import Image, ImageDraw

    folder = root / "direct_attributes"
    folder.mkdir(parents=True)
    image = Image.new("RGB", size, (90, 110, 130))
    draw = ImageDraw.Draw(image)
    for i in range(0, size[0], 240):  # some structure, so that the JPEG is of a realistic size
        draw.rectangle([i, (i * 7) % size[1], i + 120, (i * 7) % size[1] + 160], fill=(i % 255, 60, 200))
    master = root / "master.jpg"
    image.save(master, quality=90)
    for i in range(n):
        os.link(master, folder / f"sa_{i:05d}.jpg")
        meta = {
            "target_object": ["thing"],
            "bbox": [[3000 + i % 500, 1200, 600, 400]],
            "question": f"What is the color of thing {i}?",
            "options": ["red", "blue", "green", "white"],
        }
        (folder / f"sa_{i:05d}.json").write_text(json.dumps(meta))
    return root, master.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--side", default="7680x4320")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("show_report.json"))
    parser.add_argument(
        "--run", type=Path, help="reuse the eval run of an earlier invocation (its tmp dir/run)"
    )
    args = parser.parse_args()

    from visrl_bench.eval.evaluate import EvalConfig, TaskSpec, evaluate
    from visrl_bench.models import GenerationSettings
    from visrl_bench.report.show import write_report as show

    size = tuple(int(v) for v in args.side.split("x"))
    if args.run is not None:
        tmp, eval_seconds = args.run.parent, None
        jpeg_bytes = (tmp / "vstar" / "master.jpg").stat().st_size
    else:
        tmp = Path(tempfile.mkdtemp(prefix="visrl-bench-show-"))
        data, jpeg_bytes = write_data(tmp / "vstar", args.samples, size)
        cfg = EvalConfig(
            model="scripted",
            tasks=[TaskSpec("vstar_bench", str(data), options={"shuffle": False})],
            mode="cot",
            generation=GenerationSettings(max_new_tokens=8),
            batch_size=2,  # a window (4 batches) of 8K images holds ~100 MB per image in memory
        )
        started = time.perf_counter()
        evaluate(cfg, tmp / "run", adapter=OneBoxModel(), progress=False)
        eval_seconds = round(time.perf_counter() - started, 1)
    summary = show([tmp / "run"], tmp / "report", progress=False)
    mb = summary["bytes"] / 1e6
    # a paper figure is a handful of samples, not the whole run
    started = time.perf_counter()
    show([tmp / "run"], tmp / "figure", limit=16, contact_sheet=tmp / "sheet.png", progress=False)
    sheet_seconds = time.perf_counter() - started
    report = {
        "machine": machine(),
        "samples": summary["samples"],
        "image_size": list(size),
        "image_jpeg_bytes": jpeg_bytes,
        "eval_seconds_stand_in_model": eval_seconds,
        "report_seconds": summary["seconds"],
        "report_of_16_with_contact_sheet_seconds": round(sheet_seconds, 2),
        "report_mb": round(mb, 2),
        "pages": summary["pages"],
        "files": summary["files"],
        "targets": {"seconds": TARGET_SECONDS, "mb": TARGET_MB},
        "met": summary["seconds"] <= TARGET_SECONDS and mb <= TARGET_MB,
    }
    print(
        f"{summary['samples']} samples of {size[0]}x{size[1]}: report in {summary['seconds']:.1f} s "
        f"(target <= {TARGET_SECONDS:.0f}), {mb:.1f} MB (target <= {TARGET_MB:.0f}), {summary['pages']} pages"
    )
    write_report(args.out, report)


if __name__ == "__main__":
    main()
