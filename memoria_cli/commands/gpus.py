"""`memoria gpus`: what the planner sees on this machine."""

from __future__ import annotations

import json

import typer

from memoria_cli.cli.options import JSON


def register(app: typer.Typer) -> None:
    app.command(name="gpus")(gpus_cmd)


def gpus_cmd(as_json: bool = JSON) -> None:
    """List the NVIDIA GPUs (name, memory total/free, compute capability, processes holding memory), or the CPU.

    Example: `memoria gpus --json`.
    """
    from memoria_cli.core.inventory import probe

    inv = probe()
    if as_json:
        print(json.dumps(inv.to_dict(), indent=2))
        return
    from memoria_cli.cli.console import out
    from memoria_cli.cli.views import gpus_table

    out().print(gpus_table(inv))
