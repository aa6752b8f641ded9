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
