"""`memoria status`: what runs, how healthy, planned vs what vLLM reported."""

from __future__ import annotations

import json

import typer

from memoria_cli.commands.options import JSON


def register(app: typer.Typer) -> None:
    app.command(name="status")(status_cmd)


def status_cmd(as_json: bool = JSON) -> None:
    """Show each worker and the proxy: state, pid, port, device, KV cache planned vs reported, uptime, restarts.

    Exit code 0 when the stack runs, 8 when it does not. Example: `memoria status --json | jq .processes`.
    """
    from memoria_cli.daemon import tail, vllm_report
    from memoria_cli.errors import NotRunning
    from memoria_cli.home import Home
    from memoria_cli.state import read_state, supervisor_alive

    home = Home.from_env()
    state, note = read_state(home.state_file)
    alive = supervisor_alive(state)
    if state is None or (not alive and state.get("phase") in ("stopped", "failed")):
        if as_json:
            print(json.dumps({"running": False, "phase": (state or {}).get("phase"), "note": note}))
        raise NotRunning("memoria is not running" + (f" ({note})" if note else ""), "start it with `memoria up -d`")
    reports = {name: vllm_report(tail(home.log_for(name), 400)) for name in state.get("processes", {})}
    if as_json:
        for name, p in state["processes"].items():
            p["reported"] = reports.get(name, {})
        print(json.dumps({"running": alive, **state}, indent=2))
    else:
        from memoria_cli.console import out, say
        from memoria_cli.views import status_table

        out().print(status_table(state, reports))
    if not alive:
        from memoria_cli.console import say

        raise NotRunning("the supervisor is gone (killed?) but left a state behind",
                         "`memoria down` cleans up what is left, `memoria up -d` starts again")
    if note:
        say(f"memoria: {note}")
