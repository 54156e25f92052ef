"""`memoria _supervise`: the detached supervisor that `up -d` starts (hidden: not for people)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command(name="_supervise", hidden=True)(supervise_cmd)


def supervise_cmd(handoff: Path = typer.Option(..., "--handoff", help="The plan `up` showed (run/detach.py).")) -> None:
    from memoria_cli.core.errors import MemoriaError
    from memoria_cli.core.home import Home
    from memoria_cli.run.detach import read_handoff, write_failure
    from memoria_cli.run.loop import supervise
    from memoria_cli.run.stack import prepare

    try:
        given = read_handoff(handoff)
        supervise(prepare(Home.from_env(), given.profile, given=given.plan, as_host=given.host))
    except MemoriaError as exc:
        write_failure(handoff, exc)  # for `up`, as data; and in supervisor.log, by app.main
        raise
