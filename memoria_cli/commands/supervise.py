"""`memoria _supervise`: the detached supervisor that `up -d` starts (hidden: not for people)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command(name="_supervise", hidden=True)(supervise_cmd)


def supervise_cmd(profile: str = typer.Option(..., "--profile")) -> None:
    from memoria_cli.daemon import prepare, supervise
    from memoria_cli.home import Home

    supervise(prepare(Home.from_env(), profile))
