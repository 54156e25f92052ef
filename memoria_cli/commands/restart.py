"""`memoria restart NAME`: restart one worker with a clean slate (also brings a FATAL one back)."""

from __future__ import annotations

import time

import typer

from memoria_cli.cli import completion


def register(app: typer.Typer) -> None:
    app.command(name="restart")(restart_cmd)


def restart_cmd(
    name: str = typer.Argument(..., help="A worker's name or `proxy`.", autocompletion=completion.processes),
    wait: float = typer.Option(5.0, "--wait", help="Seconds to wait for the supervisor to take the request."),
) -> None:
    """Ask the running supervisor to restart NAME, resetting its failure counters. Example: `memoria restart proxy`."""
    from memoria_cli.cli.console import say
    from memoria_cli.core.errors import InputError, NotRunning
    from memoria_cli.core.home import Home
    from memoria_cli.plugins import ops
    from memoria_cli.run.state import read_state, supervisor_alive

    home = Home.from_env()
    state, _ = read_state(home.state_file)
    if state is None or not supervisor_alive(state):
        raise NotRunning("memoria is not running", "start it with `memoria up -d`")
    procs = state.processes
    if name not in procs:
        raise InputError(f"no worker named {name!r}", "choose one of: " + ", ".join(procs))
    before = procs[name].create_time, procs[name].state
    ops.post_request(home.root, "restart", name)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        state, _ = read_state(home.state_file)
        p = state.processes.get(name) if state else None
        if p and p.state == "sleeping" and p.reason.startswith("restart requested"):
            say(f"{name}: {p.reason} (follow with `memoria status`)")  # its slot mate gives way first
            return
        if p and (p.create_time, p.state) != before and p.state in ("starting", "stopped"):
            say(f"{name}: restarting (follow with `memoria status`)")
            return
        time.sleep(0.2)
    say(f"{name}: restart requested; the supervisor has not picked it up yet")
