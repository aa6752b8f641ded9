"""The slow tier (`python -m pytest -m slow`): committed results regenerated from the README's commands.

A committed table is true of the code only while the code still writes it; these rerun the commands and
compare with what is committed, timings aside. They take minutes, so the default suite leaves them out.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASES = ROOT / "checkpoints" / "zoomworld"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "visrl_bench.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def _without_timings(obj):
    if isinstance(obj, dict):
        # the command is how the committed file was made (`--from-scratch` retrains the bases first)
        return {k: _without_timings(v) for k, v in obj.items() if k not in ("timings", "seconds", "command")}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


@pytest.mark.slow
def test_the_zoomworld_baselines_regenerate_as_committed(tmp_path):
    """`visrl-bench zoomworld baselines` on the committed bases (about 2 minutes on 2 cores)."""
    out = tmp_path / "zoomworld_baselines.md"
    result = _cli(
        "zoomworld", "baselines", "--models", str(ROOT / "checkpoints" / "zoomworld"),
        "--out", str(out), "--work", str(tmp_path / "work"), "--no-progress",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    committed = ROOT / "leaderboards" / "zoomworld_baselines"
    assert _without_timings(json.loads(out.with_suffix(".json").read_text())) == _without_timings(
        json.loads(committed.with_suffix(".json").read_text())
    )

    def kept(text: str) -> list[str]:
        lines = text.splitlines()
        return [line.replace(" --from-scratch", "") for line in lines if not line.startswith("Timings:")]

    assert kept(out.read_text()) == kept(committed.with_suffix(".md").read_text())


@pytest.mark.slow
def test_the_quick_ablation_table_regenerates_as_committed(tmp_path):
    """The main job, `visrl-bench ablate --preset quick` (about 8 minutes on 2 cores): the same CSV."""
    result = _cli(
        "ablate", "--config", str(ROOT / "configs" / "ablation_zoomworld.yaml"), "--preset", "quick",
        "--jobs", "2", "--no-progress", f"out={tmp_path / 'out'}", f"data={tmp_path / 'data'}",
        # the config names the bases relative to the repository root, where the README runs it
        f"bases={{llava: {BASES / 'llava'}, qwen3_vl: {BASES / 'qwen3_vl'}}}",
        f"leaderboard={tmp_path / 'zoomworld_ablation'}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    written = (tmp_path / "zoomworld_ablation.csv").read_text()
    assert written == (ROOT / "leaderboards" / "zoomworld_ablation.csv").read_text()
