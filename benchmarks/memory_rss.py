"""Peak memory (RSS) of `eval` over an HR-Bench-format TSV scaled from 250 to 2,000 rows: it must not grow
with the number of rows (the TSV is streamed, each window's images are dropped after scoring).

    python benchmarks/memory_rss.py [--rows 250 500 1000 2000] [--out FILE.json]

Each size runs `visrl-bench eval` in its own process (the tiny LLaVA, direct mode, batch 8); its peak RSS is
the kernel's ru_maxrss for that process. Rows carry a ~100 KB JPEG each (base64 in the TSV, as HR-Bench
ships them), so holding the rows would show as ~130 MB more per 1,000 rows.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_report

GROWTH_LIMIT_MB = 25.0  # peak RSS may differ this much between the smallest and largest file (noise)


def noise_jpeg(side: int = 384, seed: int = 0) -> str:
    from PIL import Image

    rng = random.Random(seed)
    image = Image.frombytes("RGB", (side, side), bytes(rng.getrandbits(8) for _ in range(side * side * 3)))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=85)
    return base64.b64encode(buf.getvalue()).decode()


def write_hr_tsv(path: Path, rows: int, images: list[str]) -> Path:
    from fixtures import HR_HEADER, hr_rows
    from fixtures import write_hr_tsv as write

    table = hr_rows(n_questions=rows // 2, cycles=2)[:rows]
    for i, row in enumerate(table):
        row["image"] = images[(i // 2) % len(images)]
    return write(path, table, HR_HEADER)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[250, 500, 1000, 2000])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("memory_rss.json"))
    args = parser.parse_args()

    from visrl_bench.models.tiny import build_tiny

    tmp = Path(tempfile.mkdtemp(prefix="visrl-bench-"))
    ckpt = build_tiny("llava", tmp / "llava")
    images = [noise_jpeg(seed=s) for s in range(8)]
    report = {"machine": machine(), "limit_mb": GROWTH_LIMIT_MB, "runs": []}
    for rows in args.rows:
        tsv = write_hr_tsv(tmp / f"hr_{rows}" / "hr_bench_4k.tsv", rows, images)
        cmd = [
            sys.executable, "-m", "visrl_bench.cli", "eval", "--model", str(ckpt), "--task", "hr_bench_4k",
            "--data", str(tsv), "--output", str(tmp / f"run_{rows}"), "--batch-size", "8",
            "--max-new-tokens", "4",
        ]  # fmt: skip
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        if status != 0:
            sys.exit(f"eval on {rows} rows failed: {proc.stderr.read().decode()[-2000:]}")
        peak_mb = usage.ru_maxrss / 1024  # KiB on Linux
        run = {
            "rows": rows,
            "tsv_mb": round(tsv.stat().st_size / 2**20, 1),
            "peak_rss_mb": round(peak_mb, 1),
            "seconds": round(seconds, 1),
        }
        report["runs"].append(run)
        print(f"{rows:>5} rows  TSV {run['tsv_mb']:7.1f} MB   peak RSS {peak_mb:7.1f} MB   {seconds:5.1f}s")
    peaks = [r["peak_rss_mb"] for r in report["runs"]]
    report["growth_mb"] = round(max(peaks) - peaks[0], 1)
    report["met"] = report["growth_mb"] <= GROWTH_LIMIT_MB
    print(
        f"growth {args.rows[0]} -> {args.rows[-1]} rows: {report['growth_mb']} MB (limit {GROWTH_LIMIT_MB})"
    )
    write_report(args.out, report)


if __name__ == "__main__":
    main()
