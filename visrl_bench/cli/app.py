"""The `visrl-bench` Typer app and its groups; each command lives in the module of its group."""

from __future__ import annotations

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


def relaunch(num_processes: int) -> None:
    """`--num-processes N` (N > 1), outside a launcher: run this same command line again under accelerate's
    launcher and exit with its status. Inside a launcher (or with N = 1) it returns and the command runs."""
    import subprocess
    import sys

    from visrl_bench.core.distributed import launched_world

    if num_processes <= 1 or launched_world() > 1:
        return
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
