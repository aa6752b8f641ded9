"""The `visrl-bench` command line: one module per command group (evaluate, zoomworld, train, report, lmms)."""

from __future__ import annotations

import sys

# each module registers its commands on `app`; imported in the order `visrl-bench --help` lists them
# isort: off
from visrl_bench.cli.app import app
from visrl_bench.cli import evaluate, zoomworld, train, report, lmms  # noqa: F401
# isort: on


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `visrl-bench list | head`
        sys.exit(0)
