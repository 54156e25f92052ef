"""`memoria status`: what runs, how healthy, planned vs what vLLM reported."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer

from memoria_cli.cli.options import JSON

if TYPE_CHECKING:
    from memoria_cli.core.inventory import Gpu
    from memoria_cli.run.state import RunState


def register(app: typer.Typer) -> None:
    app.command(name="status")(status_cmd)


def worker_memory(state: RunState, gpus: tuple[Gpu, ...] | None = None) -> dict[str, int]:
    """Memory each worker's process tree really holds: per GPU from NVML on a GPU host (vLLM's engine core is
    a child of the API server), resident memory on the CPU engine. `gpus`: NVML's view, probed if not given."""
    import psutil

    gpu = state.engine == "cuda"
    by_pid: dict[int, int] = {}
    if gpu:
        from memoria_cli.core.inventory import probe_gpus

        for g in gpus if gpus is not None else probe_gpus():
            for proc in g.processes:
                by_pid[proc.pid] = by_pid.get(proc.pid, 0) + proc.used
    out = {}
    for name, p in state.processes.items():
        if not p.alive or p.pid is None:
            continue
        try:
            root = psutil.Process(p.pid)
            tree = [root, *root.children(recursive=True)]
            if gpu:
                out[name] = sum(by_pid.get(t.pid, 0) for t in tree) // max(1, len(p.devices or [1]))
            else:
                out[name] = sum(t.memory_info().rss for t in tree)
        except (psutil.Error, KeyError, TypeError):
            continue
    return out


def status_cmd(as_json: bool = JSON) -> None:
    """Show each worker and the proxy: state, pid, port, device, memory and KV cache planned vs what vLLM
    reported and the processes hold, uptime, restarts. Warns when a worker holds more than its budget.

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
    if as_json:
        body: dict[str, Any] = {"running": alive, **state.to_dict(), "warnings": warned}
        for name, p in body["processes"].items():
            p["reported"] = reports[name].to_dict() if name in reports else {}
            p["memory_used"] = used.get(name)
        print(json.dumps(body, indent=2))
    else:
        from memoria_cli.cli.console import out, say
        from memoria_cli.cli.views import status_table

        out().print(status_table(state, reports, used))
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
