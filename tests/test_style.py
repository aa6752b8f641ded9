import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is in the [dev] extra")
def test_ruff_clean():
    result = subprocess.run(["ruff", "check", "--no-cache", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is in the [dev] extra")
def test_ruff_format_clean():
    """CONTRIBUTING asks for `ruff format`; this keeps it true."""
    result = subprocess.run(
        ["ruff", "format", "--check", "--no-cache", str(ROOT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_plugin_folders_install_inside_the_package(tmp_path):
    """Outside the checkout, `tasks` and `trainers` are not importable top-level modules (they would shadow
    other packages); the plug-ins live at visrl_bench.tasks / visrl_bench.trainers."""
    code = (
        "import importlib.util, visrl_bench.tasks, visrl_bench.trainers, visrl_bench.tasks.vstar;"
        "print(importlib.util.find_spec('tasks'), importlib.util.find_spec('trainers'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["None", "None"]
