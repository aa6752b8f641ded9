"""The `visrl-bench` Typer app and its groups; each command lives in the module of its group."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Evaluate and train LMMs for intention-driven visual perception (VisRL).",
)
zoomworld_app = typer.Typer(
    no_args_is_help=True, help="ZoomWorld: the synthetic benchmark and its tiny base LMMs."
)
app.add_typer(zoomworld_app, name="zoomworld")


def fail(message: str) -> None:
    """Exit 2 with the message on stderr: what every command does with a VisrlError."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


NUM_PROCESSES_HELP = (
    "Run data parallel on N processes: the command starts itself again under `accelerate launch "
    "--multi_gpu --num_processes N` (one per GPU; on CPUs, N processes of one thread each over gloo)."
)


def relaunch(
    num_processes: int, model: str | None = None, arch: str | None = None, device: str = "auto"
) -> None:
    """`--num-processes N` (N > 1), outside a launcher: run this same command line again under accelerate's
    launcher and exit with its status. Inside a launcher (or with N = 1) it returns and the command runs.

    Called once the command's own options are read, so that a bad option is one error, not one per rank;
    the checkpoint `model` is checked here too. N is bounded by the devices: the GPUs, or the CPU cores."""
    import os
    import subprocess
    import sys

    from visrl_bench.core.distributed import launched_world
    from visrl_bench.core.errors import VisrlError

    if num_processes <= 1 or launched_world() > 1:
        return
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() and device != "cpu" else 0
    devices, kind = (gpus, "GPU(s)") if gpus else (os.cpu_count() or 1, "CPU core(s), no GPU")
    if num_processes > devices:
        raise VisrlError(
            f"--num-processes {num_processes}: this machine has {devices} {kind}; one process per device, "
            f"so at most {devices}"
        )
    if model:  # a missing or broken checkpoint: one error here, not one per process
        from visrl_bench.core.errors import DataError
        from visrl_bench.models import read_arch

        if not arch:
            read_arch(model)
        elif not (Path(model) / "config.json").is_file():  # --arch names the adapter: config.json must exist
            raise DataError(Path(model), "no config.json: not a transformers checkpoint directory")
    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--num-processes":
            skip = True
        elif not arg.startswith("--num-processes="):
            argv.append(arg)
    # accelerate's own module, not its `accelerate` script: that one imports every subcommand, and
    # `accelerate estimate-memory` imports timm, which fails next to a torchvision that cannot load
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    command = [*launcher, "--num_processes", str(num_processes), "-m", "visrl_bench.cli", *argv]
    raise typer.Exit(subprocess.call(command))
