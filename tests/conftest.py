import sys
from pathlib import Path

import pytest

# before any test module imports peft, trl or transformers: a torchvision that cannot be imported (PyPI's CUDA
# build next to CPU torch) must be hidden first, or their imports fail depending on which test runs first
import visrl_bench  # noqa: F401

# tests import their fixture writers as a plain module
sys.path.insert(0, str(Path(__file__).parent))

TINY_ARCHS = ("llava", "qwen2_vl", "qwen2_5_vl", "qwen3_vl")


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """arch -> directory of a tiny random-init checkpoint, built once per test session."""
    from visrl_bench.models.tiny import build_tiny

    root = tmp_path_factory.mktemp("tiny")
    return {arch: build_tiny(arch, root / arch) for arch in TINY_ARCHS}


@pytest.fixture(scope="session")
def tiny_adapters(tiny_checkpoints):
    from visrl_bench.models import load_model

    return {arch: load_model(path) for arch, path in tiny_checkpoints.items()}


@pytest.fixture(scope="session")
def task_fixtures(tmp_path_factory):
    """task name -> (data path, options) for every registered task."""
    from fixtures import make_fixture

    from visrl_bench.core.registry import TASKS

    root = tmp_path_factory.mktemp("taskdata")
    return {name: make_fixture(name, root / name.replace("+", "plus")) for name in TASKS.names()}
