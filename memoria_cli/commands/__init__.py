"""One module per command; this is the one place they are registered, in the order `--help` lists them."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from memoria_cli.commands import down, gpus, logs, plan, profiles, pull, restart, setup, status, supervise, up

    for module in (up, down, status, logs, restart, plan, pull, gpus, profiles, setup, supervise):
        module.register(app)
