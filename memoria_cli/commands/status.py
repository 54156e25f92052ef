"""`memoria status`: what runs, how healthy, planned vs what vLLM reported."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer

from memoria_cli.cli.options import JSON

if TYPE_CHECKING:
    from memoria_cli.core.home import Home
    from memoria_cli.core.inventory import Gpu
    from memoria_cli.run.cluster_status import HostView
    from memoria_cli.run.state import RunState


def register(app: typer.Typer) -> None:
    app.command(name="status")(status_cmd)


def worker_memory(state: RunState, gpus: tuple[Gpu, ...] | None = None) -> dict[str, int]:
    """Memory each live process of the state holds now (run/usage.py)."""
    from memoria_cli.run.usage import Root
    from memoria_cli.run.usage import worker_memory as measure

    roots = {n: Root(p.pid, len(p.devices or [1])) for n, p in state.processes.items() if p.alive and p.pid}
    return measure(roots, state.engine == "cuda", gpus)


def _other_hosts(home: Home, state: RunState) -> list[HostView]:
    """On a cluster's entry, every other host (run/cluster_status.py); elsewhere none."""
    import os

    from memoria_cli.run.cluster_status import hosts_view, read_members
    from memoria_cli.run.stack import MEMBERS_FILE

    members = read_members(home.proxy_config.with_name(MEMBERS_FILE))
    return hosts_view(members, state.url, dict(os.environ)) if members else []


def status_cmd(as_json: bool = JSON) -> None:
    """Show each worker and the proxy: state, pid, port, device, memory and KV cache planned vs what vLLM
    reported and the processes hold, uptime, restarts. Warns when a worker holds more than its budget. On a
    cluster's entry, also every other host: in rotation or not (and why), and its workers as it reports them
    (with the cluster's key in LITELLM_MASTER_KEY).

    Exit code 0 when the stack runs, 8 when it does not. Example: `memoria status --json | jq .processes`.
    """
    from memoria_cli.core.errors import NotRunning
    from memoria_cli.core.home import Home
    from memoria_cli.run.logs import tail
    from memoria_cli.run.state import read_state, supervisor_alive

    home = Home.from_env()
    state, note = read_state(home.state_file)
    alive = supervisor_alive(state)
    if state is None or (not alive and state.ended):
        if as_json:
            print(json.dumps({"running": False, "phase": state.phase if state else None, "note": note}))
        raise NotRunning("memoria is not running" + (f" ({note})" if note else ""), "start it with `memoria up -d`")
    from memoria_cli.run.vllm_report import StartupReport, parse_startup, warnings

    workers = {w.name: w for w in state.plan.workers}
    totals = {d.index: d.total for d in state.plan.devices}
    used = worker_memory(state) if alive else {}
    reports: dict[str, StartupReport] = {}
    warned: list[str] = []
    for name in state.processes:
        if name in workers:
            reports[name] = parse_startup(tail(home.log_for(name), 2000))
            warned += warnings(workers[name], reports[name], used.get(name), totals)
    hosts = _other_hosts(home, state) if alive else []
    if as_json:
        body: dict[str, Any] = {"running": alive, **state.to_dict(), "warnings": warned}
        for name, p in body["processes"].items():
            p["reported"] = reports[name].to_dict() if name in reports else {}
            p["memory_used"] = used.get(name)
        if hosts:
            body["hosts"] = [h.to_dict() for h in hosts]
        print(json.dumps(body, indent=2))
    else:
        from memoria_cli.cli.console import out, say
        from memoria_cli.cli.views import hosts_table, status_table

        out().print(status_table(state, reports, used))
        if hosts:
            out().print(hosts_table(hosts))
        for w in warned:
            say(f"[yellow]memoria: {w}[/]")
    if not alive:
        from memoria_cli.cli.console import say

        raise NotRunning(
            "the supervisor is gone (killed?) but left a state behind",
            "`memoria down` cleans up what is left, `memoria up -d` starts again",
        )
    if note:
        say(f"memoria: {note}")
